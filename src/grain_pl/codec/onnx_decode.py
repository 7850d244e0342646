#!/usr/bin/env python3
"""Decode GRAIN's LR PNGs with onnxruntime alone: numpy, Pillow and onnxruntime, no torch and no grain_pl.

    grain export --onnx grain_onnx --model grain.safetensors     # where torch is: the graphs and a copy of this file
    pip install numpy pillow onnxruntime                          # where it is not
    python grain_onnx/onnx_decode.py photo.lr.png --model grain_onnx            # -> photo.hr.png
    python grain_onnx/onnx_decode.py lr/ -o hr/ --model grain_onnx              # every .png under lr/, layout kept

The same image as `grain decode` (one file at a time; float summation order may move a pixel by one level), and the
same checks and one-line errors naming the file: an LR that is not the model's LR size, or that cannot be the
exact PNG `grain encode` wrote (a lossy format such as JPEG, transparent pixels, more than 8 bits per channel;
`--allow-lossy-lr` decodes it anyway), a file that cannot be read; an existing output is never replaced without
`--overwrite`, and outputs are written atomically. The pixels map to the network as grain_onnx.json says:
value = level / 127.5 - 1 in, level = round((value + 1) * 127.5) out.

In Python: `OnnxDecoder("grain_onnx").decode_file("photo.lr.png", "photo.hr.png")`, or `decode(levels)` on a
(h, w, 3) uint8 array.

Pillow's conversions are those of `grain decode` (grain_pl.io.images.load_rgb_image): grayscale -> RGB, 16-bit ->
8-bit (value / 257), alpha composited on white, palette -> RGB, EXIF orientation applied. This file is a copy of
grain_pl/codec/onnx_decode.py; grain_pl's tests check that its errors and images are those of `grain decode`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
import warnings
from collections.abc import Sequence
from io import BytesIO
from pathlib import Path

import numpy as np
import onnxruntime
from PIL import Image, ImageOps
from PIL.PngImagePlugin import PngInfo

DECODER_FILE = "decoder.onnx"
MANIFEST_FILE = "grain_onnx.json"
LEVELS = 255
HR_COMPRESS_LEVEL = 6  # zlib level of grain decode's HR PNGs
PROGRAM = "onnx_decode"
# Modes whose pixels convert to 8-bit RGB exactly (alpha ones only when every pixel is opaque).
EXACT_MODES = ("RGB", "L", "P", "1", "RGBA", "LA", "PA")
HEADER_BYTES = 1 << 16  # enough for a PNG's IHDR and a WebP's chunk list


class DecodeError(ValueError):
    """A problem with one file: the message is one line and starts with the file's path."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = " ".join(str(reason).split())
        super().__init__(f"{self.path}: {self.reason}")


# ----- reading an LR as grain decode does -----
def lossy_lr_reason(image: Image.Image, header: bytes = b"") -> str | None:
    """Why `image` cannot be the exact LR `grain encode` wrote, or None (grain_pl.codec.png.lossy_lr_reason)."""
    if image.format in ("JPEG", "MPO", "JPEG2000"):
        return f"{image.format} is a lossy format"
    if image.format == "WEBP" and header[12:16] != b"VP8L" and (b"VP8 " in header or b"VP8L" not in header):
        return "lossy WebP"
    if image.format == "TIFF" and "jpeg" in str(image.info.get("compression", "")):
        return "JPEG-compressed TIFF"
    if image.format == "PNG" and header[12:16] == b"IHDR" and len(header) > 24 and header[24] > 8:
        return f"{header[24]} bits per channel (encode writes 8)"
    if image.mode not in EXACT_MODES:
        return f"mode {image.mode}" + (" (more than 8 bits per channel)" if image.mode.startswith(("I", "F")) else "")
    too_big = Image.MAX_IMAGE_PIXELS is not None and image.width * image.height > Image.MAX_IMAGE_PIXELS
    if (image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info) and not too_big:
        if image.convert("RGBA").getchannel("A").getextrema()[0] < 255:
            return "it has transparent pixels (alpha < 255), which decode would composite on white"
    return None


