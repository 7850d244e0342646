"""Activation checkpointing switch shared by the networks.

With it on, the big stacks keep only their inputs during the forward pass and recompute their insides in
the backward pass: less memory for one more forward. It does nothing without autograd (inference).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def maybe_checkpoint(function: Callable[..., torch.Tensor], *inputs: torch.Tensor, enabled: bool) -> torch.Tensor:
    if enabled and torch.is_grad_enabled():
        return checkpoint(function, *inputs, use_reentrant=False)
    return function(*inputs)


def set_checkpointing(module: nn.Module, enabled: bool) -> None:
    """Switch checkpointing on every sub-module that supports it (those with a `checkpointing` attribute)."""
    for child in module.modules():
        if hasattr(child, "checkpointing"):
            child.checkpointing = enabled
