"""The embedded demo: an iteration budget per stage (honoured exactly, recorded, seeded: two runs agree), the
safety cap that says when it cut a stage, the target check, the comparison picture and a light module."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from grain_pl.commands import demo
from grain_pl.commands.demo import (
    COMPARISON_COLUMNS,
    HELD_OUT_PHOTOS,
    NEUTRAL_GREY,
    STAGES,
    TRAIN_PHOTOS,
    DemoRecipe,
    SpeedOptions,
    build_stage,
    check_targets,
    comparison_image,
    comparison_rows,
    cosine_factor,
    demo_eta_seconds,
    format_targets,
    load_photo,
    next_free,
    parse_iterations,
    random_crops,
    run_demo,
)

TINY_ITERATIONS = {"prior": 2, "stage1": 3, "stage2": 1, "stage3": 2, "final": 2}


def tiny_recipe(**changes) -> DemoRecipe:
    values = {"preset": "tiny-32-lr8", "batch_size": 2, "train_crops": 14, "test_crops": 2,
              "iterations": dict(TINY_ITERATIONS)}
    return DemoRecipe(**{**values, **changes})


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One tiny demo with W&B offline; (metrics, stdout, run folder)."""
    root = tmp_path_factory.mktemp("demo")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WANDB_MODE", "offline")
        patch.setenv("WANDB_DIR", str(root))
        patch.delenv("GRAIN_PL_NO_WANDB", raising=False)
        capture = _Capture()
        threads = torch.get_num_threads()
        lightning_info = logging.getLogger("pytorch_lightning.utilities.rank_zero")
        records = _Records()
        lightning_info.addHandler(records)
        try:
            with capture, warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", append=True)  # after grain_pl's filters: they still hold
                metrics = run_demo(root / "demo", tiny_recipe(speed=SpeedOptions(threads=1)), seed=0,
                                   progress_seconds=0)
        finally:
            lightning_info.removeHandler(records)
        assert torch.get_num_threads() == threads  # the recipe's thread count holds during the run only
    # what every stage used to print, none of it actionable: Lightning's info lines, two warnings, W&B's notice
    assert not [record for record in records.records if record.levelno < logging.WARNING]
    noise = ("eval mode at the start of training", "isinstance(treespec, LeafSpec)")
    assert not [warning for warning in caught if any(text in str(warning.message) for text in noise)]
    assert "anonymous setting" not in capture.text
    return metrics, capture.text, root / "demo"


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class _Capture:
    """stdout and stderr of a block (the module fixture cannot use capsys)."""

    def __enter__(self):
        import contextlib
        import io

        self.buffer = io.StringIO()
        self.stack = contextlib.ExitStack()
        self.stack.enter_context(contextlib.redirect_stdout(self.buffer))
        self.stack.enter_context(contextlib.redirect_stderr(self.buffer))
        return self

    def __exit__(self, *exc):
        self.stack.close()
        self.text = self.buffer.getvalue()


def test_crops_come_from_the_photo_at_the_asked_size():
    rng = np.random.default_rng(0)
    photo = np.zeros((100, 150, 3), dtype=np.uint8)
    photo[:, 75:] = 255
    crops = random_crops(photo, 32, 5, rng)
    assert all(crop.size == (32, 32) for crop in crops)
    assert not set(TRAIN_PHOTOS) & set(HELD_OUT_PHOTOS)


def test_a_crop_is_the_crop_of_the_whole_resized_photo():
    """Resampling only the crop's region gives the pixels of resizing the whole photo and then cropping."""
    photo = load_photo("astronaut")
    crops = random_crops(photo, 64, 6, np.random.default_rng(3))
    rng = np.random.default_rng(3)  # the same draws, the slow way
    image = Image.fromarray(photo)
    for crop in crops:
        scale = math.exp(rng.uniform(math.log(max(0.25, 64 / min(image.size))), 0.0))
        width, height = max(64, round(image.width * scale)), max(64, round(image.height * scale))
        left, top = int(rng.integers(0, width - 64 + 1)), int(rng.integers(0, height - 64 + 1))
        whole = image.resize((width, height), Image.LANCZOS).crop((left, top, left + 64, top + 64))
        difference = np.abs(np.asarray(crop, dtype=int) - np.asarray(whole, dtype=int))
        assert difference.max() <= 1 and difference.mean() < 0.01


