"""Optimizers for the generator and discriminator (docs/method.md §2.4).

- "ranger": the official optimizer (pSp's copy of lessw2020's Ranger 20.4.11): RAdam + Lookahead (alpha 0.5,
  k 6) + gradient centralisation of every parameter with more than one dimension, betas (0.95, 0.999),
  eps 1e-5, rectification threshold 5. Built from `pytorch_optimizer.Ranger`.
- "radam_lookahead": torch's own RAdam inside `pytorch_optimizer.Lookahead` (k 6, alpha 0.5): Ranger without
  gradient centralisation, with Ranger's betas and eps.
- "adam": `torch.optim.Adam` with its default betas (the official `--optim_name adam`).

All three are ordinary `torch.optim.Optimizer`s: they work with Lightning manual optimisation and resume
through `state_dict()` / `load_state_dict()` (Lookahead's slow weights and step counter included).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import torch
from torch.optim import Optimizer

OptimizerName = Literal["adam", "ranger", "radam_lookahead"]
OPTIMIZER_NAMES: tuple[str, ...] = ("adam", "ranger", "radam_lookahead")

RANGER_BETAS = (0.95, 0.999)
RANGER_EPS = 1e-5
LOOKAHEAD_ALPHA = 0.5
LOOKAHEAD_STEPS = 6
RECTIFICATION_THRESHOLD = 5


def build_optimizer(
    params: Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]],
    name: OptimizerName = "adam",
    learning_rate: float = 1e-4,
    betas: tuple[float, float] | None = None,
    weight_decay: float = 0.0,
) -> Optimizer:
    """Build the optimizer `name` over `params`; `betas=None` picks that optimizer's default (see module doc)."""
    if name not in OPTIMIZER_NAMES:
        raise ValueError(f"optimizer name must be one of {OPTIMIZER_NAMES}, got {name!r}")
    if learning_rate <= 0:
        raise ValueError(f"learning_rate must be positive, got {learning_rate}")
    params = list(params)
    if not params:
        raise ValueError("build_optimizer got no parameters (is every module of this stage frozen?)")

    if name == "adam":
        return torch.optim.Adam(params, lr=learning_rate, betas=betas or (0.9, 0.999), weight_decay=weight_decay)

    from pytorch_optimizer import Lookahead, Ranger  # deferred: only these two need the package

    if name == "ranger":
        return Ranger(
            params,
            lr=learning_rate,
            betas=betas or RANGER_BETAS,
            alpha=LOOKAHEAD_ALPHA,
            k=LOOKAHEAD_STEPS,
            n_sma_threshold=RECTIFICATION_THRESHOLD,
            # Official Ranger takes a plain momentum-SGD step (lr / bias correction) while the variance estimate
            # is unreliable (the first 5 steps at beta2 0.999). pytorch_optimizer's default False instead uses a
            # step size of -lr there, i.e. it moves *up* the gradient for those steps.
            degenerated_to_sgd=True,
            weight_decay=weight_decay,
            weight_decouple=True,  # official: p -= weight_decay * lr * p (only matters when weight_decay > 0)
            use_gc=True,
            gc_conv_only=False,  # centralise every >1-dim gradient: conv and linear weights, not biases
            eps=RANGER_EPS,
        )

    # torch's RAdam already falls back to momentum SGD below its (fixed) threshold of 5.
    radam = torch.optim.RAdam(
        params,
        lr=learning_rate,
        betas=betas or RANGER_BETAS,
        eps=RANGER_EPS,
        weight_decay=weight_decay,
        decoupled_weight_decay=True,
    )
    return Lookahead(radam, k=LOOKAHEAD_STEPS, alpha=LOOKAHEAD_ALPHA)
