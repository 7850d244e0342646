"""`grain evaluate`'s protocol: GRAIN against resize and codec baselines on a folder of test images."""

from grain_pl.evaluation.run import *  # noqa: F403
from grain_pl.evaluation.run import EVALUATION_RESIZE_POLICIES, __all__  # noqa: F401