def test_next_free_never_reuses_a_run_folder(tmp_path):
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo-1").mkdir()
    assert next_free(tmp_path / "demo") == tmp_path / "demo-2"
    assert next_free(tmp_path / "other") == tmp_path / "other"


def test_cosine_runs_over_the_stage_iterations():
    assert cosine_factor(0, 100) == 1.0
    assert cosine_factor(50, 100) == pytest.approx(0.5)
    assert cosine_factor(99, 100) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.99)))
    assert cosine_factor(100, 100) == pytest.approx(0.0)
    assert cosine_factor(10, 20) == cosine_factor(50, 100)  # only the share of the stage matters


def test_recipe_iterations_need_every_stage_and_scale():
    with pytest.raises(ValueError, match="stage3"):
        DemoRecipe(iterations={"prior": 1, "stage1": 1, "stage2": 1, "final": 1})
    with pytest.raises(ValueError, match="positive"):
        DemoRecipe(iterations={**TINY_ITERATIONS, "final": 0})
    doubled = DemoRecipe(iterations=dict(TINY_ITERATIONS)).scaled(2)
    assert doubled.iterations == {stage: 2 * count for stage, count in TINY_ITERATIONS.items()}
    assert DemoRecipe(iterations=dict(TINY_ITERATIONS)).scaled(0.01).iterations == dict.fromkeys(STAGES, 1)
    with pytest.raises(ValueError, match="--scale"):
        DemoRecipe().scaled(0)


def test_each_stage_gets_the_recipes_loss_weights(tmp_path):
    """The LR guidance holds in stage 1 and, with its own weight, in the final stage; stages 2 and 3 do not
    train the encoder, so it is off there."""
    from grain_pl.networks import get_preset

    recipe = tiny_recipe(lr_weight=0.25, final_lr_weight=2.0, lpips=0.05)
    config = get_preset(recipe.preset, **recipe.network_overrides)
    build_stage("prior", recipe, config, tmp_path, max_iterations=1).export(tmp_path / "prior" / "stylegan2.pt")
    expected = {"stage1": 0.25, "stage2": 0.0, "stage3": 0.0, "final": 2.0}
    for stage, lr_weight in expected.items():
        module = build_stage(stage, recipe, config, tmp_path, max_iterations=1)
        assert module.loss_weights.lr == lr_weight, stage
        assert module.loss_weights.lpips == 0.05 and module.loss_weights.adversarial == recipe.adversarial


def test_parse_iterations():
    assert parse_iterations(["stage1=800", "final=3"]) == {"stage1": 800, "final": 3}
    for bad in ("stage9=3", "stage1", "stage1=0", "stage1=x"):
        with pytest.raises(ValueError, match="STAGE=N"):
            parse_iterations([bad])


def test_eta_scales_later_stages_by_the_measured_speed():
    planned = dict.fromkeys(STAGES, 10)
    stage_left, demo_left = demo_eta_seconds("stage1", 4, 2.0, planned, {})
    assert stage_left == 12.0
    slow_left = demo_eta_seconds("stage1", 4, 2.0, planned, {"prior": 10.0})[1]
    assert slow_left > demo_left  # a prior that ran slower than the reference predicts slower later stages
    assert demo_eta_seconds("final", 10, 1.0, planned, {})[0] == 0.0


def summary_of(grain: dict, bicubic: dict) -> dict:
    return {"methods": {"grain": grain, "bicubic": bicubic, "bilinear": {"psnr": 20.0, "lpips": 0.6}}}


