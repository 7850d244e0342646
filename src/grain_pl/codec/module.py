"""The GRAIN codec: images -> tiny 8-bit LR PNGs -> images, from Python or from `grain encode` / `grain decode`.

    from grain_pl.codec import GrainModule
    module = GrainModule.from_checkpoint("grain-paper-1024-lr16.safetensors")   # or a stage .ckpt
    lr_image = module.encode_image("face.png")        # PIL 16x16 RGB: exactly the pixels the decoder consumes
    hr_image = module.decode_image(lr_image)          # PIL 1024x1024 RGB
    module.encode_file("face.png", "face.lr.png")     # smallest lossless PNG + metadata, written atomically
    module.decode_file("face.lr.png", "face.hr.png")

Guarantees:
- The LR PNG holds exactly the tensor `encode` returns (`grain_pl.io.images.to_uint8` / `from_uint8`, the one
  mapping between [-1, 1] and 8-bit pixels), so decoding the file equals decoding the tensor.
- Decoding is deterministic: eval mode uses the generator's fixed noise buffers (`prior_noise="auto"`), so the
  same LR file and checkpoint give the same bytes on every run (same device, batch size and thread count:
  floating-point reductions may differ across those, and a pixel could then round to the next level).
- Input images are decoded like the training data (`grain_pl.data.datasets.load_rgb_image`): grayscale ->
  RGB, 16-bit -> 8-bit (value / 257), alpha composited on white, palette -> RGB, EXIF orientation applied.
- Every problem with a file is a `CodecError` (a ValueError) whose one-line message starts with the file name;
  folder runs report it and go on with the next file.
- An existing output file is never replaced unless `overwrite=True` (`--overwrite`); writes are atomic.
"""

from __future__ import annotations

import json
import os
import uuid
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Literal

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image, ImageOps
from PIL.PngImagePlugin import PngInfo
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from grain_pl.data.datasets import IMAGE_EXTENSIONS, BadImageFileError, list_image_files, load_rgb_image
from grain_pl.io.images import from_uint8, to_uint8
from grain_pl.networks import GRAIN, GrainConfig, get_preset
from grain_pl.weights.grain_checkpoint import load_grain, load_prior_into, read_grain_config
from grain_pl.weights.io import CheckpointError, check_state_dict, read_checkpoint

__all__ = [
    "RESIZE_POLICIES",
    "CodecError",
    "CodecReport",
    "GrainModule",
    "LRImageDataset",
    "fit_image",
    "lr_png_bytes",
    "open_rgb_image",
    "read_png_text",
    "write_atomically",
]

ResizePolicy = Literal["error", "resize", "center_crop"]
RESIZE_POLICIES: tuple[str, ...] = ("error", "resize", "center_crop")
ImageSource = Image.Image | str | os.PathLike

# Stages that leave parts of GRAIN untrained (a Stage1 checkpoint decodes with random latent codes and fusion).
_UNTRAINED_PARTS = {"Stage1": "latent codes and fusion", "Stage2": "fusion"}
# zlib level for decoded HR PNGs: these are big (1024x1024) and not what the codec stores, so the default level
# (fast, deterministic) rather than the slow maximum used for LR PNGs.
_HR_COMPRESS_LEVEL = 6


