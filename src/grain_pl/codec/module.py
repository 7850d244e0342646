"""The GRAIN codec: images -> tiny 8-bit LR PNGs -> images, from Python or from `grain encode` / `grain decode`.

    from grain_pl.codec import GrainModule
    module = GrainModule.from_checkpoint("grain-paper-1024-lr16.safetensors")   # or a stage .ckpt
    lr_image = module.encode_image("face.png")        # PIL 16x16 RGB: exactly the pixels the decoder consumes
    hr_image = module.decode_image(lr_image)          # PIL 1024x1024 RGB
    module.encode_file("face.png", "face.lr.png")     # smallest lossless PNG + metadata, written atomically
    module.decode_file("face.lr.png", "face.hr.png")
    hr_image = module.upscale_image("thumb.jpg")      # any 16x16 thumbnail (a model with encoder="bicubic")

Guarantees:
- The LR PNG holds exactly the tensor `encode` returns (`grain_pl.io.images.to_uint8` / `from_uint8`, the one
  mapping between [-1, 1] and 8-bit pixels), so decoding the file equals decoding the tensor.
- Decoding is deterministic: eval mode uses the generator's fixed noise buffers (`prior_noise="auto"`), so the
  same LR file and checkpoint give the same bytes on every run (same device, batch size and thread count:
  floating-point reductions may differ across those, and a pixel could then round to the next level).
- Input images are decoded like the training data (`grain_pl.io.images.load_rgb_image`): grayscale ->
  RGB, 16-bit -> 8-bit (value / 257), alpha composited on white, palette -> RGB, EXIF orientation applied.
- Every problem with a file is a `CodecError` (a ValueError) whose one-line message starts with the file name;
  folder runs report it and go on with the next file.
- An existing output file is never replaced unless `overwrite=True` (`--overwrite`); writes are atomic.

This module holds `GrainModule` and `LRImageDataset`; the file jobs are in `grain_pl.codec.jobs`, the PNG format
in `grain_pl.codec.png`.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytorch_lightning as pl
import torch
from PIL import Image

from grain_pl.codec.jobs import (
    EXISTING_OUTPUT,
    RESIZE_POLICIES,
    CodecError,
    CodecReport,
    ImageSource,
    ResultCallback,
    batches,
    default_destination,
    exists_error,
    fit_image,
    name_of,
    open_rgb_image,
    plan_jobs,
    write_atomically,
)
from grain_pl.codec.png import HR_COMPRESS_LEVEL, check_exact_lr, check_thumbnail, png_bytes, read_png_text
from grain_pl.io.images import check_resize_policy, pil_to_signed, signed_to_pil, to_uint8
from grain_pl.networks import GRAIN, GrainConfig
from grain_pl.networks.config import build_config
from grain_pl.weights.grain_checkpoint import load_grain, read_grain_config
from grain_pl.weights.io import CheckpointError, read_safetensors_metadata
from grain_pl.weights.stage_checkpoint import load_grain_from_stage_checkpoint

__all__ = ["GrainModule", "LRImageDataset"]


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
        config = build_config(network)
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
            preset = read_safetensors_metadata(path).get("preset")
        else:
            grain, preset = load_grain_from_stage_checkpoint(path, prior_path, prior_noise)
            config = grain.config
        broken = next((name for name, tensor in grain.state_dict().items()
                       if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())), None)
        if broken is not None:
            raise CheckpointError(f"{path}: the model's tensor {broken} holds NaN or infinite values (a diverged "
                                  "training run?); it would encode and decode to garbage")
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

    @property
    def is_upscaler(self) -> bool:
        """True for a model trained on ordinary thumbnails (`GrainConfig(encoder="bicubic")`); a model with a
        learned encoder was trained to decode its own LRs, and `upscale_*` runs it on thumbnails all the same."""
        return self.config.encoder == "bicubic"

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
        self._check_finite(lr, "encoding")
        return lr[0] if single else lr

    def decode(self, lr: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) or (3, h, w) LR in [-1, 1] -> the final HR image (`hr_out`), clamped to [-1, 1]."""
        single = lr.dim() == 3
        batch = lr.unsqueeze(0) if single else lr
        with self._evaluating():
            hr = self.grain.decode(batch.to(self._model_device(), torch.float32)).hr_out
        self._check_finite(hr, "decoding")
        hr = hr.clamp(-1, 1)
        return hr[0] if single else hr

    def _check_finite(self, output: torch.Tensor, what: str) -> None:
        # The 8-bit conversion maps NaN to 0: without this check a broken model writes black images, silently.
        if not bool(torch.isfinite(output).all()):
            raise ValueError(f"model {self.describe()}: {what} gave NaN or infinite values; its weights are "
                             "probably broken (a diverged training run?), no file was written for this batch")

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
        return pil_to_signed(fit_image(open_rgb_image(source), self.hr_size, resize, name_of(source)))

    def load_lr(self, source: ImageSource, allow_lossy_lr: bool = False) -> torch.Tensor:
        """An LR image (file or PIL) -> (3, lr_size, lr_size) tensor, exactly its 8-bit values.

        An LR that cannot be the exact LR `encode` wrote (a lossy format such as JPEG, transparent pixels, more
        than 8 bits per channel) is a CodecError unless `allow_lossy_lr` (`--allow-lossy-lr`).
        """
        if not allow_lossy_lr:
            check_exact_lr(source)
        return self._open_lr_sized(source, "LR image")

    def load_thumbnail(self, source: ImageSource) -> torch.Tensor:
        """A thumbnail (file or PIL) of the LR size, in any format (JPEG and lossy WebP included) -> (3, lr_size,
        lr_size) tensor of its 8-bit values. Size and mode rules as `load_lr`'s, less the lossy formats
        (`check_thumbnail`): a CodecError naming the file otherwise."""
        check_thumbnail(source)
        return self._open_lr_sized(source, "thumbnail")

    def _open_lr_sized(self, source: ImageSource, what: str) -> torch.Tensor:
        """The image's 8-bit values as a tensor in [-1, 1]; a CodecError naming the file unless it is lr_size."""
        image = open_rgb_image(source)
        if image.size != (self.lr_size, self.lr_size):
            raise CodecError(name_of(source), f"expected a {self.lr_size}x{self.lr_size} {what} for "
                                              f"{self.describe()}, got {image.size[0]}x{image.size[1]}")
        return pil_to_signed(image)

    def encode_image(self, image: ImageSource, resize: str = "error") -> Image.Image:
        """An image (PIL or file) -> the LR as an 8-bit RGB PIL image (save it losslessly: `lr_png_bytes`)."""
        return signed_to_pil(self.encode(self.load_hr(image, resize)))

    def decode_image(self, lr_image: ImageSource, allow_lossy_lr: bool = False) -> Image.Image:
        """An LR image (PIL or file) -> the decoded HR image (8-bit RGB PIL); see `load_lr` for `allow_lossy_lr`."""
        return signed_to_pil(self.decode(self.load_lr(lr_image, allow_lossy_lr)))

    def upscale_image(self, thumbnail: ImageSource) -> Image.Image:
        """A thumbnail of the LR size (PIL or file, see `load_thumbnail`) -> the HR image (8-bit RGB PIL): the
        decoder run on a thumbnail that anyone made, as a model with `encoder="bicubic"` was trained to."""
        return signed_to_pil(self.decode(self.load_thumbnail(thumbnail)))

    # ----- files -----
    def encode_file(self, src: str | os.PathLike, dst: str | os.PathLike | None = None, overwrite: bool = False,
                    resize: str = "error") -> Path:
        """Encode one image file into an LR PNG (default: next to it, photo.jpg -> photo.lr.png)."""
        return self._one_file(Path(src), dst, "encode", overwrite=overwrite, resize=resize)

    def decode_file(self, src: str | os.PathLike, dst: str | os.PathLike | None = None,
                    overwrite: bool = False, allow_lossy_lr: bool = False) -> Path:
        """Decode one LR PNG into an HR PNG (default: next to it, photo.lr.png -> photo.hr.png)."""
        return self._one_file(Path(src), dst, "decode", overwrite=overwrite, allow_lossy_lr=allow_lossy_lr)

    def upscale_file(self, src: str | os.PathLike, dst: str | os.PathLike | None = None,
                     overwrite: bool = False) -> Path:
        """Upscale one thumbnail file into an HR PNG (default: next to it, thumb.jpg -> thumb.hr.png)."""
        return self._one_file(Path(src), dst, "upscale", overwrite=overwrite)

    def _one_file(self, source: Path, destination: str | os.PathLike | None, kind: str, **options) -> Path:
        destination = Path(destination) if destination is not None else default_destination(source, kind)
        report = self._run_jobs([(source, destination)], kind, **options)
        if report.failed:
            raise report.failed[0][1]
        return destination

    def encode_paths(self, inputs: Sequence[str | os.PathLike], output: str | os.PathLike | None = None, *,
                     overwrite: bool = False, skip_existing: bool = False, resize: str = "error",
                     batch_size: int = 1, on_result: ResultCallback | None = None) -> CodecReport:
        """Encode files and folders (layout kept, see `plan_jobs`). A bad file is reported (in the returned
        report and through `on_result`) and the run goes on. `skip_existing`: leave existing outputs as they are
        and encode the rest (a re-run after an interruption; outputs are written atomically, so an existing one is
        complete); they are listed in `report.skipped`."""
        check_resize_policy(resize, RESIZE_POLICIES)
        jobs, failed, skipped = plan_jobs(inputs, output, "encode")
        return self._run_jobs(jobs, "encode", overwrite=overwrite, skip_existing=skip_existing, resize=resize,
                              batch_size=batch_size, on_result=on_result, failed=failed, skipped=skipped)

    def decode_paths(self, inputs: Sequence[str | os.PathLike], output: str | os.PathLike | None = None, *,
                     overwrite: bool = False, skip_existing: bool = False, allow_lossy_lr: bool = False,
                     batch_size: int = 1, on_result: ResultCallback | None = None) -> CodecReport:
        """Decode LR PNG files and folders of them (layout kept); per-file errors and `skip_existing` as in
        `encode_paths`, `allow_lossy_lr` as in `load_lr`."""
        jobs, failed, skipped = plan_jobs(inputs, output, "decode")
        return self._run_jobs(jobs, "decode", overwrite=overwrite, skip_existing=skip_existing,
                              allow_lossy_lr=allow_lossy_lr, batch_size=batch_size, on_result=on_result,
                              failed=failed, skipped=skipped)

    def upscale_paths(self, inputs: Sequence[str | os.PathLike], output: str | os.PathLike | None = None, *,
                      overwrite: bool = False, skip_existing: bool = False, batch_size: int = 1,
                      on_result: ResultCallback | None = None) -> CodecReport:
        """Upscale thumbnail files and folders of them (any image format, layout kept); per-file errors and
        `skip_existing` as in `encode_paths`, the file rules in `load_thumbnail`."""
        jobs, failed, skipped = plan_jobs(inputs, output, "upscale")
        return self._run_jobs(jobs, "upscale", overwrite=overwrite, skip_existing=skip_existing,
                              batch_size=batch_size, on_result=on_result, failed=failed, skipped=skipped)

    def encode_folder(self, src_dir: str | os.PathLike, dst_dir: str | os.PathLike, **options) -> CodecReport:
        return self.encode_paths([src_dir], dst_dir, **options)

    def decode_folder(self, src_dir: str | os.PathLike, dst_dir: str | os.PathLike, **options) -> CodecReport:
        return self.decode_paths([src_dir], dst_dir, **options)

    def upscale_folder(self, src_dir: str | os.PathLike, dst_dir: str | os.PathLike, **options) -> CodecReport:
        return self.upscale_paths([src_dir], dst_dir, **options)

    def _decode_input(self, source: Path, allow_lossy_lr: bool = False) -> torch.Tensor:
        lr = self.load_lr(source, allow_lossy_lr)
        try:
            stored = read_png_text(source).get("config")
            stored_config = json.loads(stored) if stored is not None else None
        except Exception:  # noqa: BLE001 - load_lr read the pixels already; the metadata is only advisory
            stored_config = None
        if stored_config is not None and not self._same_config(stored_config):
            warnings.warn(f"{source}: encoded by a model with another configuration than {self.describe()}; "
                          "the decoded image will not be faithful", stacklevel=3)
        return lr

    def _same_config(self, stored: object) -> bool:
        """Whether an LR PNG's stored config is this model's; settings it leaves out have their defaults (a PNG
        written before a setting existed)."""
        try:
            return GrainConfig(**stored) == self.config
        except (TypeError, ValueError):
            return False

    def _run_jobs(self, jobs: Sequence[tuple[Path, Path]], kind: str, *, overwrite: bool = False,
                  skip_existing: bool = False, allow_lossy_lr: bool = False, resize: str = "error",
                  batch_size: int = 1, on_result: ResultCallback | None = None,
                  failed: Sequence[tuple[Path, CodecError]] = (), skipped: Sequence[tuple[Path, str]] = ()
                  ) -> CodecReport:
        """Load, run and write `batch_size` files at a time; file problems are reported, not raised."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if overwrite and skip_existing:
            raise ValueError("overwrite and skip_existing (--overwrite, --skip-existing) exclude each other")
        report = CodecReport(skipped=list(skipped))

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
            if kind == "upscale":
                load = self.load_thumbnail
            else:
                def load(source: Path) -> torch.Tensor:
                    return self._decode_input(source, allow_lossy_lr)
            run = self.decode
            write_options = dict(optimize=False, compress_level=HR_COMPRESS_LEVEL)
        text = self.png_metadata()

        for batch in batches(list(jobs), batch_size):
            loaded: list[tuple[Path, Path, torch.Tensor]] = []
            for source, destination in batch:
                if destination.exists() and not overwrite:  # refuse before spending time on the network
                    if skip_existing:
                        report.skipped.append((destination, EXISTING_OUTPUT))
                    else:
                        fail(source, exists_error(destination))
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
                    data = png_bytes(to_uint8(image), text, **write_options)
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


class LRImageDataset(torch.utils.data.Dataset):
    """LR PNG files -> {"lr": (3, lr_size, lr_size) in [-1, 1], "path": str}, for `trainer.predict`:

        module = GrainModule.from_checkpoint("model.safetensors")
        loader = DataLoader(LRImageDataset(paths, module.lr_size), batch_size=8)
        batches = pl.Trainer(logger=False).predict(module, loader)   # [{"hr": ..., "path": [...]}, ...]

    A bad file raises CodecError (naming it); the file helpers of GrainModule report and skip instead.
    """

    def __init__(self, paths: Sequence[str | os.PathLike], lr_size: int, allow_lossy_lr: bool = False) -> None:
        self.paths = [str(path) for path in paths]
        self.lr_size = lr_size
        self.allow_lossy_lr = allow_lossy_lr  # see GrainModule.load_lr

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        path = self.paths[index]
        if not self.allow_lossy_lr:
            check_exact_lr(path)
        image = open_rgb_image(path)
        if image.size != (self.lr_size, self.lr_size):
            raise CodecError(path, f"expected a {self.lr_size}x{self.lr_size} LR image, got "
                                   f"{image.size[0]}x{image.size[1]}")
        return {"lr": pil_to_signed(image), "path": path}
