"""`grain evaluate`: GRAIN against classical baselines on a folder of test images, under one metric protocol.

    from grain_pl.codec import GrainModule
    from grain_pl.evaluation import evaluate_folder
    summary = evaluate_folder(GrainModule.from_checkpoint("grain.ckpt"), "data/test", "runs/eval")
    summary = evaluate_folder(None, "data/test", "runs/eval-baselines", hr_size=1024, lr_size=16)  # no model

The protocol is written out in docs/evaluation.md; `grain_pl.evaluation.PROTOCOL` is its machine-readable copy,
written into every summary.json.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from itertools import chain
from pathlib import Path
from typing import Any

import torch

from grain_pl.data.datasets import ImageFolderDataset
from grain_pl.evaluation.baselines import (
    _default_png_encoder,
    baseline_reconstructions,
    encode_with_pillow,
    resize_baseline,
)
from grain_pl.evaluation.protocol import (
    EVALUATION_RESIZE_POLICIES,
    FILE_SUFFIXES,
    PILLOW_SETTINGS,
    PROTOCOL,
    PSNR_CAP_DB,
    RESULT_FILES,
    UPSCALER_METHOD,
    LrCodecSetting,
    PngEncoder,
    Reconstruction,
    SimilarityModel,
    parse_lr_codecs,
    resolve_methods,
)
from grain_pl.evaluation.report import library_versions, summarize, write_csv, write_results
from grain_pl.evaluation.scoring import ReconstructionScorer, lr_scores
from grain_pl.io.files import atomic_write, check_writable_folder, write_bytes
from grain_pl.io.images import (
    BadImageFileError,
    check_fit,
    check_image_header,
    check_resize_policy,
    check_uint8_image,
    decode_image_bytes,
    describe_skipped,
    from_uint8,
    no_images_error,
    scan_image_files,
    to_uint8,
    uint8_to_pil,
)
from grain_pl.metrics.lr_fidelity import resize_levels

OWN_OUTPUT = "output folder of this evaluation, inside the test folder (not searched)"


def _device_of(model: Any) -> torch.device | str:
    return next(iter(model.parameters())).device if hasattr(model, "parameters") else "cpu"


def _decode_lr(model: Any, lr_uint8: torch.Tensor, hr_shape: torch.Size, device: torch.device | str) -> torch.Tensor:
    """The model's 8-bit HR output for an 8-bit LR, checked: finite, and of the HR's shape."""
    decoded = model.decode(from_uint8(lr_uint8)[None].to(device))
    decoded = getattr(decoded, "hr_out", decoded)  # GrainModule returns the image; the bare GRAIN a GrainOutput
    _check_finite(model, decoded, "decoding")
    output = to_uint8(decoded[0]).cpu()
    if output.shape != hr_shape:
        raise ValueError(f"the model decoded {tuple(output.shape)}, expected the HR shape {tuple(hr_shape)}")
    return output


@torch.inference_mode()
def grain_reconstruction(model: Any, hr_uint8: torch.Tensor, png_encoder: PngEncoder | None = None,
                         device: torch.device | str | None = None) -> Reconstruction:
    """encode -> 8-bit LR -> PNG bytes -> Pillow decodes the PNG -> decode -> 8-bit output (see the protocol)."""
    check_uint8_image(hr_uint8, "hr_uint8")
    png_encoder = png_encoder or _default_png_encoder()
    device = _device_of(model) if device is None else device
    lr = model.encode(from_uint8(hr_uint8)[None].to(device))
    _check_finite(model, lr, "encoding")
    lr_uint8 = to_uint8(lr[0]).cpu()
    payload = png_encoder(lr_uint8)
    lr_stored = decode_image_bytes(payload)
    if not torch.equal(lr_stored, lr_uint8):
        raise RuntimeError("the LR PNG does not decode to the LR levels it was written from (PNG must be lossless)")
    output = _decode_lr(model, lr_stored, hr_uint8.shape, device)
    return Reconstruction("grain", output, payload, "png", lr=lr_stored)


@torch.inference_mode()
def upscaler_reconstruction(model: Any, hr_uint8: torch.Tensor, png_encoder: PngEncoder | None = None,
                            device: torch.device | str | None = None, thumbnail: Reconstruction | None = None
                            ) -> Reconstruction:
    """An ordinary thumbnail decoded by a GRAIN model (--upscaler): the bicubic baseline's stored LR PNG (its very
    bytes: `thumbnail`, the bicubic row's Reconstruction, or else made by the same call) -> Pillow decodes it ->
    model.decode -> 8-bit output. Any GRAIN model decodes; one with a learned encoder is then a decoder fed a plain
    thumbnail."""
    check_uint8_image(hr_uint8, "hr_uint8")
    if thumbnail is None:
        thumbnail = resize_baseline(hr_uint8.cpu(), model.config.lr_size, "bicubic", png_encoder)
    lr_stored = decode_image_bytes(thumbnail.payload)
    device = _device_of(model) if device is None else device
    output = _decode_lr(model, lr_stored, hr_uint8.shape, device)
    return Reconstruction(UPSCALER_METHOD, output, thumbnail.payload, "png", lr=lr_stored)


@torch.inference_mode()
def lr_codec_reconstruction(model: Any, stored: Reconstruction, setting: LrCodecSetting,
                            device: torch.device | str | None = None) -> Reconstruction:
    """A row's LR after a platform re-encodes it (--lr-codec): the row's stored LR PNG (`stored.payload`)
    decoded to 8 bits -> Pillow writes it as setting.codec at setting.quality (the baselines' encoder settings)
    -> Pillow decodes those bytes -> model.decode -> 8-bit output. Its bytes are the re-encoded file's.
    model None: the bicubic baseline's row, whose decoder is its own bicubic upscale (the same call as its row's),
    i.e. what the re-encode costs a thumbnail that hides nothing."""
    if stored.payload_format != "png":
        raise ValueError(f"{stored.method}: --lr-codec re-encodes a stored LR PNG, this row stores "
                         f"{stored.payload_format}")
    lr_stored = decode_image_bytes(stored.payload)
    payload = encode_with_pillow(lr_stored, setting.codec, setting.quality)
    lr_received = decode_image_bytes(payload)
    if model is None:
        if stored.method != "bicubic":
            raise ValueError(f"{stored.method}: without a model, --lr-codec re-encodes only the bicubic row")
        output = resize_levels(lr_received, (stored.output.shape[-2], stored.output.shape[-1]), "bicubic")
    else:
        device = _device_of(model) if device is None else device
        output = _decode_lr(model, lr_received, stored.output.shape, device)
    return Reconstruction(setting.row(stored.method), output, payload, setting.codec, setting.quality,
                          lr=lr_received)


def _check_finite(model: Any, output: torch.Tensor, what: str) -> None:
    # to_uint8 maps NaN to 0: a broken model would score as a black image instead of failing.
    if not bool(torch.isfinite(output).all()):
        name = model.describe() if hasattr(model, "describe") else type(model).__name__
        raise ValueError(f"model {name}: {what} gave NaN or infinite values; its weights are probably broken "
                         "(a diverged training run?)")


def check_test_images(paths: Sequence[Path], hr_size: int, resize: str) -> None:
    """Every file's header before any model call: readable, under the codec's decompression-bomb limit
    (PIL.Image.MAX_IMAGE_PIXELS) and fit for `resize`. Raises one ValueError naming the first bad file."""
    problems: list[str] = []
    for path in paths:
        try:
            width, height = check_image_header(path)
            check_fit(width, height, hr_size, resize, path)
        except BadImageFileError as error:
            problems.append(str(error))
        except ValueError as error:  # ImageSizeError, ImageTooLargeError
            problems.append(str(error))
    if problems:
        more = f" (and {len(problems) - 1} more bad test image(s))" if len(problems) > 1 else ""
        raise ValueError(f"{problems[0]}{more}; nothing was evaluated")


# --------------------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------------------


@contextmanager
def _borrowed(model: Any, device: torch.device) -> Iterator[Any]:
    """The model on `device` in eval mode while the evaluation runs; afterwards back on the device it came on, with
    every submodule in the train/eval mode it had (a stage keeps frozen parts in eval while it trains)."""
    if model is None:
        yield None
        return
    tensors = chain(model.parameters(), model.buffers()) if hasattr(model, "parameters") else iter(())
    home = next((tensor.device for tensor in tensors), None)
    modules = dict(model.named_modules()) if hasattr(model, "named_modules") else {}
    modes = {name: module.training for name, module in modules.items()}
    was_training = bool(getattr(model, "training", False))
    try:
        yield model.to(device).eval()
    finally:
        if home is not None:
            model.to(home)
        if modules:
            for name, module in modules.items():
                module.training = modes[name]  # as nn.Module.train sets it, module by module
        elif was_training:
            model.train()


def check_output_dir(output_dir: str | Path, overwrite: bool) -> None:
    """Refuse an output_dir that already holds results (FileExistsError), unless overwrite."""
    output_dir = Path(output_dir)
    existing = [name for name in RESULT_FILES if (output_dir / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{output_dir} already holds results ({', '.join(existing)}); "
                              "pass overwrite=True (--overwrite) to replace them")


def _sizes(model: Any, hr_size: int | None, lr_size: int | None, upscaler: Any | None = None) -> tuple[int, int]:
    """The HR and LR sizes: the model's (else the upscaler's), which given sizes and the upscaler must agree with;
    without either, hr_size and lr_size as given."""
    if model is None and upscaler is None:
        if hr_size is None or lr_size is None:
            raise ValueError("without a model, give hr_size and lr_size (the baselines' HR and LR sizes)")
        if not 0 < lr_size < hr_size:
            raise ValueError(f"hr_size {hr_size} and lr_size {lr_size} (--hr-size, --lr-size): both must be positive "
                             "and the LR smaller than the HR")
        return int(hr_size), int(lr_size)
    source, what = (model, "model") if model is not None else (upscaler, "upscaler")
    config = source.config
    for name, given, own in (("hr_size", hr_size, config.hr_size), ("lr_size", lr_size, config.lr_size)):
        if given is not None and given != own:
            raise ValueError(f"{name}={given} contradicts the {what}'s {name}={own}")
    if upscaler is not None and source is not upscaler:
        for name in ("hr_size", "lr_size"):
            if getattr(upscaler.config, name) != getattr(config, name):
                raise ValueError(f"the upscaler's {name}={getattr(upscaler.config, name)} differs from the model's "
                                 f"{name}={getattr(config, name)}; both decode the same test set")
    return int(config.hr_size), int(config.lr_size)


def _row_names(method_names: Sequence[str], lr_codecs: Sequence[LrCodecSetting], upscaler: bool) -> list[str]:
    """The rows in table order: each model row and the bicubic row followed by its --lr-codec rows; grain_upscale's
    group right after bicubic's (the upscaling it competes with), else after grain's group, else first."""
    grain_group = ["grain", *(setting.row("grain") for setting in lr_codecs)]
    bicubic_group = ["bicubic", *(setting.row("bicubic") for setting in lr_codecs)]
    upscaler_group = [UPSCALER_METHOD, *(setting.row(UPSCALER_METHOD) for setting in lr_codecs)] if upscaler else []
    rows: list[str] = []
    for name in method_names:
        rows += {"grain": grain_group, "bicubic": bicubic_group}.get(name, [name])
        if name == "bicubic":
            rows += upscaler_group
    if upscaler and "bicubic" not in method_names:
        at = rows.index("grain") + len(grain_group) if "grain" in method_names else 0
        rows[at:at] = upscaler_group
    return rows


def _save_outputs(output_dir: Path, relative: str, reconstructions: Mapping[str, Reconstruction]) -> None:
    stem = Path(relative).with_suffix("")
    for method, reconstruction in reconstructions.items():
        image_path = output_dir / "images" / method / stem.with_suffix(".png")
        payload_path = output_dir / "payloads" / method / stem.with_suffix(FILE_SUFFIXES[reconstruction.payload_format])
        image = uint8_to_pil(reconstruction.output)
        atomic_write(image_path, lambda file, image=image: image.save(file, "PNG"), overwrite=True)
        write_bytes(reconstruction.payload, payload_path, overwrite=True)


PARTIAL_RESULTS = "per_image.partial.csv"


def _stopped(error: BaseException, output_dir: Path, rows: Sequence[Mapping[str, Any]], done: int, total: int
             ) -> BaseException:
    """The error that ends an evaluation cut short after `done` of `total` images, after keeping the rows of the images
    finished so far in output_dir/per_image.partial.csv; the message says so. The same kind of error, so `grain`
    reports it the same way (an OSError with its errno, a ValueError, a KeyboardInterrupt); any other error,
    a bug, is returned as it is, the partial rows kept all the same."""
    if not rows:
        note = "nothing was evaluated"
    else:
        partial = output_dir / PARTIAL_RESULTS
        try:
            write_csv(rows, partial)
            note = f"the rows of the {done} of {total} image(s) evaluated so far are in {partial} (no summary: that " \
                   "needs the whole test set)"
        except OSError as write_error:
            note = f"the rows of the {done} of {total} image(s) evaluated so far could not be kept either " \
                   f"({write_error.strerror or write_error})"
    if isinstance(error, KeyboardInterrupt):
        return KeyboardInterrupt(note)
    if isinstance(error, OSError) and error.strerror:
        return type(error)(error.errno, f"{error.strerror}; {note}", *([error.filename] if error.filename else []))
    if isinstance(error, ValueError):
        return ValueError(f"{str(error).strip().splitlines()[0] if str(error).strip() else error!r}; {note}")
    return error



def evaluate_folder(
    model: Any | None,
    folder: str | Path,
    output_dir: str | Path,
    *,
    methods: Sequence[str] | None = None,
    identity_weights: str | Path | SimilarityModel | None = None,
    arcface_model: SimilarityModel | None = None,
    resize: str = "error",
    device: torch.device | str = "cpu",
    limit: int | None = None,
    hr_size: int | None = None,
    lr_size: int | None = None,
    overwrite: bool = False,
    save_images: bool = False,
    png_encoder: PngEncoder | None = None,
    perceptual: torch.nn.Module | None = None,
    settings: Mapping[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
    upscaler: Any | None = None,
    lr_codecs: Sequence[str] | str | None = None,
) -> dict[str, Any]:
    """Evaluate `model` (a GrainModule, or None for baselines only) and the baselines on every image of `folder`.

    Writes per_image.csv, summary.json and rd_plot.png into `output_dir` (created) and returns the summary
    dict that summary.json holds. The protocol: docs/evaluation.md. The model runs on `device` in eval mode and is
    handed back on its own device and in its own train/eval modes.

    Args:
        methods: names as in DEFAULT_METHODS (any jpeg_qN / webp_qN / avif_qN); None: all of DEFAULT_METHODS that apply
            (without a model, everything but grain and the *_matched codecs, which match GRAIN's bytes).
        identity_weights: pSp's IR-SE50 file, or an already built `IdentityLoss` (any SimilarityModel): adds
            the "identity" column (IdentityLoss.similarity).
        arcface_model: any object with .similarity(output, target) -> (B,): adds the "arcface" column.
        resize: "error", "resize" or "center_crop" for test images that are not hr_size x hr_size.
        hr_size, lr_size: required without a model; with one they must agree with model.config if given.
        overwrite: replace the results of an earlier run in output_dir (refused otherwise).
        save_images: also write every 8-bit output to images/<method>/<file>.png and every stored byte string to
            payloads/<method>/<file>.png|.jpg|.webp.
        png_encoder: the LR PNG writer (default: `grain_pl.codec.lr_png_bytes`).
        perceptual: an LPIPS module to reuse (default: a fresh offline `PerceptualLoss`).
        settings: extra entries for summary.json's "settings" (e.g. the checkpoint path).
        progress: called with one line per image.
        upscaler: a GRAIN model (any: its decode is all that runs) that decodes ordinary thumbnails: adds the row
            "grain_upscale", the bicubic baseline's stored LR PNG decoded by it (--upscaler).
        lr_codecs: settings "CODEC:QUALITY" (codec jpeg, webp or avif; quality 1..100), a comma list or a sequence
            of them: per setting and model row (grain, grain_upscale) a row "grain+jpeg_q90" whose LR is the
            row's stored PNG re-encoded by Pillow (--lr-codec).
    """
    check_resize_policy(resize, EVALUATION_RESIZE_POLICIES)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be positive, got {limit}")
    recodings = parse_lr_codecs(lr_codecs)
    specs = resolve_methods(methods, model is not None)
    method_names = [spec.name for spec in specs]
    baseline_names = [name for name in method_names if name != "grain"]
    if recodings and "grain" not in method_names and upscaler is None:
        raise ValueError("--lr-codec re-encodes a model's stored LR: evaluate 'grain' (a --model) or give an "
                         "--upscaler")
    row_names = _row_names(method_names, recodings, upscaler is not None)
    hr_size, lr_size = _sizes(model, hr_size, lr_size, upscaler)
    output_dir = Path(output_dir)
    check_output_dir(output_dir, overwrite)
    folder = Path(folder)
    listing = scan_image_files(folder, exclude=[(output_dir, OWN_OUTPUT)])
    if not listing.files:
        raise no_images_error(listing)
    paths = listing.files[:limit]
    check_test_images(paths, hr_size, resize)  # a broken test set fails before the first model call
    check_writable_folder(output_dir)  # a read-only output folder too, not after all the work
    if upscaler is not None or any(spec.kind in ("grain", "resize") for spec in specs):
        png_encoder = png_encoder or _default_png_encoder()

    device = torch.device(device)
    identity: SimilarityModel | None = None
    if isinstance(identity_weights, (str, Path)):
        from grain_pl.losses.identity import IdentityLoss

        identity = IdentityLoss(identity_weights)
    elif identity_weights is not None:
        identity = identity_weights
    scorer = ReconstructionScorer(perceptual, identity, arcface_model, device)

    # on_bad_file="error": a test set with an unreadable file is a broken test set, not something to skip.
    dataset = ImageFolderDataset(paths, hr_size, resize=resize, on_bad_file="error")
    rows: list[dict[str, Any]] = []
    with _borrowed(model, device) as evaluated, _borrowed(upscaler, device) as upscaling:
        try:
            for index, path in enumerate(paths):
                relative = path.relative_to(folder).as_posix()
                hr_uint8 = to_uint8(dataset[index]["hr"])  # exact: the dataset maps levels by level / 127.5 - 1
                reconstructions: dict[str, Reconstruction] = {}
                if "grain" in method_names:
                    reconstructions["grain"] = grain_reconstruction(evaluated, hr_uint8, png_encoder, device)
                target_bytes = reconstructions["grain"].num_bytes if "grain" in reconstructions else None
                reconstructions.update(baseline_reconstructions(hr_uint8, lr_size, baseline_names,
                                                                target_bytes=target_bytes, png_encoder=png_encoder))
                if upscaling is not None:  # the bicubic row's own thumbnail, or the same call's
                    thumbnail = reconstructions.get("bicubic") or resize_baseline(hr_uint8, lr_size, "bicubic",
                                                                                  png_encoder)
                    reconstructions[UPSCALER_METHOD] = upscaler_reconstruction(upscaling, hr_uint8, png_encoder,
                                                                               device, thumbnail)
                for model_row, decoder in (("grain", evaluated), ("bicubic", None), (UPSCALER_METHOD, upscaling)):
                    if model_row not in reconstructions:
                        continue
                    for setting in recodings:  # the LR a platform's re-encode hands the model
                        recoded = lr_codec_reconstruction(decoder, reconstructions[model_row], setting, device)
                        reconstructions[recoded.method] = recoded
                ordered = [reconstructions[name] for name in row_names]
                scores = scorer.score(torch.stack([item.output for item in ordered]), hr_uint8)
                lr_metrics = lr_scores([item.lr for item in ordered], hr_uint8)
                for item, metrics, lr_metric in zip(ordered, scores, lr_metrics):
                    rows.append({"file": relative, "method": item.method, "bytes": item.num_bytes,
                                 "bpp": 8.0 * item.num_bytes / (hr_uint8.shape[-2] * hr_uint8.shape[-1]), **metrics,
                                 **lr_metric, "quality": item.quality, "target_bytes": item.target_bytes})
                if save_images:
                    _save_outputs(output_dir, relative, {name: reconstructions[name] for name in row_names})
                if progress is not None:
                    grain_text = f", grain {target_bytes} B" if target_bytes is not None else ""
                    progress(f"[{index + 1}/{len(paths)}] {relative}{grain_text}")
        except BaseException as error:  # a file broken past its header, a full disk, Ctrl-C: keep what was done
            stopped = _stopped(error, output_dir, rows, len({row["file"] for row in rows}), len(paths))
            if stopped is error:
                raise
            raise stopped from error

    summary: dict[str, Any] = {
        "methods": summarize(rows, row_names),
        "settings": {
            "folder": str(folder), "images": len(paths), "hr_size": hr_size, "lr_size": lr_size, "resize": resize,
            "methods": method_names, "rows": row_names, "lr_codecs": [str(setting) for setting in recodings],
            "identity_weights": _describe(identity_weights), "arcface": _describe(arcface_model),
            "model": None if model is None else type(model).__name__,
            "model_config": _config_dict(model),
            "upscaler": None if upscaler is None else type(upscaler).__name__,
            "upscaler_config": _config_dict(upscaler),
            "device": str(device), "pillow_settings": PILLOW_SETTINGS, "psnr_cap_db": PSNR_CAP_DB,
            "skipped": [[str(path), reason] for path, reason in listing.skipped],
            "skipped_summary": describe_skipped(listing.skipped),
            **dict(settings or {}),
        },
        "protocol": PROTOCOL,
        "versions": library_versions(),
    }
    write_results(output_dir, rows, summary, title=f"{len(paths)} images, {hr_size} px, LR {lr_size} px")
    (output_dir / PARTIAL_RESULTS).unlink(missing_ok=True)  # an interrupted earlier run's, now superseded
    return summary


def _config_dict(model: Any) -> dict[str, Any] | None:
    config = getattr(model, "config", None)
    if hasattr(config, "as_dict"):
        return config.as_dict()
    return dataclasses.asdict(config) if dataclasses.is_dataclass(config) else None


def _describe(item: Any) -> str | None:
    """A path as itself, an object by its class name (for summary.json's settings)."""
    if item is None:
        return None
    return str(item) if isinstance(item, (str, Path)) else type(item).__name__


