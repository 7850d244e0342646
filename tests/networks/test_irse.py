"""IR-SE50 structure (key layout and size of pSp's `model_ir_se50.pth`) and forward contract."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from grain_pl.networks.irse import IRSE50

# docs/method.md §5.4 / §1.9.
PSP_IRSE50_ENTRIES = 397
PSP_IRSE50_PARAMETERS = 43_797_696
# Units whose width changes and therefore carry a 1x1 conv + BN shortcut.
PROJECTION_SHORTCUT_UNITS = {3, 7, 21}


def _meta_network(**kwargs: object) -> IRSE50:
    # Shapes and names only: no memory, no initialisation cost.
    with torch.device("meta"):
        return IRSE50(**kwargs)


def _bn_keys(prefix: str, *, affine: bool = True) -> set[str]:
    stats = {f"{prefix}.running_mean", f"{prefix}.running_var", f"{prefix}.num_batches_tracked"}
    return stats | ({f"{prefix}.weight", f"{prefix}.bias"} if affine else set())


def _expected_psp_keys() -> set[str]:
    """The key set of `model_ir_se50.pth`, written out from the table in docs/method.md §5.4."""
    keys = {"input_layer.0.weight", "input_layer.2.weight"} | _bn_keys("input_layer.1")
    for unit in range(24):
        res = f"body.{unit}.res_layer"
        keys |= _bn_keys(f"{res}.0") | _bn_keys(f"{res}.4")
        keys |= {f"{res}.1.weight", f"{res}.2.weight", f"{res}.3.weight", f"{res}.5.fc1.weight", f"{res}.5.fc2.weight"}
        if unit in PROJECTION_SHORTCUT_UNITS:
            keys |= {f"body.{unit}.shortcut_layer.0.weight"} | _bn_keys(f"body.{unit}.shortcut_layer.1")
    keys |= _bn_keys("output_layer.0") | _bn_keys("output_layer.4")
    keys |= {"output_layer.3.weight", "output_layer.3.bias"}
    return keys


def test_state_dict_has_exactly_the_psp_key_layout() -> None:
    state = _meta_network().state_dict()
    assert len(state) == PSP_IRSE50_ENTRIES
    assert set(state) == _expected_psp_keys()
    assert len(_expected_psp_keys()) == PSP_IRSE50_ENTRIES  # the written-out table agrees with the doc


def test_parameter_count_matches_method_md() -> None:
    network = _meta_network()
    assert sum(p.numel() for p in network.parameters()) == PSP_IRSE50_PARAMETERS


def test_key_shapes_of_characteristic_layers() -> None:
    state = _meta_network().state_dict()
    assert state["input_layer.0.weight"].shape == (64, 3, 3, 3)
    assert state["input_layer.2.weight"].shape == (64,)
    # Unit 0: 64 -> 64 at stride 2 (max-pool shortcut), SE squeezes 64 -> 4.
    assert state["body.0.res_layer.5.fc1.weight"].shape == (4, 64, 1, 1)
    assert state["body.0.res_layer.5.fc2.weight"].shape == (64, 4, 1, 1)
    assert state["body.3.shortcut_layer.0.weight"].shape == (128, 64, 1, 1)
    assert state["body.21.shortcut_layer.0.weight"].shape == (512, 256, 1, 1)
    assert state["body.23.res_layer.3.weight"].shape == (512, 512, 3, 3)
    assert state["output_layer.3.weight"].shape == (512, 512 * 7 * 7)
    assert state["output_layer.4.weight"].shape == (512,)


def test_strides_shrink_112_to_7() -> None:
    network = _meta_network()
    shortcut_kinds = [type(unit.shortcut_layer) for unit in network.body]
    assert [i for i, kind in enumerate(shortcut_kinds) if kind is nn.Sequential] == sorted(PROJECTION_SHORTCUT_UNITS)
    strides = [unit.res_layer[3].stride[0] for unit in network.body]
    assert [i for i, stride in enumerate(strides) if stride == 2] == [0, 3, 7, 21]


def test_other_depths_and_modes() -> None:
    deep = _meta_network(num_layers=100)
    assert len(deep.body) == 3 + 13 + 30 + 3
    plain = _meta_network(mode="ir", affine=False)
    plain_keys = set(plain.state_dict())
    assert not any(".fc1." in key or ".fc2." in key for key in plain_keys)
    assert "output_layer.4.weight" not in plain_keys and "output_layer.4.running_mean" in plain_keys
    assert _meta_network(input_size=224).state_dict()["output_layer.3.weight"].shape == (512, 512 * 14 * 14)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [({"num_layers": 34}, "num_layers"), ({"mode": "se"}, "mode"), ({"input_size": 128}, "input_size")],
)
def test_invalid_construction_arguments(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        _meta_network(**kwargs)


@pytest.fixture(scope="module")
def network() -> IRSE50:
    torch.manual_seed(0)
    return IRSE50().eval()


def test_forward_returns_unit_norm_embeddings(network: IRSE50) -> None:
    faces = torch.rand(2, 3, 112, 112) * 2 - 1
    with torch.no_grad():
        embedding = network(faces)
    assert embedding.shape == (2, 512)
    assert torch.isfinite(embedding).all()
    torch.testing.assert_close(embedding.norm(dim=1), torch.ones(2))
    # Different faces give different embeddings (the batch is not mixed up or collapsed).
    assert not torch.allclose(embedding[0], embedding[1])


@pytest.mark.parametrize("shape", [(1, 3, 256, 256), (1, 1, 112, 112), (3, 112, 112)])
def test_wrong_input_shape_names_expected_and_given(network: IRSE50, shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError) as excinfo:
        network(torch.zeros(shape))
    message = str(excinfo.value)
    assert "(B, 3, 112, 112)" in message
    assert str(tuple(shape)) in message
