"""ResumableSampler / ResumableDataLoader: the per-epoch order, the skip of a resumed epoch, ranks, checkpoints.

The end-to-end check (a SIGKILLed `grain fit` resumes with the batches it had not trained on) is in
tests/stages/test_resume.py; here, the pieces and an in-process Lightning resume that compares batch by batch.
"""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from grain_pl.data import GrainDataModule, ResumableDataLoader, ResumableSampler
from grain_pl.losses import LossWeights
from grain_pl.stages import Stage1


def test_each_epoch_is_a_permutation_drawn_from_seed_and_epoch() -> None:
    data = range(10)
    orders = {}
    for seed, epoch in [(0, 0), (0, 1), (5, 0)]:  # DistributedSampler seeds with seed + epoch
        sampler = ResumableSampler(data, seed=seed, epoch=epoch)
        orders[seed, epoch] = list(sampler)
        assert sorted(orders[seed, epoch]) == list(range(10))
        assert list(sampler) == orders[seed, epoch]  # the same again: no global RNG involved
    assert len({tuple(order) for order in orders.values()}) == 3
    sampler = ResumableSampler(data, seed=0)
    sampler.set_epoch(1)  # what Lightning calls at every epoch start
    assert list(sampler) == orders[0, 1]


def test_skip_shortens_only_the_next_pass() -> None:
    full = list(ResumableSampler(range(10), seed=3, epoch=2))
    sampler = ResumableSampler(range(10), seed=3, epoch=2, skip=4)
    assert list(sampler) == full[4:]
    assert list(sampler) == full
    with pytest.raises(ValueError, match="skip"):
        ResumableSampler(range(10), skip=-1)


def test_ranks_share_the_permutation_without_overlap() -> None:
    shares = [list(ResumableSampler(range(12), num_replicas=3, rank=rank, seed=5)) for rank in range(3)]
    assert sorted(sum(shares, [])) == list(range(12))
    assert all(len(share) == 4 for share in shares)


def test_the_loader_keeps_its_seed_in_a_checkpoint() -> None:
    saved = ResumableDataLoader(range(6), sampler=ResumableSampler(range(6), seed=11))
    resumed = ResumableDataLoader(range(6), sampler=ResumableSampler(range(6), seed=0))
    resumed.load_state_dict(saved.state_dict())
    assert list(resumed) == list(saved)
    with pytest.raises(TypeError, match="ResumableSampler"):
        ResumableDataLoader(range(6)).load_state_dict({"shuffle_seed": 1})


class RecordPaths(pl.Callback):
    """The image paths of every training batch, and a checkpoint (then an error) after `stop_after` batches."""

    def __init__(self, checkpoint=None, stop_after: int | None = None) -> None:
        self.batches: list[tuple[int, int, list[str]]] = []
        self.checkpoint, self.stop_after = checkpoint, stop_after

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batches.append((trainer.current_epoch, batch_idx, list(batch["path"])))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.stop_after is not None and len(self.batches) == self.stop_after:
            trainer.save_checkpoint(self.checkpoint)  # as ModelCheckpoint(every_n_train_steps) does
            raise InterruptedError("simulated crash")


def test_a_resume_mid_epoch_trains_on_exactly_the_batches_an_uninterrupted_run_would(image_dir, tmp_path,
                                                                                       monkeypatch) -> None:
    # Epoch 1 of 3 batches (6 training images, batch 2) is interrupted after its first batch.
    monkeypatch.setenv("PL_GLOBAL_SEED", "7")

    def fit(callback, ckpt_path=None) -> None:
        datamodule = GrainDataModule(data_dir=str(image_dir), image_size=32, split="folder", test_fraction=0.25,
                                     batch_size=2, num_workers=0)
        stage = Stage1(network="tiny-32-lr8", loss_weights=LossWeights(identity=0.0, lpips=0.0),
                       metrics_lpips=False)
        trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=3, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                             default_root_dir=str(tmp_path), callbacks=[callback])
        trainer.fit(stage, datamodule=datamodule, ckpt_path=ckpt_path)

    uninterrupted = RecordPaths()
    fit(uninterrupted)
    assert [(epoch, index) for epoch, index, _ in uninterrupted.batches] == [(e, i) for e in range(3) for i in range(3)]
    assert uninterrupted.batches[0][2] != uninterrupted.batches[3][2]  # epochs are shuffled differently

    checkpoint = tmp_path / "mid_epoch.ckpt"
    interrupted = RecordPaths(checkpoint, stop_after=4)
    with pytest.raises(InterruptedError):
        fit(interrupted)
    assert interrupted.batches == uninterrupted.batches[:4]

    monkeypatch.setenv("PL_GLOBAL_SEED", "8")  # a new global seed: the checkpoint's order must still win
    resumed = RecordPaths()
    fit(resumed, ckpt_path=str(checkpoint))
    assert resumed.batches == uninterrupted.batches[4:]


def test_the_datamodule_trains_through_a_resumable_loader(image_dir) -> None:
    datamodule = GrainDataModule(data_dir=str(image_dir), image_size=32, split="folder", test_fraction=0.25,
                                 batch_size=2, num_workers=0)
    datamodule.setup("fit")
    train = datamodule.train_dataloader()
    assert isinstance(train, ResumableDataLoader) and isinstance(train.sampler, ResumableSampler)
    assert len(train) == 3 and all(batch["hr"].shape == (2, 3, 32, 32) for batch in train)
    validation = datamodule.val_dataloader()
    assert type(validation) is DataLoader and not isinstance(validation.sampler, ResumableSampler)
    assert torch.equal(next(iter(validation))["hr"], next(iter(datamodule.val_dataloader()))["hr"])
