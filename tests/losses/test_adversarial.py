"""GAN losses and R1, checked against values computed by hand in plain Python floats."""

from __future__ import annotations

import math

import pytest
import torch

from grain_pl.losses import (
    discriminator_adversarial_loss,
    discriminator_r1,
    generator_adversarial_loss,
    lazy_r1_weight,
    logistic_discriminator_loss,
    logistic_generator_loss,
    r1_penalty,
    ragan_discriminator_loss,
    ragan_generator_loss,
    wgan_discriminator_loss,
    wgan_generator_loss,
)


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def logits(batch_size: int, start: float, stop: float) -> torch.Tensor:
    """(B, 1, 2, 2) patch logits with distinct values, in float64 for tight comparisons."""
    return torch.linspace(start, stop, batch_size * 4, dtype=torch.float64).reshape(batch_size, 1, 2, 2)


# BCE-with-logits(x, target 1) = softplus(-x); with target 0 it is softplus(x).
def hand_ragan(real: list[float], fake: list[float]) -> tuple[float, float, float]:
    real_mean, fake_mean = mean(real), mean(fake)
    real_vs_fake = [r - fake_mean for r in real]
    fake_vs_real = [f - real_mean for f in fake]
    discriminator = 0.5 * (mean([softplus(-x) for x in real_vs_fake]) + mean([softplus(x) for x in fake_vs_real]))
    generator_official = mean([softplus(-x) for x in fake_vs_real])
    generator_symmetric = 0.5 * (mean([softplus(x) for x in real_vs_fake]) + generator_official)
    return discriminator, generator_official, generator_symmetric


@pytest.mark.parametrize("batch_size", [1, 2, 5])
def test_ragan_matches_hand_values_for_any_batch_size(batch_size: int) -> None:
    real, fake = logits(batch_size, -1.0, 2.0), logits(batch_size, 0.5, -1.5)
    hand_values = hand_ragan(real.flatten().tolist(), fake.flatten().tolist())
    discriminator, generator_official, generator_symmetric = hand_values
    torch.testing.assert_close(ragan_discriminator_loss(real, fake).item(), discriminator, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ragan_generator_loss(real, fake).item(), generator_official, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ragan_generator_loss(real, fake, symmetric=True).item(), generator_symmetric,
                               rtol=1e-12, atol=1e-12)


def test_ragan_at_equal_logits_is_log_2() -> None:
    zeros = torch.zeros(3, 1, 16, 16)
    for value in (ragan_discriminator_loss(zeros, zeros), ragan_generator_loss(zeros, zeros),
                  ragan_generator_loss(zeros, zeros, symmetric=True)):
        torch.testing.assert_close(value, torch.tensor(math.log(2.0)))


def test_ragan_means_run_over_batch_and_patches() -> None:
    # One sample's mean alone would differ from the whole-tensor mean here.
    real = torch.tensor([[[[3.0, 0.0]]], [[[0.0, -1.0]]]])
    fake = torch.tensor([[[[1.0, 1.0]]], [[[-2.0, 0.0]]]])
    expected = 0.5 * (mean([softplus(-(r - 0.0)) for r in (3.0, 0.0, 0.0, -1.0)])
                      + mean([softplus(f - 0.5) for f in (1.0, 1.0, -2.0, 0.0)]))
    torch.testing.assert_close(ragan_discriminator_loss(real, fake).item(), expected, rtol=1e-6, atol=1e-6)


def test_ragan_generator_loss_sends_no_gradient_to_the_real_logits() -> None:
    real = torch.randn(2, 1, 4, 4, requires_grad=True)
    fake = torch.randn(2, 1, 4, 4, requires_grad=True)
    ragan_generator_loss(real, fake, symmetric=True).backward()
    assert real.grad is None
    assert fake.grad is not None and fake.grad.abs().sum() > 0


def test_logistic_losses() -> None:
    real = torch.tensor([[1.0], [-2.0]], dtype=torch.float64)
    fake = torch.tensor([[0.5], [3.0]], dtype=torch.float64)
    expected_discriminator = mean([softplus(-1.0), softplus(2.0)]) + mean([softplus(0.5), softplus(3.0)])
    torch.testing.assert_close(logistic_discriminator_loss(real, fake).item(), expected_discriminator)
    torch.testing.assert_close(logistic_generator_loss(fake).item(), mean([softplus(-0.5), softplus(-3.0)]))


