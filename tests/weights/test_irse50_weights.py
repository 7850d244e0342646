"""Loading pSp's `model_ir_se50.pth` layout: wrappers, old saves without BN counters, and errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from grain_pl.networks.irse import IRSE50
from grain_pl.weights.io import CheckpointError
from grain_pl.weights.irse50 import convert_irse50, load_irse50

_COUNTER = "num_batches_tracked"


@pytest.fixture(scope="module")
def source_network() -> IRSE50:
    """A stand-in for the pretrained net: random weights *and* non-trivial BN statistics."""
    torch.manual_seed(1)
    network = IRSE50().eval()
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.num_batches_tracked.fill_(7)
    return network


@pytest.fixture(scope="module")
def source_state(source_network: IRSE50) -> dict[str, torch.Tensor]:
    return {key: value.clone() for key, value in source_network.state_dict().items()}


@pytest.fixture(scope="module")
def layout_only_state(source_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Right keys and shapes but a one-element storage per tensor: the error tests only need the
    layout, and this keeps each written file a few kB instead of 175 MB."""
    return {key: torch.zeros((), dtype=value.dtype).expand(value.shape) for key, value in source_state.items()}


def _save(state: object, path: Path) -> Path:
    torch.save(state, path)
    return path


def _assert_same_state(network: IRSE50, expected: dict[str, torch.Tensor]) -> None:
    loaded = network.state_dict()
    assert set(loaded) == set(expected)
    for key, value in expected.items():
        assert torch.equal(loaded[key], value), key


def test_flat_psp_file_reproduces_the_source_embedding(
    source_network: IRSE50, source_state: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    network = load_irse50(_save(source_state, tmp_path / "model_ir_se50.pth"))
    assert not network.training
    assert not any(parameter.requires_grad for parameter in network.parameters())
    _assert_same_state(network, source_state)
    faces = torch.rand(1, 3, 112, 112, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(network(faces), source_network(faces), rtol=0, atol=0)


def test_module_prefix_and_state_dict_wrapper(source_state: dict[str, torch.Tensor], tmp_path: Path) -> None:
    prefixed = {f"module.{key}": value for key, value in source_state.items()}
    _assert_same_state(load_irse50(_save(prefixed, tmp_path / "prefixed.pth")), source_state)
    _assert_same_state(load_irse50(_save({"state_dict": prefixed}, tmp_path / "wrapped.pth")), source_state)


def test_old_save_without_batch_counters(source_state: dict[str, torch.Tensor], tmp_path: Path) -> None:
    old_style = {key: value for key, value in source_state.items() if not key.endswith(_COUNTER)}
    assert len(source_state) - len(old_style) == 54  # one per BatchNorm
    # Also in the pre-1.6 (non-zip) serialisation, as a file from the TreB1eN era would be.
    path = tmp_path / "old.pth"
    torch.save(old_style, path, _use_new_zipfile_serialization=False)
    network = load_irse50(path)
    expected = {key: (torch.tensor(0) if key.endswith(_COUNTER) else value) for key, value in source_state.items()}
    _assert_same_state(network, expected)


def test_convert_is_pure_and_fills_only_counters(source_state: dict[str, torch.Tensor]) -> None:
    old_style = {f"module.{key}": value for key, value in source_state.items() if not key.endswith(_COUNTER)}
    before = dict(old_style)
    converted = convert_irse50(old_style)
    assert old_style == before  # input untouched
    assert set(converted) == set(source_state)
    counter = converted["body.0.res_layer.0.num_batches_tracked"]
    assert counter.dtype == torch.long and counter.item() == 0
    assert torch.equal(converted["output_layer.3.weight"], source_state["output_layer.3.weight"])


def _load_error(state: object, path: Path) -> str:
    with pytest.raises(CheckpointError) as excinfo:
        load_irse50(_save(state, path))
    message = str(excinfo.value)
    assert str(path) in message
    return message


def test_wrong_shape_names_file_and_key(layout_only_state: dict[str, torch.Tensor], tmp_path: Path) -> None:
    state = dict(layout_only_state)
    state["output_layer.3.weight"] = torch.zeros(()).expand(512, 100)
    message = _load_error(state, tmp_path / "wrong_shape.pth")
    assert "output_layer.3.weight" in message and "(512, 25088)" in message and "(512, 100)" in message


def test_missing_key_names_file_and_key(layout_only_state: dict[str, torch.Tensor], tmp_path: Path) -> None:
    state = dict(layout_only_state)
    del state["body.5.res_layer.5.fc2.weight"]
    message = _load_error(state, tmp_path / "missing.pth")
    assert "missing" in message and "body.5.res_layer.5.fc2.weight" in message


def test_unexpected_key_names_file_and_key(layout_only_state: dict[str, torch.Tensor], tmp_path: Path) -> None:
    # A shortcut conv on a unit whose original shortcut is a parameter-free max-pool.
    state = {**layout_only_state, "body.4.shortcut_layer.0.weight": torch.zeros(128, 128, 1, 1)}
    message = _load_error(state, tmp_path / "unexpected.pth")
    assert "unexpected" in message and "body.4.shortcut_layer.0.weight" in message


def test_truncated_file_names_file(source_state: dict[str, torch.Tensor], tmp_path: Path) -> None:
    small = {key: value for key, value in source_state.items() if key.startswith("input_layer.")}
    path = _save(small, tmp_path / "truncated.pth")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError) as excinfo:
        load_irse50(path)
    assert str(path) in str(excinfo.value)


def test_non_dict_file_and_missing_file(tmp_path: Path) -> None:
    _load_error([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="no such"):
        load_irse50(tmp_path / "absent.pth")
