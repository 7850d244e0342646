"""Training stages (LightningModules). Each builds the same GRAIN under `self.grain`."""

from grain_pl.stages.base import GrainStage
from grain_pl.stages.finetune import FinalStage
from grain_pl.stages.generative_prior import Stage2
from grain_pl.stages.prior import PriorStage
from grain_pl.stages.prior_decoding import Stage3
from grain_pl.stages.rescaling import Stage1

__all__ = ["FinalStage", "GrainStage", "PriorStage", "Stage1", "Stage2", "Stage3"]