def test_wgan_losses() -> None:
    real = torch.tensor([[1.0], [-2.0], [4.0]])
    fake = torch.tensor([[0.5], [3.0], [1.0]])
    torch.testing.assert_close(wgan_discriminator_loss(real, fake).item(), 1.5 - 1.0)
    torch.testing.assert_close(wgan_generator_loss(fake).item(), -1.5)


def test_r1_of_a_linear_discriminator_is_the_squared_weight_norm() -> None:
    # D(x) = sum(w * x) per sample: dD/dx = w for every sample, so the penalty is ||w||^2.
    weight = torch.randn(3, 4, 4, dtype=torch.float64, requires_grad=True)
    real = torch.randn(5, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    real_logits = (weight * real).flatten(1).sum(dim=1)
    penalty = r1_penalty(real_logits, real)
    torch.testing.assert_close(penalty, weight.detach().pow(2).sum())
    penalty.backward()  # create_graph: the penalty reaches D's parameters, d||w||^2/dw = 2w
    torch.testing.assert_close(weight.grad, 2 * weight.detach())


def test_r1_is_a_per_sample_norm_averaged_over_the_batch() -> None:
    # D(x) = sum(x^2): dD/dx = 2x, so the penalty is mean_b 4 ||x_b||^2 (not a norm of the whole batch).
    real = torch.tensor([[1.0, 2.0], [0.0, 3.0]], requires_grad=True)
    penalty = r1_penalty(real.pow(2).sum(dim=1), real)
    torch.testing.assert_close(penalty.item(), mean([4 * 5.0, 4 * 9.0]))


def test_r1_needs_images_that_require_grad() -> None:
    with pytest.raises(ValueError, match="require grad"):
        r1_penalty(torch.zeros(2, requires_grad=True), torch.zeros(2, 3))


def test_lazy_r1_weight() -> None:
    assert lazy_r1_weight() == 80.0
    assert lazy_r1_weight(gamma=1.0, every=4) == 2.0


def test_dispatch_picks_the_matching_loss() -> None:
    real, fake = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    assert torch.equal(generator_adversarial_loss("ragan", real, fake), ragan_generator_loss(real, fake))
    assert torch.equal(generator_adversarial_loss("ragan", real, fake, symmetric=True),
                       ragan_generator_loss(real, fake, symmetric=True))
    assert torch.equal(generator_adversarial_loss("logistic", None, fake), logistic_generator_loss(fake))
    assert torch.equal(generator_adversarial_loss("wgan", real, fake), wgan_generator_loss(fake))
    assert torch.equal(discriminator_adversarial_loss("ragan", real, fake), ragan_discriminator_loss(real, fake))
    assert torch.equal(discriminator_adversarial_loss("logistic", real, fake), logistic_discriminator_loss(real, fake))
    assert torch.equal(discriminator_adversarial_loss("wgan", real, fake), wgan_discriminator_loss(real, fake))


def test_dispatch_rejects_unknown_kinds_and_missing_real_logits() -> None:
    fake = torch.zeros(1, 1)
    with pytest.raises(ValueError, match="kind"):
        generator_adversarial_loss("hinge", fake, fake)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kind"):
        discriminator_adversarial_loss("hinge", fake, fake)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="real logits"):
        generator_adversarial_loss("ragan", None, fake)


def test_discriminator_r1_runs_in_fp32_under_fp16_autocast() -> None:
    # A discriminator whose input gradient (1e-8 per pixel) is below fp16's smallest subnormal (6e-8): under
    # fp16 autocast a plain R1 pass flushes it to zero; discriminator_r1 must still see it.
    discriminator = torch.nn.Conv2d(3, 1, 1, bias=False)
    torch.nn.init.constant_(discriminator.weight, 1e-8)
    real = torch.rand(2, 3, 4, 4)

    with torch.autocast("cpu", dtype=torch.float16):
        naive_real = real.clone().requires_grad_(True)
        naive = r1_penalty(discriminator(naive_real), naive_real)
        penalty, real_logits = discriminator_r1(discriminator, real)
    assert naive.item() == 0.0  # the failure this guards against
    assert real_logits.dtype == torch.float32
    # Every pixel's gradient is sum(weight) over the 3 channels' own 1e-8: ||grad||^2 = 48 * 1e-16 per sample.
    torch.testing.assert_close(penalty, torch.tensor(48 * 1e-16), rtol=1e-4, atol=0.0)
    penalty.backward()  # the penalty still reaches D's weights
    assert discriminator.weight.grad is not None and discriminator.weight.grad.abs().sum() > 0
