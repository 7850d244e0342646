"""`grain demo --jpeg-robust`: the recipe gets the stages' `lr_jpeg` (LRJpeg's defaults, recorded in metrics.json
through the recipe) and every GRAIN stage the demo builds trains with it; without the switch nothing changes."""

from __future__ import annotations

import dataclasses

import pytest

from grain_pl.commands import build_parser, demo
from grain_pl.commands.demo import DemoRecipe, build_stage
from grain_pl.training.lr_jpeg import LRJpeg


def recipe_of(argv: list[str], tmp_path, monkeypatch) -> DemoRecipe:
    """The recipe `grain demo ARGV` would train (run_demo itself replaced)."""
    given = {}

    def fake_run_demo(output, recipe, **kwargs):
        given["recipe"] = recipe
        return {"run": str(output)}

    monkeypatch.setattr(demo, "run_demo", fake_run_demo)
    args = build_parser().parse_args(["demo", "--output", str(tmp_path / "demo"), *argv])
    args.run(args)
    return given["recipe"]


def test_the_switch_reaches_every_grain_stage(tmp_path, monkeypatch):
    recipe = recipe_of(["--jpeg-robust"], tmp_path, monkeypatch)
    assert recipe.lr_jpeg == dataclasses.asdict(LRJpeg())
    assert dataclasses.replace(recipe, lr_jpeg=None) == recipe_of([], tmp_path, monkeypatch)  # nothing else changes

    from grain_pl.networks import get_preset

    recipe = dataclasses.replace(recipe, preset="tiny-32-lr8", network_overrides={})
    config = get_preset(recipe.preset)
    build_stage("prior", recipe, config, tmp_path, max_iterations=1).export(tmp_path / "prior" / "stylegan2.pt")
    for stage in ("stage1", "stage2", "stage3", "final"):
        assert build_stage(stage, recipe, config, tmp_path, max_iterations=1).lr_jpeg == LRJpeg(), stage
        plain = build_stage(stage, dataclasses.replace(recipe, lr_jpeg=None), config, tmp_path, max_iterations=1)
        assert plain.lr_jpeg is None, stage


def test_the_default_demo_stays_lossless(tmp_path, monkeypatch):
    assert DemoRecipe().lr_jpeg is None
    assert recipe_of([], tmp_path, monkeypatch).lr_jpeg is None


def test_bad_recipe_settings_name_the_setting(tmp_path):
    from grain_pl.networks import get_preset

    recipe = DemoRecipe(preset="tiny-32-lr8", network_overrides={}, lr_jpeg={"quality_min": 0})
    with pytest.raises(ValueError, match="lr_jpeg.quality_min"):
        build_stage("stage1", recipe, get_preset("tiny-32-lr8"), tmp_path, max_iterations=1)


def test_lr_jpeg_changes_only_the_settings_it_names(tmp_path, monkeypatch):
    recipe = recipe_of(["--preset", "demo-64-lr16", "--lr-jpeg", "quality_min=85", "probability=0.5",
                        "straight_through=true"], tmp_path, monkeypatch)
    assert recipe.preset == "demo-64-lr16"
    assert recipe.lr_jpeg == dataclasses.asdict(LRJpeg(quality_min=85, probability=0.5, straight_through=True))
    # --lr-jpeg alone is --jpeg-robust with those settings; with no change it is --jpeg-robust itself
    assert recipe_of(["--lr-jpeg", "quality_max=95"], tmp_path, monkeypatch) == \
        recipe_of(["--jpeg-robust"], tmp_path, monkeypatch)
    assert recipe_of(["--jpeg-robust", "--lr-jpeg", "quality_max=90", "quality_min=90", "probability=1"],
                     tmp_path, monkeypatch).lr_jpeg == dataclasses.asdict(LRJpeg(90, 90, 1.0))


@pytest.mark.parametrize("item, message", [
    ("quality=90", "--lr-jpeg 'quality=90': expected FIELD=VALUE with FIELD one of quality_min, quality_max, "
                   "probability, straight_through"),
    ("quality_min=high", "--lr-jpeg 'quality_min=high': quality_min must be an integer"),
    ("probability=half", "--lr-jpeg 'probability=half': probability must be a number"),
    ("straight_through=1", "--lr-jpeg 'straight_through=1': straight_through must be true or false"),
    ("quality_min=0", "lr_jpeg.quality_min must be a JPEG quality, an integer 1..100, got 0"),
    ("probability=0", "lr_jpeg.probability must be a share of the samples in (0, 1], got 0.0"),
])
def test_bad_lr_jpeg_settings_are_one_line_before_any_work(item, message, tmp_path, monkeypatch):
    with pytest.raises(ValueError) as error:
        recipe_of(["--lr-jpeg", item], tmp_path, monkeypatch)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)
    assert not (tmp_path / "demo").exists()
