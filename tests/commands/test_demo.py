"""The embedded demo's whole chain, on a tiny recipe and a one-minute budget: every stage runs and chains, the
model is exported and evaluated against the baselines, and the run folder holds what the README promises."""

from __future__ import annotations

import json

import numpy as np

from grain_pl.commands.demo import HELD_OUT_PHOTOS, TRAIN_PHOTOS, DemoRecipe, next_free, random_crops, run_demo


def test_crops_come_from_the_photo_at_the_asked_size():
    rng = np.random.default_rng(0)
    photo = np.zeros((100, 150, 3), dtype=np.uint8)
    photo[:, 75:] = 255
    crops = random_crops(photo, 32, 5, rng)
    assert all(crop.size == (32, 32) for crop in crops)
    assert not set(TRAIN_PHOTOS) & set(HELD_OUT_PHOTOS)


def test_next_free_never_reuses_a_run_folder(tmp_path):
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo-1").mkdir()
    assert next_free(tmp_path / "demo") == tmp_path / "demo-2"
    assert next_free(tmp_path / "other") == tmp_path / "other"


def test_demo_chain_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    recipe = DemoRecipe(preset="tiny-32-lr8", batch_size=4, train_crops=28, test_crops=4, evaluation_minutes=0.2)
    metrics = run_demo(tmp_path / "demo", minutes=0.9, recipe=recipe)
    run = tmp_path / "demo"
    assert metrics["run"] == str(run)
    for stage in ("prior", "stage1", "stage2", "stage3", "final"):
        assert (run / stage / "checkpoints" / "final.ckpt").is_file(), stage
        assert list((run / stage / "wandb").glob("offline-run-*")), stage
    assert (run / "prior" / "stylegan2.pt").is_file() and (run / "model.safetensors").is_file()
    assert (run / "comparison.png").is_file() and (run / "eval" / "rd_plot.png").is_file()
    saved = json.loads((run / "metrics.json").read_text())
    methods = saved["summary"]["methods"]
    assert {"grain", "bicubic", "bilinear", "jpeg_matched", "webp_matched"} <= set(methods)
    assert saved["test_images"] == 4
    again = run_demo(tmp_path / "demo", minutes=0.01, recipe=DemoRecipe(preset="tiny-32-lr8", batch_size=4,
                                                                       train_crops=4, test_crops=2,
                                                                       evaluation_minutes=0.0))
    assert again["run"] == str(tmp_path / "demo-1")  # the first run is untouched