def check_exact_lr(path: Path) -> None:
    try:
        with open(path, "rb") as file:
            header = file.read(HEADER_BYTES)
        with Image.open(path) as image:
            reason = lossy_lr_reason(image, header)
    except Exception:  # noqa: BLE001 - missing, unreadable or not an image: read_rgb names the problem
        return
    if reason is not None:
        raise DecodeError(path, f"cannot be the exact LR that grain encode wrote: {reason}; decoding it would not "
                                "be faithful (pass --allow-lossy-lr, allow_lossy_lr=True, to decode it anyway)")


def to_rgb8(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB (grain_pl.io.images.to_rgb8)."""
    if image.mode == "RGB" and "transparency" not in image.info:
        return image
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        values = np.asarray(image).astype(np.float64)
        gray = np.clip(np.round(values / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "RGBa", "LA", "La", "PA"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def read_rgb(path: Path) -> Image.Image:
    """An image file -> 8-bit RGB, EXIF orientation applied (grain_pl.codec.jobs.open_rgb_image)."""
    if not path.exists():
        raise DecodeError(path, "no such file")
    if path.is_dir():
        raise DecodeError(path, "is a folder, not an image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # refused from 1x the limit, not 2x
            with Image.open(path) as image:
                image.load()
                image = ImageOps.exif_transpose(image)
            return to_rgb8(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise DecodeError(path, f"refusing to decode a possible decompression bomb: {error} "
                                "(limit: PIL.Image.MAX_IMAGE_PIXELS)") from error
    except Exception as error:  # Pillow raises many types for corrupt data
        raise DecodeError(path, "cannot read the image (truncated, corrupt or not an image): "
                                f"{type(error).__name__}: {error}") from error


def png_text(path: Path) -> dict[str, str]:
    try:
        with Image.open(path) as image:
            return dict(getattr(image, "text", {}) or {})
    except Exception:  # noqa: BLE001 - the pixels were read already; the metadata is only advisory
        return {}


# ----- the decoder -----
class OnnxDecoder:
    """decoder.onnx and grain_onnx.json from `grain export --onnx FOLDER`.

    threads: onnxruntime's intra-op threads (0: its default, one per core).
    providers: onnxruntime execution providers (default: the CPU).
    """

    def __init__(self, folder: str | os.PathLike, threads: int = 0, providers: Sequence[str] | None = None) -> None:
        folder = Path(folder)
        if not folder.is_dir():
            raise DecodeError(folder, "no such folder (--model names the folder grain export --onnx wrote)")
        for name in (DECODER_FILE, MANIFEST_FILE):
            if not (folder / name).is_file():
                raise DecodeError(folder, f"has no {name}; write it with grain export --onnx {folder}")
        try:
            self.manifest = json.loads((folder / MANIFEST_FILE).read_text())
            self.lr_size, self.hr_size = int(self.manifest["lr_size"]), int(self.manifest["hr_size"])
        except (ValueError, KeyError, TypeError) as error:
            raise DecodeError(folder / MANIFEST_FILE, f"not a grain export manifest: {error}") from error
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        try:
            self.session = onnxruntime.InferenceSession(str(folder / DECODER_FILE), options,
                                                        providers=list(providers or ["CPUExecutionProvider"]))
        except Exception as error:  # noqa: BLE001 - onnxruntime's own error types
            raise DecodeError(folder / DECODER_FILE, f"onnxruntime cannot load it: {error}") from error
        graph_input = self.session.get_inputs()[0]
        if list(graph_input.shape[1:]) != [3, self.lr_size, self.lr_size]:
            raise DecodeError(folder / DECODER_FILE, f"takes {graph_input.shape}, but {MANIFEST_FILE} says LR "
                                                     f"{self.lr_size}x{self.lr_size}")
        self.input_name = graph_input.name

    def describe(self) -> str:
        return str(self.manifest.get("describe") or f"GRAIN ({self.hr_size} px, LR {self.lr_size} px)")

    def decode(self, levels: np.ndarray) -> np.ndarray:
        """(h, w, 3) or (B, h, w, 3) uint8 LR levels -> (H, W, 3) or (B, H, W, 3) uint8 HR levels."""
        single = levels.ndim == 3
        batch = levels[None] if single else levels
        if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[1:] != (self.lr_size, self.lr_size, 3):
            raise ValueError(f"expected uint8 LR levels of shape (B, {self.lr_size}, {self.lr_size}, 3), got "
                             f"{batch.dtype} {batch.shape}")
        lr = batch.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(LEVELS / 2) - np.float32(1)
        hr = self.session.run(None, {self.input_name: lr})[0]
        if not np.isfinite(hr).all():  # NaN would become black pixels, silently
            raise ValueError(f"model {self.describe()}: decoding gave NaN or infinite values; its weights are "
                             "probably broken (a diverged training run?), no file was written for this batch")
        out = np.clip(np.rint((hr + np.float32(1)) * np.float32(LEVELS / 2)), 0, LEVELS).astype(np.uint8)
        out = out.transpose(0, 2, 3, 1)
        return out[0] if single else out

    def load_lr(self, path: str | os.PathLike, allow_lossy_lr: bool = False) -> np.ndarray:
        """An LR file -> (h, w, 3) uint8 levels, checked as grain decode checks it."""
        path = Path(path)
        if not allow_lossy_lr:
            check_exact_lr(path)
        image = read_rgb(path)
        if image.size != (self.lr_size, self.lr_size):
            raise DecodeError(path, f"expected a {self.lr_size}x{self.lr_size} LR image for {self.describe()}, got "
                                    f"{image.size[0]}x{image.size[1]}")
        stored = png_text(path).get("config")
        if stored is not None and json.loads(stored) != self.manifest.get("config"):
            print(f"{PROGRAM}: warning: {path}: encoded by a model with another configuration than "
                  f"{self.describe()}; the decoded image will not be faithful", file=sys.stderr, flush=True)
        return np.asarray(image, dtype=np.uint8)

    def decode_file(self, source: str | os.PathLike, destination: str | os.PathLike, overwrite: bool = False,
                    allow_lossy_lr: bool = False) -> Path:
        destination = Path(destination)
        if destination.exists() and not overwrite:  # refuse before spending time on the network
            raise DecodeError(destination, "already exists; pass --overwrite (overwrite=True) to replace it")
        hr = self.decode(self.load_lr(source, allow_lossy_lr))
        write_png(hr, destination, self.png_metadata(), overwrite)
        return destination

    def png_metadata(self) -> dict[str, str]:
        """grain decode's text chunks: grain_pl version, preset, config, model."""
        text = {"grain_pl": str(self.manifest.get("grain_pl", ""))}
        if self.manifest.get("preset"):
            text["preset"] = self.manifest["preset"]
        text["config"] = json.dumps(self.manifest.get("config"), sort_keys=True, separators=(",", ":"))
        if self.manifest.get("model"):
            text["model"] = self.manifest["model"]
        return text


def write_png(levels: np.ndarray, destination: Path, text: dict[str, str], overwrite: bool) -> None:
    """An (H, W, 3) uint8 image as a PNG, written to a hidden temporary file and moved into place."""
    info = PngInfo()
    for key, value in text.items():
        info.add_text(key, value, zip=len(value) > 64)
    buffer = BytesIO()
    Image.fromarray(levels, "RGB").save(buffer, format="PNG", compress_level=HR_COMPRESS_LEVEL, pnginfo=info)
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(f".{destination.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(partial, "xb") as file:
            file.write(buffer.getvalue())
            file.flush()
            os.fsync(file.fileno())
        if overwrite:
            os.replace(partial, destination)
        else:
            try:
                os.link(partial, destination)  # fails if the name was taken meanwhile: never clobbers
            except FileExistsError:
                raise DecodeError(destination, "already exists; pass --overwrite (overwrite=True) to replace "
                                               "it") from None
    except OSError as error:
        raise DecodeError(destination, f"cannot write it: {error.strerror or error}") from error
    finally:
        partial.unlink(missing_ok=True)


# ----- which file goes where (as grain decode) -----
def plan(inputs: Sequence[str], output: str | None) -> tuple[list[tuple[Path, Path]], list[DecodeError]]:
    sources = [Path(item) for item in inputs]
    folder_output = output is not None and (Path(output).is_dir() or output.endswith(("/", os.sep)))
    if output is not None and len(sources) == 1 and not sources[0].is_dir() and not folder_output:
        if Path(output).suffix.lower() != ".png":
            raise DecodeError(output, "the output must be a .png file, or a folder (end the name with /)")
        if not sources[0].exists():
            return [], [DecodeError(sources[0], "no such file or folder")]
        return [(sources[0], Path(output))], []
    if output is not None and not folder_output and Path(output).exists():
        raise DecodeError(output, f"{len(sources)} inputs need an output folder, but this is a file")
    jobs, failed = [], []
    for source in sources:
        if source.is_dir():
            if output is None:
                raise DecodeError(source, "a folder input needs -o/--output (the output folder)")
            files = sorted(path for path in source.rglob("*") if path.suffix.lower() == ".png" and path.is_file()
                           and not any(part.startswith(".") for part in path.relative_to(source).parts))
            if not files:
                failed.append(DecodeError(source, "no .png files under it"))
            jobs += [(file, Path(output) / file.relative_to(source)) for file in files]
        elif source.exists():
            if output is not None:
                destination = Path(output) / f"{source.stem}.png"
            else:
                stem = source.stem[:-3] if source.stem.endswith(".lr") else source.stem
                destination = source.with_name(f"{stem}.hr.png")
            jobs.append((source, destination))
        else:
            failed.append(DecodeError(source, "no such file or folder"))
    return jobs, failed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROGRAM, description="Decode GRAIN LR PNGs into HR PNGs with onnxruntime "
                                     "(the folder grain export --onnx wrote). Without -o: photo.lr.png -> "
                                     "photo.hr.png next to it.")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="LR PNG files, or folders of them (recursive)")
    parser.add_argument("-o", "--output", help="output file (one input file) or folder (several inputs, or a name "
                                               "ending in /)")
    parser.add_argument("--model", required=True, metavar="FOLDER", help="the folder grain export --onnx wrote")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--allow-lossy-lr", action="store_true",
                        help="decode LRs that cannot be the exact PNG encode wrote (JPEG or lossy WebP, transparent "
                             "pixels, 16 bits per channel); refused by default, as the result is not faithful")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime threads (default 0: one per core)")
    parser.add_argument("--providers", default="CPUExecutionProvider",
                        help="onnxruntime execution providers, comma-separated (default: CPUExecutionProvider)")
    args = parser.parse_args(argv)
    try:
        decoder = OnnxDecoder(args.model, threads=args.threads, providers=args.providers.split(","))
        jobs, failed = plan(args.inputs, args.output)
    except DecodeError as error:
        print(f"{PROGRAM}: error: {error}", file=sys.stderr)
        return 2
    for error in failed:
        print(f"{PROGRAM}: error: {error}", file=sys.stderr, flush=True)
    done = 0
    for source, destination in jobs:
        try:
            decoder.decode_file(source, destination, overwrite=args.overwrite, allow_lossy_lr=args.allow_lossy_lr)
        except ValueError as error:  # DecodeError (the file) or the model's NaN
            failed.append(error)
            print(f"{PROGRAM}: error: {error}", file=sys.stderr, flush=True)
            continue
        done += 1
        print(f"{source} -> {destination}", flush=True)
    if failed:
        print(f"{PROGRAM}: error: {len(failed)} of {done + len(failed)} file(s) failed (see above); {done} written",
              file=sys.stderr)
        return 2
    print(f"decoded {done} file(s) with {decoder.describe()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
