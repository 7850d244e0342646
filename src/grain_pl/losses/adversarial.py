"""Adversarial terms of the GRAIN objective (docs/method.md §2.2-2.3).

- Stage 1: relativistic average GAN (RaGAN) with BCE-with-logits on a patch discriminator. The official
  generator loss is one-sided (fake term only, not halved); ESRGAN's symmetric form is an option.
- Stages 2-4: StyleGAN2's non-saturating logistic loss with lazy R1 on the pretrained StyleGAN2 D.
- Plain WGAN (what the paper's text names) as an option; no gradient penalty is included.

Every function works for any batch size and logit shape: BCE targets are built with `ones_like`/`zeros_like`
(the official fixed 1x1x16x16 targets broke batch sizes above 1, docs/method.md §6.3), and the relativistic
means are over the whole logit tensor (batch and patches), as in the official code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

AdversarialKind = Literal["ragan", "logistic", "wgan"]
ADVERSARIAL_KINDS: tuple[str, ...] = ("ragan", "logistic", "wgan")


def _check_logits(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> None:
    if real_logits.shape[1:] != fake_logits.shape[1:]:
        raise ValueError(f"real and fake logits must share their per-sample shape, "
                         f"got {tuple(real_logits.shape)} and {tuple(fake_logits.shape)}")


def _bce_to_ones(logits: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))


def _bce_to_zeros(logits: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits))


def ragan_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """0.5 * [BCE(real - mean(fake), 1) + BCE(fake - mean(real), 0)]; pass D(fake.detach())."""
    _check_logits(real_logits, fake_logits)
    real_vs_fake = real_logits - fake_logits.mean()
    fake_vs_real = fake_logits - real_logits.mean()
    return 0.5 * (_bce_to_ones(real_vs_fake) + _bce_to_zeros(fake_vs_real))


def ragan_generator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, symmetric: bool = False) -> torch.Tensor:
    """Official: BCE(fake - mean(real), 1). symmetric=True: ESRGAN's 0.5 * [BCE(real - mean(fake), 0) + that].

    The real logits are detached: the generator cannot change them, and this keeps the generator step from
    leaving gradients in the discriminator's parameters.
    """
    _check_logits(real_logits, fake_logits)
    real_logits = real_logits.detach()
    fake_term = _bce_to_ones(fake_logits - real_logits.mean())
    if not symmetric:
        return fake_term
    return 0.5 * (_bce_to_zeros(real_logits - fake_logits.mean()) + fake_term)


def logistic_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """StyleGAN2's D loss: softplus(-D(real)).mean() + softplus(D(fake)).mean()."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def logistic_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """StyleGAN2's non-saturating G loss: softplus(-D(fake)).mean()."""
    return F.softplus(-fake_logits).mean()


def wgan_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Plain WGAN critic loss: mean(D(fake)) - mean(D(real))."""
    return fake_logits.mean() - real_logits.mean()


def wgan_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Plain WGAN generator loss: -mean(D(fake))."""
    return -fake_logits.mean()


def r1_penalty(real_logits: torch.Tensor, real_images: torch.Tensor) -> torch.Tensor:
    """R1: squared L2 norm of d(sum D(real)) / d(real) per sample, averaged over the batch (unweighted).

    `real_images` must have requires_grad=True before D is run on them. The graph is kept (create_graph) so the
    penalty can be back-propagated into D's parameters.
    """
    if not real_images.requires_grad:
        raise ValueError("r1_penalty: real_images must require grad before the discriminator forward pass")
    (gradients,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)
    return gradients.pow(2).reshape(gradients.shape[0], -1).sum(dim=1).mean()


def discriminator_r1(discriminator: Callable[[torch.Tensor], torch.Tensor],
                     real_images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`(penalty, real_logits)`: R1 (`r1_penalty`) of `discriminator` at `real_images`, always in fp32.

    Autocast is switched off for this pass: the input gradient comes from `torch.autograd.grad`, which a 16-mixed
    GradScaler does not scale, so in fp16 its small values would flush to zero. R1 is lazy (one pass every
    `r1_every` D steps), so fp32 costs little. `real_logits` lets a caller keep every D parameter in the graph.
    """
    real = real_images.detach().float().requires_grad_(True)
    with torch.autocast(device_type=real.device.type, enabled=False):
        real_logits = discriminator(real)
        return r1_penalty(real_logits, real), real_logits


def lazy_r1_weight(gamma: float = 10.0, every: int = 16) -> float:
    """The weight of a lazy R1 penalty applied once every `every` steps: gamma / 2 * every (official: 80)."""
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    return gamma / 2.0 * every


def _check_kind(kind: str) -> None:
    if kind not in ADVERSARIAL_KINDS:
        raise ValueError(f"adversarial kind must be one of {ADVERSARIAL_KINDS}, got {kind!r}")


def generator_adversarial_loss(
    kind: AdversarialKind,
    real_logits: torch.Tensor | None,
    fake_logits: torch.Tensor,
    *,
    symmetric: bool = False,
) -> torch.Tensor:
    """The generator's adversarial loss of `kind`. Only "ragan" reads `real_logits` (and `symmetric`)."""
    _check_kind(kind)
    if kind == "ragan":
        if real_logits is None:
            raise ValueError("the RaGAN generator loss needs the real logits")
        return ragan_generator_loss(real_logits, fake_logits, symmetric=symmetric)
    if kind == "logistic":
        return logistic_generator_loss(fake_logits)
    return wgan_generator_loss(fake_logits)


def discriminator_adversarial_loss(
    kind: AdversarialKind,
    real_logits: torch.Tensor,
    fake_logits: torch.Tensor,
) -> torch.Tensor:
    """The discriminator's adversarial loss of `kind` (without R1; see `r1_penalty`)."""
    _check_kind(kind)
    if kind == "ragan":
        return ragan_discriminator_loss(real_logits, fake_logits)
    if kind == "logistic":
        return logistic_discriminator_loss(real_logits, fake_logits)
    return wgan_discriminator_loss(real_logits, fake_logits)
