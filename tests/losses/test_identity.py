"""IdentityLoss: the official resize -> crop -> pool pipeline in front of a frozen IR-SE50."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import grain_pl.weights.irse50 as irse50_weights
from grain_pl.losses import IdentityLoss, crop_faces
from grain_pl.networks import irse
from grain_pl.networks.irse import IRSE50


@pytest.fixture(scope="module")
def random_irse50() -> IRSE50:
    """A random IR-SE50 shrunk to one residual unit per stage: the real layers (SE, BN, PReLU, Dropout, the
    112 -> 7 head) at a fraction of the 24-unit cost, which matters on a shared 2-core CPU."""
    torch.manual_seed(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(irse._UNITS_PER_STAGE, 50, (1, 1, 1, 1))
        network = IRSE50()
    assert len(network.body) == 4
    return network


@pytest.fixture
def identity_loss(random_irse50: IRSE50) -> IdentityLoss:
    return IdentityLoss.from_network(random_irse50)


class InputSpy(nn.Module):
    """Stands in for IR-SE50: records the faces it receives and embeds them by flattening."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        self.seen.append(faces.detach().clone())
        return faces.flatten(1)


def _spy_input(images: torch.Tensor) -> torch.Tensor:
    spy = InputSpy()
    IdentityLoss.from_network(spy)(images, images)
    assert len(spy.seen) == 2  # output and target
    return spy.seen[0]


def _inside_box(side: int, rows: tuple[int, int], cols: tuple[int, int]) -> torch.Tensor:
    image = -torch.ones(1, 3, side, side)
    image[:, :, rows[0]:rows[1], cols[0]:cols[1]] = 1.0
    return image


def test_the_crop_at_256_is_rows_35_to_223_and_cols_32_to_220() -> None:
    faces = _spy_input(_inside_box(256, (35, 223), (32, 220)))
    assert faces.shape == (1, 3, 112, 112)
    torch.testing.assert_close(faces, torch.ones_like(faces))  # nothing outside the box reaches the network
    # One row/column more on any side would mix a -1 into the pooled border.
    for rows, cols in (((36, 223), (32, 220)), ((35, 222), (32, 220)), ((35, 223), (33, 220)), ((35, 223), (32, 219))):
        assert _spy_input(_inside_box(256, rows, cols)).min() < 1.0


def test_the_crop_at_1024_is_the_256_crop_scaled_by_4() -> None:
    # Bilinear 1024 -> 256 reads pixels 4 i + 1 and 4 i + 2: rows 140:892 map exactly onto rows 35:223.
    faces = _spy_input(_inside_box(1024, (140, 892), (128, 880)))
    torch.testing.assert_close(faces, torch.ones_like(faces))
    assert _spy_input(_inside_box(1024, (143, 892), (128, 880))).min() < 1.0


def test_the_crop_keeps_positions_and_is_the_same_at_256_and_1024() -> None:
    # Random pixels: a crop shifted by even one pixel would pool different values.
    image = torch.rand(1, 3, 256, 256) * 2 - 1
    expected = nn.functional.adaptive_avg_pool2d(image[:, :, 35:223, 32:220], 112)
    torch.testing.assert_close(_spy_input(image), expected)
    # Each 256 pixel blown up to a constant 4x4 block: the bilinear 1024 -> 256 resize gives `image` back exactly.
    blown_up = image.repeat_interleave(4, dim=-2).repeat_interleave(4, dim=-1)
    torch.testing.assert_close(_spy_input(blown_up), expected)
    torch.testing.assert_close(crop_faces(blown_up), expected)


@pytest.mark.parametrize("side", [32, 64, 256, 1024])
def test_any_size_from_32_to_1024_gives_112_faces(side: int) -> None:
    assert crop_faces(torch.randn(2, 3, side, side)).shape == (2, 3, 112, 112)


def test_identical_images_give_zero_loss(identity_loss: IdentityLoss) -> None:
    images = torch.rand(2, 3, 256, 256) * 2 - 1
    loss = identity_loss(images, images.clone())
    assert loss.ndim == 0
    assert abs(loss.item()) < 1e-5


def test_different_images_give_a_loss_in_0_2(identity_loss: IdentityLoss) -> None:
    output, target = torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 64, 64) * 2 - 1
    loss = identity_loss(output, target)
    assert 0.0 < loss.item() <= 2.0
    similarity = identity_loss.similarity(output, target)
    assert similarity.shape == (2,)
    torch.testing.assert_close(loss, (1 - similarity).mean())
    paired_loss, mean_similarity = identity_loss.loss_and_similarity(output, target)
    torch.testing.assert_close(paired_loss, loss)
    torch.testing.assert_close(mean_similarity, similarity.mean())
    assert not mean_similarity.requires_grad


def test_gradient_reaches_the_output_but_not_the_target_or_the_network(identity_loss: IdentityLoss) -> None:
    output = (torch.rand(2, 3, 128, 128) * 2 - 1).requires_grad_(True)
    target = (torch.rand(2, 3, 128, 128) * 2 - 1).requires_grad_(True)
    identity_loss(output, target).backward()
    assert target.grad is None
    assert output.grad is not None and output.grad.abs().sum() > 0
    assert all(parameter.grad is None for parameter in identity_loss.parameters())


def test_the_network_is_frozen_and_stays_in_eval(identity_loss: IdentityLoss) -> None:
    assert not any(parameter.requires_grad for parameter in identity_loss.parameters())
    parent = nn.Sequential(identity_loss)
    parent.train()
    assert not identity_loss.training
    assert not any(module.training for module in identity_loss.modules())


def test_without_weights_the_error_says_how_to_get_them() -> None:
    with pytest.raises(ValueError) as error:
        IdentityLoss(None)
    message = str(error.value)
    for needed in ("model_ir_se50.pth", "pSp", "1KW7bjndL3QG3sxBbZxreGHigcCCpsDgn", "identity_weights:"):
        assert needed in message


def test_a_weights_path_goes_through_load_irse50(monkeypatch: pytest.MonkeyPatch, random_irse50: IRSE50) -> None:
    requested: list[str] = []

    def fake_load(path: str) -> IRSE50:
        requested.append(str(path))
        return random_irse50

    monkeypatch.setattr(irse50_weights, "load_irse50", fake_load)
    loss = IdentityLoss("somewhere/model_ir_se50.pth")
    assert requested == ["somewhere/model_ir_se50.pth"]
    assert loss.network is random_irse50 and not loss.training