class CodecError(ValueError):
    """A problem with one file: the message is one line and starts with the file's path."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = " ".join(str(reason).split())  # one line, whatever the underlying library said
        super().__init__(f"{self.path}: {self.reason}")


@dataclass
class CodecReport:
    """What a multi-file run did: the files written and the files that failed (with their error)."""

    written: list[tuple[Path, Path]] = field(default_factory=list)
    failed: list[tuple[Path, CodecError]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


# Called once per input file: (source, destination or None, error or None).
ResultCallback = Callable[[Path, Path | None, CodecError | None], None]


# ----------------------------------------------------------------------------------------------------------------
# Images in, images out
# ----------------------------------------------------------------------------------------------------------------


def _name_of(source: ImageSource) -> str:
    return "<image>" if isinstance(source, Image.Image) else str(source)


def open_rgb_image(source: ImageSource) -> Image.Image:
    """A file or PIL image -> 8-bit RGB PIL image, converted exactly as the training data is (see module doc).

    Images over Pillow's decompression-bomb limit (`PIL.Image.MAX_IMAGE_PIXELS`) are refused, also between one
    and two times the limit where Pillow itself only warns. Raises CodecError naming the file.
    """
    if isinstance(source, Image.Image):
        from grain_pl.data.datasets import _to_rgb8  # the same mode rules as for files

        return _to_rgb8(ImageOps.exif_transpose(source))
    path = Path(source)
    if not path.exists():
        raise CodecError(path, "no such file")
    if path.is_dir():
        raise CodecError(path, "is a folder, not an image file")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between 1x and 2x its pixel limit; a codec fed untrusted files refuses both.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return load_rgb_image(path)
    except BadImageFileError as error:
        cause = error.__cause__
        if isinstance(cause, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
            raise CodecError(path, f"refusing to decode a possible decompression bomb: {cause} "
                                   "(limit: PIL.Image.MAX_IMAGE_PIXELS)") from error
        raise CodecError(path, f"cannot read the image (truncated, corrupt or not an image): {error.reason}"
                         ) from error


def fit_image(image: Image.Image, size: int, policy: str, name: str = "<image>") -> Image.Image:
    """Bring an RGB image to size x size. Images already that size are returned untouched under every policy.

    policy: "error" (a CodecError giving both sizes), "resize" (antialiased bilinear, stretches non-square
    images), "center_crop" (shorter side scaled to `size`, then the central square).
    """
    if policy not in RESIZE_POLICIES:
        raise ValueError(f"resize must be one of {RESIZE_POLICIES}, got {policy!r}")
    width, height = image.size
    if (width, height) == (size, size):
        return image
    if policy == "error":
        raise CodecError(name, f"expected {size}x{size}, got {width}x{height}; pass --resize resize (stretch) or "
                               "--resize center_crop (resize=... in Python) to adapt it")
    if policy == "resize":
        return TF.resize(image, [size, size], interpolation=InterpolationMode.BILINEAR, antialias=True)
    scaled = TF.resize(image, size, interpolation=InterpolationMode.BILINEAR, antialias=True)
    return TF.center_crop(scaled, [size, size])


def _image_to_tensor(image: Image.Image) -> torch.Tensor:
    """8-bit RGB PIL image -> (3, H, W) float32 in [-1, 1], through the project's one pixel mapping."""
    return from_uint8(TF.pil_to_tensor(image))


def _tensor_to_image(image: torch.Tensor) -> Image.Image:
    """(3, H, W) tensor in [-1, 1] -> 8-bit RGB PIL image, through the project's one pixel mapping."""
    pixels = to_uint8(image).cpu().permute(1, 2, 0).contiguous().numpy()
    return Image.fromarray(pixels)  # (H, W, 3) uint8 -> RGB


def _png_bytes(pixels: torch.Tensor | Image.Image, text: Mapping[str, str] | None, *, optimize: bool,
               compress_level: int) -> bytes:
    if isinstance(pixels, Image.Image):
        image = pixels
    else:
        if pixels.dtype != torch.uint8 or pixels.dim() != 3 or pixels.shape[0] != 3:
            raise ValueError(f"expected a (3, H, W) uint8 tensor, got {tuple(pixels.shape)} {pixels.dtype}")
        image = Image.fromarray(np.ascontiguousarray(pixels.cpu().permute(1, 2, 0).numpy()))
    if image.mode != "RGB":
        raise ValueError(f"expected an 8-bit RGB image, got mode {image.mode}")
    info = PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value, zip=len(value) > 64)  # long values (the config) as compressed zTXt
    buffer = BytesIO()
    image.save(buffer, format="PNG", optimize=optimize, compress_level=compress_level, pnginfo=info)
    return buffer.getvalue()


def lr_png_bytes(lr_uint8: torch.Tensor | Image.Image, metadata: Mapping[str, str] | None = None) -> bytes:
    """The smallest lossless 8-bit RGB PNG Pillow writes (optimize=True, compress_level=9) of a (3, H, W) uint8
    tensor (or RGB image), with `metadata` as PNG text chunks. No timestamp: the same pixels give the same bytes.
    """
    return _png_bytes(lr_uint8, metadata, optimize=True, compress_level=9)


