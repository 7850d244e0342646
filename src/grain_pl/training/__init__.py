"""What a training run needs around the stages: chaining, sample grids, loggers, checkpoint files, optimizers."""

from grain_pl.training.checkpoint_io import AtomicCheckpointIO
from grain_pl.training.image_logger import LogImageGrid
from grain_pl.training.loggers import GrainLogger, GrainWandbLogger, make_logger
from grain_pl.training.optim import OPTIMIZER_NAMES, build_optimizer
from grain_pl.training.stage_init import InitFromStage

__all__ = ["OPTIMIZER_NAMES", "AtomicCheckpointIO", "GrainLogger", "GrainWandbLogger", "InitFromStage",
           "LogImageGrid", "build_optimizer", "make_logger"]
