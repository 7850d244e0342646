"""Weights of the GRAIN loss terms and their weighted sum (docs/method.md §2.1-2.2).

Defaults are the official lambdas: l2 1.0, LPIPS 0.8, ID 0.1, adversarial 0.01. The LR guidance weight is 0
by default; the official stage 1 and final stage set it to 0.1, and it must stay 0 where no LR exists.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch


@dataclass
class LossWeights:
    """Multiplier of each loss term; field names are the keys `weighted_sum` expects.

    pixel: HR MSE; lpips: LPIPS; identity: IR-SE50 1 - cos; adversarial: the generator's GAN loss;
    lr: MSE between the produced low-resolution image and the downscaled HR (not a learning rate).
    """

    pixel: float = 1.0
    lpips: float = 0.8
    identity: float = 0.1
    adversarial: float = 0.01
    lr: float = 0.0

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"LossWeights.{field.name} must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"LossWeights.{field.name} must be finite and >= 0, got {value}")
            setattr(self, field.name, float(value))

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(field.name for field in fields(cls))

    def active(self) -> tuple[str, ...]:
        """Names of the terms with a non-zero weight: those a training step has to compute."""
        return tuple(name for name in self.names() if getattr(self, name) != 0.0)


def weighted_sum(terms: dict[str, torch.Tensor], weights: LossWeights) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total = sum of weight * term, and a log dict of every raw term plus "total" (all detached).

    Terms with a zero weight may be absent; they are logged when given but left out of the total (so a NaN in
    an unused term cannot poison it). A term without a weight field, or a missing term whose weight is not
    zero, raises a ValueError: both are wiring mistakes that would otherwise silently change the objective.
    """
    known = LossWeights.names()
    unknown = sorted(set(terms) - set(known))
    if unknown:
        raise ValueError(f"loss terms {unknown} have no weight; LossWeights fields are {list(known)}")
    missing = [name for name in weights.active() if name not in terms]
    if missing:
        raise ValueError(f"loss terms {missing} have non-zero weights but were not computed")
    if not terms:
        raise ValueError("weighted_sum needs at least one loss term")

    total: torch.Tensor | None = None
    for name in known:  # the fixed field order keeps the summation order (and float rounding) reproducible
        weight = getattr(weights, name)
        if name not in terms or weight == 0.0:
            continue
        contribution = weight * terms[name]
        total = contribution if total is None else total + contribution
    if total is None:  # every given term has weight 0
        reference = next(iter(terms.values()))
        total = torch.zeros((), dtype=reference.dtype, device=reference.device)

    log = {name: term.detach() for name, term in terms.items()}
    log["total"] = total.detach()
    return total, log
