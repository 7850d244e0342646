"""`grain demo --upscaler`: the demo recipe trains GrainConfig(encoder="bicubic"), and its evaluation shows the model
as its own row (grain-upscaler) beside bicubic upscaling."""

from __future__ import annotations

import json

import pytest

from grain_pl.commands import build_parser
from grain_pl.commands import demo as demo_command
from grain_pl.commands.demo import (
    UPSCALER_ROW,
    DemoRecipe,
    SpeedOptions,
    build_stage,
    print_table,
    run_demo,
    upscaler_recipe,
)
from grain_pl.networks import get_preset
from grain_pl.networks.encoder import BicubicEncoder, Encoder


def recipe_of(argv: list[str], monkeypatch) -> DemoRecipe:
    """The recipe `grain demo ARGV` would run (run_demo replaced by a stub)."""
    seen = {}

    def fake_run_demo(output, recipe, **options):
        seen["recipe"] = recipe
        return {"run": str(output)}

    monkeypatch.setattr(demo_command, "run_demo", fake_run_demo)
    args = build_parser().parse_args(["demo", *argv])
    args.run(args)
    return seen["recipe"]


def test_the_switch_reaches_the_config(monkeypatch, tmp_path):
    plain = recipe_of(["--scale", "0.5"], monkeypatch)
    upscaler = recipe_of(["--upscaler", "--scale", "0.5"], monkeypatch)
    assert get_preset(plain.preset, **plain.network_overrides).encoder == "learned"
    config = get_preset(upscaler.preset, **upscaler.network_overrides)
    assert config.encoder == "bicubic" and config.lr_parameterisation == "free"
    assert config.hr_parameterisation == plain.network_overrides["hr_parameterisation"]
    assert (upscaler.lr_weight, upscaler.final_lr_weight) == (0.0, 0.0)
    # the demo recipe otherwise
    assert upscaler.iterations == plain.iterations == DemoRecipe().scaled(0.5).iterations
    assert (upscaler.learning_rate, upscaler.lpips, upscaler.batch_size) == (plain.learning_rate, plain.lpips,
                                                                            plain.batch_size)
    stage = build_stage("stage1", upscaler, config, tmp_path, max_iterations=1)
    assert isinstance(stage.grain.encoder, BicubicEncoder) and stage.loss_weights.lr == 0.0
    plain_stage = build_stage("stage1", plain, get_preset(plain.preset, **plain.network_overrides), tmp_path, 1)
    assert isinstance(plain_stage.grain.encoder, Encoder)


def test_the_table_names_the_models_row(capsys):
    summary = {"methods": {"grain": {"bytes": 100.0, "psnr": 25.0, "ssim": 0.8, "lpips": 0.2, "lr_psnr": 100.0},
                           "bicubic": {"bytes": 100.0, "psnr": 24.0, "ssim": 0.7, "lpips": 0.3, "lr_psnr": 100.0}}}
    print_table(summary, labels={"grain": UPSCALER_ROW})
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == "| grain-upscaler | 100 | 25.00 | 0.8000 | 0.2000 | 100.00 |"
    assert lines[3].startswith("| bicubic | 100 | 24.00 |")


@pytest.mark.slow  # a whole (tiny) training chain
def test_a_tiny_upscaler_demo_evaluates_the_model_beside_bicubic(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GRAIN_PL_NO_WANDB", "1")
    recipe = upscaler_recipe(DemoRecipe(
        preset="tiny-32-lr8", batch_size=2, train_crops=14, test_crops=2, speed=SpeedOptions(threads=1),
        iterations={"prior": 1, "stage1": 2, "stage2": 1, "stage3": 1, "final": 1}))
    metrics = run_demo(tmp_path / "demo", recipe, seed=0, progress_seconds=1e9)
    out = capsys.readouterr().out
    assert "tiny-32-lr8 upscaler (encoder: bicubic)" in out
    rows = {line.split(" | ")[0].lstrip("| ") for line in out.splitlines() if line.startswith("| ")}
    assert {UPSCALER_ROW, "bicubic"} <= rows and "grain" not in rows
    saved = json.loads((tmp_path / "demo" / "eval" / "summary.json").read_text())
    assert saved["settings"]["model_config"]["encoder"] == "bicubic"
    assert saved["settings"]["grain_row"].startswith(f"{UPSCALER_ROW}: ")
    methods = metrics["summary"]["methods"]
    # its own encoder is the bicubic downscale: its LR PNG is the bicubic baseline's, byte for byte
    assert methods["grain"]["bytes"] == methods["bicubic"]["bytes"]
    assert methods["grain"]["lr_psnr"] == methods["bicubic"]["lr_psnr"]