def test_targets_pass_and_fail_on_their_thresholds():
    bicubic = {"psnr": 21.69, "lpips": 0.5}
    passing = check_targets(summary_of({"psnr": 22.69, "lpips": 0.35, "lr_psnr": 32.0}, bicubic))
    assert [check.passed for check in passing] == [True, True, True]
    assert [check.threshold for check in passing] == [32.0, pytest.approx(22.69), pytest.approx(0.35)]
    failing = check_targets(summary_of({"psnr": 22.6, "lpips": 0.36, "lr_psnr": 31.9}, bicubic))
    assert [check.passed for check in failing] == [False, False, False]
    assert [check.value for check in failing] == [31.9, 22.6, 0.36]
    text = format_targets(failing)
    assert "0 of 3 met" in text and text.count("FAIL") == 3 and "31.90 dB >= 32.00 dB" in text


def test_targets_without_lr_psnr_say_it_was_not_measured():
    checks = check_targets(summary_of({"psnr": 23.0, "lpips": 0.2}, {"psnr": 21.0, "lpips": 0.5}))
    assert [check.passed for check in checks] == [None, True, True]
    assert "lr_psnr not measured" in format_targets(checks)
    no_bicubic = check_targets({"methods": {"grain": {"psnr": 23.0, "lpips": 0.2, "lr_psnr": 40.0}}})
    assert [check.passed for check in no_bicubic] == [True, None, None]
    assert "bicubic's PSNR not measured" in format_targets(no_bicubic)


def test_comparison_image_has_one_labelled_column_per_picture():
    rng = np.random.default_rng(0)
    rows = [{name: rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
             for name, size in (("hr", 32), ("lr", 8), ("thumbnail", 8), ("bicubic", 32), ("grain", 32))}
            for _ in range(3)]
    zoom, gap = 2, 4
    picture = np.array(comparison_image(rows, zoom=zoom, gap=gap))
    cell = 32 * zoom
    header = picture.shape[0] - 3 * (cell + gap) - gap
    assert picture.shape[1] == len(COMPARISON_COLUMNS) * (cell + gap) + gap and header > 0
    assert (picture[:header] < 128).any()  # the column names are drawn

    def cell_at(row: int, column: int) -> np.ndarray:
        y, x = header + gap + row * (cell + gap), gap + column * (cell + gap)
        return picture[y:y + cell, x:x + cell]

    def nearest(image: np.ndarray, size: int) -> np.ndarray:
        return np.array(Image.fromarray(image).resize((size, size), Image.NEAREST))

    for row_index, row in enumerate(rows):
        assert np.array_equal(cell_at(row_index, 0), nearest(row["hr"], cell))
        one_to_one = cell_at(row_index, 1)  # the LR at the HR's scale, centred on grey
        lr_side = 8 * zoom
        start = (cell - lr_side) // 2
        assert np.array_equal(one_to_one[start:start + lr_side, start:start + lr_side], nearest(row["lr"], lr_side))
        assert (one_to_one[:start] == NEUTRAL_GREY).all() and (one_to_one[:, start + lr_side:] == NEUTRAL_GREY).all()
        for column, name in ((2, "lr"), (3, "thumbnail"), (4, "bicubic"), (5, "grain")):
            assert np.array_equal(cell_at(row_index, column), nearest(row[name], cell)), name


def test_comparison_rows_are_the_evaluation_pictures(tmp_path):
    from grain_pl.codec import GrainModule
    from grain_pl.evaluation import resize_baseline
    from grain_pl.io.images import from_uint8, to_uint8

    torch.manual_seed(0)
    model = GrainModule("tiny-32-lr8").eval()
    hr = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(hr).save(tmp_path / "crop.png")
    (row,) = comparison_rows(model, [tmp_path / "crop.png"])
    assert np.array_equal(row["hr"], hr)
    hr_tensor = torch.from_numpy(hr).permute(2, 0, 1)
    lr = to_uint8(model.encode(from_uint8(hr_tensor)))
    assert np.array_equal(row["lr"], lr.permute(1, 2, 0).numpy())
    assert np.array_equal(row["grain"], to_uint8(model.decode(from_uint8(lr))).permute(1, 2, 0).numpy())
    bicubic = resize_baseline(hr_tensor, 8, "bicubic")
    assert np.array_equal(row["bicubic"], bicubic.output.permute(1, 2, 0).numpy())
    thumbnail = torch.nn.functional.interpolate(hr_tensor[None].float(), size=8, mode="bicubic", antialias=True)
    assert np.array_equal(row["thumbnail"], thumbnail[0].round().clamp(0, 255).byte().permute(1, 2, 0).numpy())


