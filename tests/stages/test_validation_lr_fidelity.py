"""A GRAIN stage's validation logs the LR's fidelity (val/lr_psnr, val/lr_ssim), as `grain evaluate` defines it."""

from __future__ import annotations

import csv

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger

from grain_pl.io.images import to_uint8
from grain_pl.losses import LossWeights
from grain_pl.metrics.lr_fidelity import lr_fidelity
from grain_pl.stages import Stage1, Stage3

PRESET = "tiny-32-lr8"


@pytest.mark.parametrize("name", ["stage1", "stage3"])
def test_validation_logs_lr_fidelity(name, prior_file, datamodule, trainer_kwargs, tmp_path) -> None:
    weights = LossWeights(identity=0.0, lpips=0.0, lr=0.1 if name == "stage1" else 0.0)
    stage = (Stage1(network=PRESET, loss_weights=weights, metrics_lpips=False) if name == "stage1" else
             Stage3(network=PRESET, prior_path=str(prior_file), loss_weights=weights, metrics_lpips=False))
    trainer_kwargs.update(logger=CSVLogger(tmp_path, name="csv"), max_epochs=1, limit_train_batches=1,
                          limit_val_batches=2, num_sanity_val_steps=0)
    trainer = pl.Trainer(**trainer_kwargs)
    trainer.fit(stage, datamodule=datamodule)

    # The per-image mean over the validation images, of the LR as its PNG holds it.
    stage.eval()
    lr_psnr, lr_ssim = [], []
    with torch.no_grad():
        for index, batch in enumerate(datamodule.val_dataloader()):
            if index == 2:
                break
            values = lr_fidelity(to_uint8(stage.generate(batch["hr"]).lr), to_uint8(batch["hr"]))
            lr_psnr.append(values["lr_psnr"])
            lr_ssim.append(values["lr_ssim"])
    expected = {"val/lr_psnr": float(torch.cat(lr_psnr).mean()), "val/lr_ssim": float(torch.cat(lr_ssim).mean())}
    for key, value in expected.items():
        assert float(trainer.callback_metrics[key]) == pytest.approx(value, rel=1e-5), key
    assert expected["val/lr_psnr"] < 100  # a random encoder's LR is no thumbnail yet

    with open(trainer.logger.log_dir + "/metrics.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("val/lr_psnr")]
    assert len(rows) == 1 and float(rows[0]["val/lr_psnr"]) == pytest.approx(expected["val/lr_psnr"], rel=1e-5)
    assert float(rows[0]["val/lr_ssim"]) == pytest.approx(expected["val/lr_ssim"], rel=1e-5)
