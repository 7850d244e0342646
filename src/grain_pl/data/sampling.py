"""The training order: shuffled per epoch from a seed, so that a run resumed mid-epoch picks up where it stopped.

Lightning restores a mid-epoch checkpoint's counters (batch index, steps) but draws the interrupted epoch's data
again from its start, so the batches before the kill are trained on twice and some after it never. A plain
`RandomSampler` also takes its order from the global RNG, which a checkpoint does not hold. `ResumableSampler`
draws each epoch's permutation from (seed, epoch), as `DistributedSampler` does, and its first pass after a
resume leaves out the batches this rank already trained on in that epoch; `ResumableDataLoader` keeps the seed
in the checkpoint.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sized

import pytorch_lightning as pl
from torch.utils.data import DataLoader, DistributedSampler


class ResumableSampler(DistributedSampler):
    """`DistributedSampler` (shuffled, padded to equal shares per rank) whose next pass skips `skip` samples.

    Being a `DistributedSampler`, Lightning keeps it under DDP instead of wrapping it in its own, and calls its
    `set_epoch` at every epoch start. Use `for_trainer` to build it from the trainer's state.
    """

    def __init__(self, dataset: Sized, *, num_replicas: int = 1, rank: int = 0, seed: int = 0, epoch: int = 0,
                 skip: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        if skip < 0:
            raise ValueError(f"skip must be >= 0, got {skip}")
        self.set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        skip, self.skip = self.skip, 0  # only the pass of the resumed epoch is shortened
        return iter(indices[skip:])

    @classmethod
    def for_trainer(cls, dataset: Sized, batch_size: int, trainer: pl.Trainer | None) -> ResumableSampler:
        """The sampler for `trainer`'s next training pass: its rank's share, the epoch it is in, and, when it
        was restored from a checkpoint saved mid-epoch, the batches of that epoch it already trained on.

        The seed is Lightning's global one (`seed_everything`; PL_GLOBAL_SEED), else 0, as for its own
        `DistributedSampler`; a resumed run takes the checkpoint's instead (`ResumableDataLoader`).
        """
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        if trainer is None:  # a loader asked for outside a fit
            return cls(dataset, seed=seed)
        epoch = trainer.fit_loop.epoch_progress.current.processed
        sampler = cls(dataset, num_replicas=trainer.world_size, rank=trainer.global_rank, seed=seed, epoch=epoch)
        # On a fresh fit or at an epoch boundary `processed` is 0 or a whole epoch: nothing to skip.
        trained = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        if trainer.fit_loop.restarting and 0 < trained < _batches_per_epoch(len(sampler), batch_size, trainer):
            sampler.skip = trained * batch_size
        return sampler


class ResumableDataLoader(DataLoader):
    """A DataLoader over a `ResumableSampler` that Lightning saves in checkpoints and restores (it has
    `state_dict` / `load_state_dict`) before its first pass after a resume.

    Its state is the shuffle seed, so a resumed run keeps its order even when `seed_everything` drew a new
    global seed. Where the epoch stands comes from Lightning's own counters (`ResumableSampler.for_trainer`),
    not from here: Lightning fetches a batch ahead, so a loader's own count runs one past the trained batches.
    """

    def state_dict(self) -> dict[str, int]:
        return {"shuffle_seed": self.sampler.seed}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        if not isinstance(self.sampler, ResumableSampler):
            raise TypeError(f"ResumableDataLoader needs a ResumableSampler, got {type(self.sampler).__name__}")
        self.sampler.seed = int(state_dict["shuffle_seed"])


def _batches_per_epoch(samples: int, batch_size: int, trainer: pl.Trainer) -> int:
    """Batches Lightning runs per epoch from `samples` per rank (drop_last) under `limit_train_batches`."""
    batches = samples // batch_size
    limit = trainer.limit_train_batches
    if isinstance(limit, int):
        return min(batches, limit)
    return batches if limit >= 1.0 else int(math.floor(batches * limit))