def read_png_text(path: str | os.PathLike) -> dict[str, str]:
    """The text chunks (tEXt, zTXt, iTXt) of a PNG file; {} for other files."""
    with Image.open(path) as image:
        return dict(getattr(image, "text", {}) or {})


def write_atomically(data: bytes, destination: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write `data` to a hidden temporary file next to `destination`, then move it into place in one step, so
    nobody ever sees half a file. Without `overwrite`, an existing destination is left byte-identical and a
    CodecError is raised (checked atomically with a hard link where the file system has them).
    """
    destination = Path(destination)
    refusal = CodecError(destination, "already exists; pass --overwrite (overwrite=True) to replace it")
    if destination.exists() and not overwrite:
        raise refusal
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = destination.with_name(f".{destination.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(temporary, "xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(temporary, destination)
        else:
            try:
                os.link(temporary, destination)  # fails if another writer got there first: never clobbers
            except FileExistsError:
                raise refusal from None
            except OSError:  # a file system without hard links: check-then-rename is the best left
                if destination.exists():
                    raise refusal from None
                os.replace(temporary, destination)
    finally:
        temporary.unlink(missing_ok=True)
    return destination


# ----------------------------------------------------------------------------------------------------------------
# Which file goes where
# ----------------------------------------------------------------------------------------------------------------


def _default_destination(source: Path, kind: str) -> Path:
    """Next to the source: photo.jpg -> photo.lr.png (encode); photo.lr.png -> photo.hr.png (decode)."""
    if kind == "encode":
        return source.with_name(f"{source.stem}.lr.png")
    stem = source.stem[:-3] if source.stem.endswith(".lr") else source.stem
    return source.with_name(f"{stem}.hr.png")


def _is_folder_name(output: str | os.PathLike) -> bool:
    return Path(output).is_dir() or str(output).endswith(("/", os.sep))


def plan_jobs(inputs: Sequence[str | os.PathLike], output: str | os.PathLike | None, kind: str
              ) -> tuple[list[tuple[Path, Path]], list[tuple[Path, CodecError]]]:
    """(source, destination) pairs for inputs that are files or folders, and the inputs that cannot be used.

    - one input file and `output` not a folder (an existing one, or a name ending in "/"): output is the file;
    - otherwise `output` is a folder: a file input goes to output/<stem>.png, a folder input keeps its layout
      (output/<relative path>.png); folders are searched recursively (images for encode, .png for decode);
    - no `output`: each file next to its source (photo.lr.png, photo.hr.png); a folder input needs one.
    Raises CodecError for unusable arguments (not per file).
    """
    if kind not in ("encode", "decode"):
        raise ValueError(f"kind must be 'encode' or 'decode', got {kind!r}")
    if not inputs:
        raise ValueError("no input files or folders given")
    sources = [Path(item) for item in inputs]
    output_path = Path(output) if output is not None else None
    if output_path is not None and len(sources) == 1 and not sources[0].is_dir() and not _is_folder_name(output):
        if output_path.suffix.lower() != ".png":
            raise CodecError(output_path, "the output must be a .png file, or a folder (end the name with /)")
        if not sources[0].exists():
            return [], [(sources[0], CodecError(sources[0], "no such file or folder"))]
        return [(sources[0], output_path)], []

    extensions = IMAGE_EXTENSIONS if kind == "encode" else (".png",)
    jobs: list[tuple[Path, Path]] = []
    failed: list[tuple[Path, CodecError]] = []
    for source in sources:
        if source.is_dir():
            if output_path is None:
                raise CodecError(source, "a folder input needs -o/--output (the output folder)")
            try:
                files = list_image_files(source, extensions)
            except ValueError as error:  # no image in it
                failed.append((source, CodecError(source, str(error))))
                continue
            skip = output_path.resolve()
            for file in files:
                if skip == file.resolve() or skip in file.resolve().parents:  # earlier outputs are no inputs
                    continue
                jobs.append((file, output_path / file.relative_to(source).with_suffix(".png")))
        elif source.exists():
            destination = (output_path / f"{source.stem}.png" if output_path is not None
                           else _default_destination(source, kind))
            jobs.append((source, destination))
        else:
            failed.append((source, CodecError(source, "no such file or folder")))

    unique: list[tuple[Path, Path]] = []
    claimed: dict[Path, Path] = {}
    for source, destination in jobs:
        key = destination.resolve()
        if key in claimed:
            failed.append((source, CodecError(source, f"its output {destination} is also the output of "
                                                      f"{claimed[key]}; rename one of them")))
            continue
        claimed[key] = source
        unique.append((source, destination))
    return unique, failed


def _batches(items: Sequence, size: int) -> Iterable[Sequence]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


# ----------------------------------------------------------------------------------------------------------------
# The module
# ----------------------------------------------------------------------------------------------------------------


def _as_config(network: str | Mapping | GrainConfig) -> GrainConfig:
    if isinstance(network, GrainConfig):
        return network
    if isinstance(network, str):
        return get_preset(network)
    return GrainConfig(**dict(network))


def _safetensors_header(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})


class GrainModule(pl.LightningModule):
    """A GRAIN network as an encoder/decoder of images (no training: see `grain_pl.stages`).

    Args:
        network: a preset name ("paper-1024-lr16", ...) or a GrainConfig as a dict.
        prior_noise: StyleGAN2 noise; "auto" (default) uses the fixed noise buffers in eval mode, which is how
            this module always runs, so decoding is deterministic.

    Use `from_checkpoint` to get trained weights; a fresh module has random weights.
    """

    def __init__(self, network: str | dict = "paper-1024-lr16", prior_noise: str = "auto") -> None:
        super().__init__()
        config = _as_config(network)
        self.save_hyperparameters({"network": network if isinstance(network, str) else config.as_dict(),
                                   "prior_noise": prior_noise})
        self.grain = GRAIN(config, prior_noise=prior_noise)
        self.preset: str | None = network if isinstance(network, str) else None
        self.checkpoint_name: str | None = None  # file name of the checkpoint, recorded in the PNGs

    # ----- loading -----
    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, prior_path: str | os.PathLike | None = None,
                        map_location: str | torch.device = "cpu", prior_noise: str = "auto") -> GrainModule:
        """Load a grain_pl model file (.safetensors, `save_grain`: self-contained) or a stage checkpoint (.ckpt:
        the `grain.*` tensors; the StyleGAN2 prior comes from `prior_path`, else from the checkpoint's
        hyper_parameters["prior_path"]; a Lightning checkpoint of a GrainModule holds the generator itself).
        Returns the module in eval mode on `map_location`.

        Raises CheckpointError (a ValueError) naming the file: unreadable, not ours, mis-fitting tensors, or a
        stage checkpoint whose prior is unknown or missing.
        """
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: no such checkpoint file")
        if path.suffix == ".safetensors":
            if prior_path is not None:
                raise CheckpointError(f"{path}: a grain_pl model file carries its own prior; prior_path (--prior) "
                                      "is only for stage .ckpt files")
            config = read_grain_config(path)  # CheckpointError for a foreign file
            grain = load_grain(path, prior_noise=prior_noise)
            preset = _safetensors_header(path).get("preset")
        else:
            grain, preset = _grain_from_stage_checkpoint(path, prior_path, prior_noise)
            config = grain.config
        # Build the Lightning wrapper without allocating a second network, then put the loaded one in.
        with torch.device("meta"):
            module = cls(network=config.as_dict(), prior_noise=prior_noise)
        module.grain = grain
        module.preset = preset
        module.checkpoint_name = path.name
        return module.to(map_location).eval()

    # ----- facts -----
    @property
    def config(self) -> GrainConfig:
        return self.grain.config

    @property
    def hr_size(self) -> int:
        return self.config.hr_size

    @property
    def lr_size(self) -> int:
        return self.config.lr_size

    def png_metadata(self) -> dict[str, str]:
        """The text chunks written into every PNG: grain_pl version, preset, config (JSON), model file name."""
        from grain_pl import __version__

        text = {"grain_pl": __version__}
        if self.preset:
            text["preset"] = self.preset
        text["config"] = json.dumps(self.config.as_dict(), sort_keys=True, separators=(",", ":"))
        if self.checkpoint_name:
            text["model"] = self.checkpoint_name
        return text

    def describe(self) -> str:
        return f"{self.checkpoint_name or 'GRAIN'} ({self.preset or f'{self.hr_size} px, LR {self.lr_size} px'})"

    # ----- tensors -----
    @contextmanager
    def _evaluating(self):
        """Eval mode (rounded quantizer, fixed prior noise) and inference mode, restoring the mode afterwards."""
        was_training = self.grain.training
        self.grain.eval()
        try:
            with torch.inference_mode():
                yield
        finally:
            self.grain.train(was_training)

    def _model_device(self) -> torch.device:
        return next(self.grain.parameters()).device

    def encode(self, hr: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) or (3, H, W) HR in [-1, 1] -> the LR in [-1, 1], exactly 8-bit values (to_uint8 is
        lossless on it). Returned on the model's device."""
        single = hr.dim() == 3
        batch = hr.unsqueeze(0) if single else hr
        with self._evaluating():
            lr = self.grain.encode(batch.to(self._model_device(), torch.float32))
        return lr[0] if single else lr

    def decode(self, lr: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) or (3, h, w) LR in [-1, 1] -> the final HR image (`hr_out`), clamped to [-1, 1]."""
        single = lr.dim() == 3
        batch = lr.unsqueeze(0) if single else lr
        with self._evaluating():
            hr = self.grain.decode(batch.to(self._model_device(), torch.float32)).hr_out.clamp(-1, 1)
        return hr[0] if single else hr

    def predict_step(self, batch: torch.Tensor | Mapping | Sequence, batch_idx: int = 0,
                     dataloader_idx: int = 0) -> torch.Tensor | dict:
        """`trainer.predict` decodes: a tensor batch -> HR tensor; a dict batch ({"lr", "path"}, as
        `LRImageDataset` gives) -> {"hr": HR tensor, "path": paths}."""
        if isinstance(batch, Mapping):
            return {"hr": self.decode(batch["lr"]), "path": batch.get("path")}
        if isinstance(batch, (list, tuple)):
            batch = batch[0]
        return self.decode(batch)

    # ----- PIL images -----
    def load_hr(self, source: ImageSource, resize: str = "error") -> torch.Tensor:
        """An image (file or PIL) -> (3, hr_size, hr_size) tensor in [-1, 1], ready for `encode`."""
        return _image_to_tensor(fit_image(open_rgb_image(source), self.hr_size, resize, _name_of(source)))

    def load_lr(self, source: ImageSource) -> torch.Tensor:
        """An LR image (file or PIL) -> (3, lr_size, lr_size) tensor, exactly its 8-bit values."""
        image = open_rgb_image(source)
        if image.size != (self.lr_size, self.lr_size):
            raise CodecError(_name_of(source), f"expected a {self.lr_size}x{self.lr_size} LR image for "
                                               f"{self.describe()}, got {image.size[0]}x{image.size[1]}")
        return _image_to_tensor(image)

    def encode_image(self, image: ImageSource, resize: str = "error") -> Image.Image:
        """An image (PIL or file) -> the LR as an 8-bit RGB PIL image (save it losslessly: `lr_png_bytes`)."""
        return _tensor_to_image(self.encode(self.load_hr(image, resize)))

    def decode_image(self, lr_image: ImageSource) -> Image.Image:
        """An LR image (PIL or file) -> the decoded HR image (8-bit RGB PIL)."""
        return _tensor_to_image(self.decode(self.load_lr(lr_image)))

    # ----- files -----
    def encode_file(self, src: str | os.PathLike, dst: str | os.PathLike | None = None, overwrite: bool = False,
                    resize: str = "error") -> Path:
        """Encode one image file into an LR PNG (default: next to it, photo.jpg -> photo.lr.png)."""
        return self._one_file(Path(src), dst, "encode", overwrite=overwrite, resize=resize)

    def decode_file(self, src: str | os.PathLike, dst: str | os.PathLike | None = None,
                    overwrite: bool = False) -> Path:
        """Decode one LR PNG into an HR PNG (default: next to it, photo.lr.png -> photo.hr.png)."""
        return self._one_file(Path(src), dst, "decode", overwrite=overwrite)

    def _one_file(self, source: Path, destination: str | os.PathLike | None, kind: str, **options) -> Path:
        destination = Path(destination) if destination is not None else _default_destination(source, kind)
        report = self._run_jobs([(source, destination)], kind, **options)
        if report.failed:
            raise report.failed[0][1]
        return destination

    def encode_paths(self, inputs: Sequence[str | os.PathLike], output: str | os.PathLike | None = None, *,
                     overwrite: bool = False, resize: str = "error", batch_size: int = 1,
                     on_result: ResultCallback | None = None) -> CodecReport:
        """Encode files and folders (layout kept, see `plan_jobs`). A bad file is reported (in the returned
        report and through `on_result`) and the run goes on."""
        if resize not in RESIZE_POLICIES:
            raise ValueError(f"resize must be one of {RESIZE_POLICIES}, got {resize!r}")
        jobs, failed = plan_jobs(inputs, output, "encode")
        return self._run_jobs(jobs, "encode", overwrite=overwrite, resize=resize, batch_size=batch_size,
                              on_result=on_result, failed=failed)

    def decode_paths(self, inputs: Sequence[str | os.PathLike], output: str | os.PathLike | None = None, *,
                     overwrite: bool = False, batch_size: int = 1,
                     on_result: ResultCallback | None = None) -> CodecReport:
        """Decode LR PNG files and folders of them (layout kept); per-file errors as in `encode_paths`."""
        jobs, failed = plan_jobs(inputs, output, "decode")
        return self._run_jobs(jobs, "decode", overwrite=overwrite, batch_size=batch_size, on_result=on_result,
                              failed=failed)

    def encode_folder(self, src_dir: str | os.PathLike, dst_dir: str | os.PathLike, **options) -> CodecReport:
        return self.encode_paths([src_dir], dst_dir, **options)

    def decode_folder(self, src_dir: str | os.PathLike, dst_dir: str | os.PathLike, **options) -> CodecReport:
        return self.decode_paths([src_dir], dst_dir, **options)

    def _decode_input(self, source: Path) -> torch.Tensor:
        lr = self.load_lr(source)
        try:
            stored = read_png_text(source).get("config")
            stored_config = json.loads(stored) if stored is not None else None
        except Exception:  # noqa: BLE001 - load_lr read the pixels already; the metadata is only advisory
            stored_config = None
        if stored_config is not None and stored_config != json.loads(self.png_metadata()["config"]):  # tuples
            warnings.warn(f"{source}: encoded by a model with another configuration than {self.describe()}; "
                          "the decoded image will not be faithful", stacklevel=3)
        return lr

    def _run_jobs(self, jobs: Sequence[tuple[Path, Path]], kind: str, *, overwrite: bool = False,
                  resize: str = "error", batch_size: int = 1, on_result: ResultCallback | None = None,
                  failed: Sequence[tuple[Path, CodecError]] = ()) -> CodecReport:
        """Load, run and write `batch_size` files at a time; file problems are reported, not raised."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        report = CodecReport()

        def fail(source: Path, error: CodecError) -> None:
            report.failed.append((source, error))
            if on_result is not None:
                on_result(source, None, error)

        for source, error in failed:
            fail(source, error)
        if kind == "encode":
            def load(source: Path) -> torch.Tensor:
                return self.load_hr(source, resize)
            run, write_options = self.encode, dict(optimize=True, compress_level=9)
        else:
            load, run = self._decode_input, self.decode
            write_options = dict(optimize=False, compress_level=_HR_COMPRESS_LEVEL)
        text = self.png_metadata()

        for batch in _batches(list(jobs), batch_size):
            loaded: list[tuple[Path, Path, torch.Tensor]] = []
            for source, destination in batch:
                if destination.exists() and not overwrite:  # refuse before spending time on the network
                    fail(source, CodecError(destination, "already exists; pass --overwrite (overwrite=True) "
                                                         "to replace it"))
                    continue
                try:
                    loaded.append((source, destination, load(source)))
                except CodecError as error:
                    fail(source, error)
            if not loaded:
                continue
            outputs = run(torch.stack([tensor for _, _, tensor in loaded]))
            for (source, destination, _), image in zip(loaded, outputs):
                try:
                    data = _png_bytes(to_uint8(image), text, **write_options)
                    write_atomically(data, destination, overwrite=overwrite)
                except CodecError as error:
                    fail(source, error)
                    continue
                except OSError as error:
                    fail(source, CodecError(destination, f"cannot write it: {error.strerror or error}"))
                    continue
                report.written.append((source, destination))
                if on_result is not None:
                    on_result(source, destination, None)
        return report


def _grain_from_stage_checkpoint(path: Path, prior_path: str | os.PathLike | None, prior_noise: str
                                 ) -> tuple[GRAIN, str | None]:
    """A GRAIN from a stage .ckpt: its `grain.*` tensors (strictly) plus the StyleGAN2 prior file."""
    checkpoint = read_checkpoint(path)  # weights_only=True; CheckpointError naming the file for bad bytes
    if not isinstance(checkpoint, Mapping) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path}: neither a grain_pl model file (.safetensors) nor a Lightning checkpoint "
                              "of a grain_pl stage (no 'state_dict')")
    hparams = checkpoint.get("hyper_parameters") or {}
    state = {key[len("grain."):]: value for key, value in checkpoint["state_dict"].items()
             if key.startswith("grain.")}
    if not state:
        raise CheckpointError(f"{path}: holds no GRAIN weights (no 'grain.*' tensors; a prior-stage checkpoint?)")
    extra = checkpoint.get("grain_pl")
    if isinstance(extra, Mapping) and "config" in extra:  # the exact config the stage trained
        config = GrainConfig(**dict(extra["config"]))
    else:
        config = _as_config(hparams.get("network", "paper-1024-lr16")).replace(
            **dict(hparams.get("network_overrides") or {}))
    network = hparams.get("network")
    preset = network if isinstance(network, str) and not hparams.get("network_overrides") else None

    # Stage checkpoints leave the frozen generator out (it comes from the prior file); a checkpoint of a
    # GrainModule itself (Lightning's trainer.save_checkpoint) has it.
    has_generator = any(key.startswith("generator.") for key in state)
    prior = prior_path
    if prior is None and not has_generator:
        prior = hparams.get("prior_path")
    if prior is None and not has_generator:
        raise CheckpointError(f"{path}: the checkpoint names no StyleGAN2 prior (hyper_parameters.prior_path is "
                              "not set, as in a Stage1 checkpoint); pass prior_path= (--prior) with the "
                              "rosinality file the later stages use")
    if prior is not None and not Path(prior).is_file():
        origin = "given as prior_path" if prior_path is not None else "from hyper_parameters.prior_path"
        raise CheckpointError(f"{path}: its StyleGAN2 prior {prior} ({origin}) does not exist; pass "
                              "prior_path= (--prior) with the file's location")
    stage = hparams.get("stage")
    if stage in _UNTRAINED_PARTS:
        warnings.warn(f"{path}: a {stage} checkpoint: the {_UNTRAINED_PARTS[stage]} are not trained yet, and "
                      "decoded images show it", stacklevel=3)

    with torch.device("meta"):  # no random initialisation: every tensor is loaded below
        grain = GRAIN(config, prior_noise=prior_noise)
    grain.to_empty(device="cpu")
    expected = {key: value for key, value in grain.state_dict().items()
                if has_generator or not key.startswith("generator.")}
    check_state_dict(expected, state, source=path, what=f"GRAIN({preset or config})")
    grain.load_state_dict(state, strict=has_generator)
    if prior is not None:  # strict; also sets latent_avg, the mean W of the generator actually used
        load_prior_into(grain, prior)
    return grain.eval(), preset


class LRImageDataset(torch.utils.data.Dataset):
    """LR PNG files -> {"lr": (3, lr_size, lr_size) in [-1, 1], "path": str}, for `trainer.predict`:

        module = GrainModule.from_checkpoint("model.safetensors")
        loader = DataLoader(LRImageDataset(paths, module.lr_size), batch_size=8)
        batches = pl.Trainer(logger=False).predict(module, loader)   # [{"hr": ..., "path": [...]}, ...]

    A bad file raises CodecError (naming it); the file helpers of GrainModule report and skip instead.
    """

    def __init__(self, paths: Sequence[str | os.PathLike], lr_size: int) -> None:
        self.paths = [str(path) for path in paths]
        self.lr_size = lr_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        path = self.paths[index]
        image = open_rgb_image(path)
        if image.size != (self.lr_size, self.lr_size):
            raise CodecError(path, f"expected a {self.lr_size}x{self.lr_size} LR image, got "
                                   f"{image.size[0]}x{image.size[1]}")
        return {"lr": _image_to_tensor(image), "path": path}
