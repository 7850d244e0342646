"""LossWeights and weighted_sum."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from grain_pl.losses import LossWeights, weighted_sum


def test_defaults_are_the_official_lambdas() -> None:
    assert dataclasses.asdict(LossWeights()) == {
        "pixel": 1.0, "lpips": 0.8, "identity": 0.1, "adversarial": 0.01, "lr": 0.0,
    }
    assert LossWeights().active() == ("pixel", "lpips", "identity", "adversarial")


def test_weighted_sum_value_gradient_and_log() -> None:
    pixel = torch.tensor(2.0, requires_grad=True)
    lpips = torch.tensor(0.5, requires_grad=True)
    terms = {"pixel": pixel, "lpips": lpips, "identity": torch.tensor(0.3), "adversarial": torch.tensor(0.7),
             "lr": torch.tensor(1.5)}
    total, log = weighted_sum(terms, LossWeights(lr=0.1))
    expected = 1.0 * 2.0 + 0.8 * 0.5 + 0.1 * 0.3 + 0.01 * 0.7 + 0.1 * 1.5
    torch.testing.assert_close(total.item(), expected)
    total.backward()
    torch.testing.assert_close(pixel.grad, torch.tensor(1.0))
    torch.testing.assert_close(lpips.grad, torch.tensor(0.8))
    assert set(log) == {*terms, "total"}
    assert all(not value.requires_grad for value in log.values())
    torch.testing.assert_close(log["lpips"], torch.tensor(0.5))  # raw, not weighted
    torch.testing.assert_close(log["total"].item(), expected)


def test_zero_weight_terms_may_be_absent_and_cannot_poison_the_total() -> None:
    weights = LossWeights(lpips=0.0, identity=0.0, adversarial=0.0)
    total, log = weighted_sum({"pixel": torch.tensor(3.0)}, weights)
    assert total.item() == 3.0 and set(log) == {"pixel", "total"}
    total, log = weighted_sum({"pixel": torch.tensor(3.0), "lr": torch.tensor(float("nan"))}, weights)
    assert total.item() == 3.0
    assert math.isnan(log["lr"].item())


def test_wiring_mistakes_raise() -> None:
    with pytest.raises(ValueError, match="no weight"):
        weighted_sum({"pixel": torch.tensor(1.0), "style": torch.tensor(1.0)}, LossWeights(lpips=0, identity=0,
                                                                                          adversarial=0))
    with pytest.raises(ValueError, match="non-zero weights"):
        weighted_sum({"pixel": torch.tensor(1.0)}, LossWeights())
    with pytest.raises(ValueError, match="at least one"):
        weighted_sum({}, LossWeights(pixel=0, lpips=0, identity=0, adversarial=0))


def test_weights_must_be_finite_non_negative_numbers() -> None:
    with pytest.raises(ValueError, match="identity"):
        LossWeights(identity=-0.1)
    with pytest.raises(ValueError, match="pixel"):
        LossWeights(pixel=float("inf"))
    with pytest.raises(TypeError, match="lpips"):
        LossWeights(lpips="0.8")  # type: ignore[arg-type]
    assert isinstance(LossWeights(pixel=1).pixel, float)


def test_loss_weights_load_from_yaml_through_jsonargparse() -> None:
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_argument("--loss_weights", type=LossWeights, default=LossWeights())
    config = parser.parse_string("loss_weights:\n  lr: 0.1\n  pixel: 1\n  adversarial: 0.0\n")
    # `instantiate` replaced `instantiate_classes` in jsonargparse 4.49 (the old name still works but warns).
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    weights = instantiate(config).loss_weights
    assert weights == LossWeights(pixel=1.0, lpips=0.8, identity=0.1, adversarial=0.0, lr=0.1)