def test_the_demo_module_does_not_load_lightning():
    """`grain --help` imports the demo module; Lightning loads only when a demo runs."""
    code = ("import sys, grain_pl.commands, grain_pl.commands.demo; "
            "sys.exit(any(name.split('.')[0] in ('pytorch_lightning', 'lightning') for name in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_every_stage_trains_exactly_its_iterations(demo_run):
    metrics, output, run = demo_run
    saved = json.loads((run / "metrics.json").read_text())
    for stage, planned in TINY_ITERATIONS.items():
        record = saved["stages"][stage]
        assert record["iterations"] == record["iterations_planned"] == planned, stage
        assert record["cut_by_cap"] is False and record["wall_seconds"] > 0 and record["iterations_per_second"] > 0
        checkpoint = torch.load(run / stage / "checkpoints" / "final.ckpt", weights_only=False)
        counter = checkpoint["prior_stage" if stage == "prior" else "grain_pl"]["iteration"]
        assert counter == planned, stage
        assert f"[{stage}] {planned}/{planned} iterations" in output
    assert saved["reproducible"] is True and saved["cut_by_cap"] == []
    assert saved["machine"]["threads"] == 1 and saved["machine"]["cpu_model"]
    assert saved["machine"]["torch"] == torch.__version__
    assert "it/s" in output and "demo ETA" in output and "targets (issue 9)" in output


def test_the_learning_rate_follows_a_cosine_over_the_iterations(demo_run):
    _, _, run = demo_run
    for stage in ("stage1", "final"):
        checkpoint = torch.load(run / stage / "checkpoints" / "final.ckpt", weights_only=False)
        last_rate = checkpoint["optimizer_states"][0]["param_groups"][0]["lr"]
        planned = TINY_ITERATIONS[stage]
        peak = DemoRecipe().learning_rate[stage]
        assert last_rate == pytest.approx(peak * cosine_factor(planned - 1, planned)), stage


def test_the_run_folder_holds_what_the_readme_promises(demo_run):
    metrics, _, run = demo_run
    assert metrics["run"] == str(run)
    for stage in STAGES:
        assert list((run / stage / "wandb").glob("offline-run-*")), stage
    assert (run / "prior" / "stylegan2.pt").is_file() and (run / "model.safetensors").is_file()
    assert (run / "eval" / "rd_plot.png").is_file()
    saved = json.loads((run / "metrics.json").read_text())
    assert {"grain", "bicubic", "bilinear", "jpeg_matched", "webp_matched"} <= set(saved["summary"]["methods"])
    assert saved["test_images"] == 2
    assert [target["name"] for target in saved["targets"]] == ["lr_psnr", "PSNR", "LPIPS"]
    width, height = Image.open(run / "comparison.png").size
    assert width == len(COMPARISON_COLUMNS) * (32 * 2 + 4) + 4 and height > 2 * (32 * 2 + 4)


def test_the_same_seed_gives_the_same_table(demo_run, tmp_path, monkeypatch):
    """Another run with the same seed (CSV logger this time: the logger changes nothing) gives the same numbers."""
    metrics, _, _ = demo_run
    monkeypatch.setenv("GRAIN_PL_NO_WANDB", "1")
    again = run_demo(tmp_path / "demo", tiny_recipe(speed=SpeedOptions(threads=1)), seed=0, progress_seconds=1e9)
    assert again["summary"]["methods"] == metrics["summary"]["methods"]
    assert {stage: record["iterations"] for stage, record in again["stages"].items()} == TINY_ITERATIONS


def test_the_time_cap_cuts_stages_and_says_so(demo_run, tmp_path, monkeypatch, capsys):
    _, _, run = demo_run
    monkeypatch.setenv("GRAIN_PL_NO_WANDB", "1")
    metrics = run_demo(run, tiny_recipe(iterations=dict.fromkeys(STAGES, 2)), seed=0, minutes=0.01,
                       progress_seconds=1e9)
    assert metrics["run"] == str(run.with_name("demo-1"))  # the first run is untouched
    saved = json.loads((run.with_name("demo-1") / "metrics.json").read_text())
    assert saved["reproducible"] is False and saved["cut_by_cap"] == list(STAGES)
    for stage in STAGES:  # one iteration each: the chain still completes and is evaluated
        assert saved["stages"][stage]["iterations"] == 1 and saved["stages"][stage]["cut_by_cap"] is True
    errors = capsys.readouterr().err
    assert "safety cap" in errors and "NOT the reproducible" in errors and "stopped stage1 at 1 of 2" in errors
    with pytest.raises(ValueError, match="--minutes"):
        run_demo(tmp_path / "other", tiny_recipe(), minutes=0)


def test_bad_demo_arguments_fail_before_any_work(tmp_path):
    from grain_pl.commands import build_parser

    parser = build_parser()
    for argv, message in ((["--threads", "0"], "--threads"), (["--iterations", "prior=0"], "STAGE=N"),
                          (["--scale", "-1"], "--scale"), (["--scale", "inf"], "positive and finite, got inf"),
                          (["--preset", "demo-64"], "unknown preset 'demo-64'; known presets: .*demo-64-lr16")):
        args = parser.parse_args(["demo", "--output", str(tmp_path / "demo"), *argv])
        with pytest.raises(ValueError, match=message):
            args.run(args)
    assert not (tmp_path / "demo").exists()


def test_the_preset_switch_changes_only_the_networks(tmp_path, monkeypatch):
    from grain_pl.commands import build_parser
    from grain_pl.networks import get_preset

    given = []
    monkeypatch.setattr(demo, "run_demo", lambda output, recipe, **kwargs: given.append(recipe) or {"run": "x"})
    parser = build_parser()
    for argv in ([], ["--preset", "demo-64-lr16"]):
        args = parser.parse_args(["demo", "--output", str(tmp_path / "demo"), *argv])
        args.run(args)
    default, lr16 = given
    assert default.preset == "demo-64-lr8" and lr16 == dataclasses.replace(default, preset="demo-64-lr16")
    config = get_preset(lr16.preset, **lr16.network_overrides)
    assert (config.hr_size, config.lr_size) == (64, 16) and config.hr_parameterisation == "bicubic_residual"


def test_a_full_disk_while_making_the_data_names_the_file_and_leaves_no_half_png(tmp_path, monkeypatch):
    import errno
    import os
    import stat

    from grain_pl.commands.demo import prepare_data

    real_fsync, written = os.fsync, []

    def fsync(descriptor):  # the third crop finds the disk full
        if stat.S_ISREG(os.fstat(descriptor).st_mode):
            if len(written) >= 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            written.append(descriptor)
        real_fsync(descriptor)

    monkeypatch.setattr("grain_pl.io.files.os.fsync", fsync)
    with pytest.raises(OSError, match="No space left on device") as caught:
        prepare_data(tmp_path / "data", 16, train_crops=7, test_crops=2, seed=0)
    third = tmp_path / "data" / "train" / f"{TRAIN_PHOTOS[2]}_0000.png"
    assert caught.value.filename == str(third)
    files = sorted(path.name for path in (tmp_path / "data" / "train").iterdir())
    assert files == [f"{TRAIN_PHOTOS[0]}_0000.png", f"{TRAIN_PHOTOS[1]}_0000.png"]  # complete ones, no temporary
