"""Training stages (LightningModules), one file each. Every stage builds the same GRAIN under `self.grain`."""

from grain_pl.stages.base import GrainStage
from grain_pl.stages.final import FinalStage
from grain_pl.stages.prior import PriorStage
from grain_pl.stages.stage1 import Stage1
from grain_pl.stages.stage2 import Stage2
from grain_pl.stages.stage3 import Stage3

__all__ = ["FinalStage", "GrainStage", "PriorStage", "Stage1", "Stage2", "Stage3"]
