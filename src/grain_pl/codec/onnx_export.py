"""A GRAIN model as ONNX graphs, to encode and decode where there is no torch (`grain export --onnx DIR`).

    module = GrainModule.from_checkpoint("grain.safetensors")
    export_onnx(module, "grain_onnx")        # encoder.onnx, decoder.onnx, grain_onnx.json, onnx_decode.py

- `encoder.onnx`: `hr` (B, 3, H, H) float32 in [-1, 1] -> `lr` (B, 3, h, h) float32 in [-1, 1], exactly 8-bit
  values (what `GrainModule.encode` returns), `lr_uint8` (B, 3, h, h) uint8 (the levels the LR PNG stores) and
  `lr_unquantized` (the encoder's output before the quantizer).
- `decoder.onnx`: `lr` (B, 3, h, h) float32 in [-1, 1] (an LR PNG's level / 127.5 - 1) -> `hr` (B, 3, H, H) float32
  in [-1, 1] (clamped, as `GrainModule.decode`): the decoder, the latent codes, the StyleGAN2 prior with its fixed
  noise (the eval-mode noise `grain decode` uses) and the fusion.
- `grain_onnx.json`: the sizes, value ranges, pixel mappings, opset and the model they came from.
- `onnx_decode.py`: the decoder's command line, needing only numpy, Pillow and onnxruntime (grain_pl/codec/
  onnx_decode.py, copied).

The batch dimension is dynamic. The graphs are traced from the modules' own forward (`DecodeOptions.baseline()`:
the strips of the inference path are a CPU memory saving, not part of the network) by torch's TorchScript exporter
(it writes through the `onnx` package; the default dynamo exporter would also need onnxscript, which grain_pl does
not depend on). Two places compute the same
thing in an exportable form while tracing: StyleGAN2's modulated conv without per-sample weights (a grouped conv
would fix the batch size) and the antialiased bicubic resizes as matrix products (`grain_pl.networks.resize`);
both equal the eager forms up to float summation order.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import warnings
from pathlib import Path

import torch
from torch import nn

from grain_pl.io.files import DestinationExistsError, write_bytes
from grain_pl.io.images import LEVELS, from_uint8, to_uint8
from grain_pl.networks import GRAIN
from grain_pl.networks.inference import DecodeOptions
from grain_pl.networks.resize import prepare_resize_matrices

__all__ = ["DECODER_FILE", "DECODE_SCRIPT", "ENCODER_FILE", "MANIFEST_FILE", "ONNX_OPSET", "DecoderGraph",
           "EncoderGraph", "check_destination", "export_onnx", "onnx_files", "verify_onnx"]

ONNX_OPSET = 17  # every operator the graphs use is older; 17 runs on onnxruntime >= 1.13
ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"
MANIFEST_FILE = "grain_onnx.json"
DECODE_SCRIPT = "onnx_decode.py"
FORMAT = "grain_pl.onnx/1"
# The batch the graphs are traced with (tracing runs the network once: at the paper preset a whole 1024-px decode);
# the batch dimension of the graphs is dynamic (tests/codec/test_onnx_export.py runs batches of 1 and 3).
EXAMPLE_BATCH = 1


class EncoderGraph(nn.Module):
    """hr -> (lr, lr_uint8, lr_unquantized): `GRAIN.encode` in eval mode, with the PNG's levels and the float LR."""

    def __init__(self, grain: GRAIN) -> None:
        super().__init__()
        self.grain = grain

    def forward(self, hr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        unquantized = self.grain.encoder(hr)
        lr = self.grain.quantize(unquantized)
        return lr, to_uint8(lr), unquantized


class DecoderGraph(nn.Module):
    """lr -> hr: `GrainModule.decode` (the final image, clamped to [-1, 1])."""

    def __init__(self, grain: GRAIN) -> None:
        super().__init__()
        self.grain = grain

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return self.grain.decode(lr).hr_out.clamp(-1, 1)


def onnx_files(folder: str | os.PathLike) -> list[Path]:
    """The files `export_onnx` writes into `folder`."""
    folder = Path(folder)
    return [folder / name for name in (ENCODER_FILE, DECODER_FILE, MANIFEST_FILE, DECODE_SCRIPT)]


def check_destination(folder: str | os.PathLike, overwrite: bool) -> None:
    """Refuse (before any work) a `folder` that is a file, and, without `overwrite`, one holding any of the files
    `export_onnx` writes (DestinationExistsError naming it)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder}: exists and is not a folder (--onnx names the folder to write the graphs into)")
    if not overwrite:
        existing = [path for path in onnx_files(folder) if path.exists()]
        if existing:
            raise DestinationExistsError(existing[0])


@contextlib.contextmanager
def _exportable(grain: GRAIN):
    """Eval mode (rounded quantizer, fixed prior noise) and the modules' own forward, restored afterwards."""
    was_training, options = grain.training, grain.decode_options
    grain.eval()
    if grain.current_noise_mode == "random":
        grain.train(was_training)
        raise ValueError("prior_noise='random' draws new noise at every decode; export a model with prior_noise "
                         "'auto' (the fixed noise buffers in eval mode, as grain decode) or 'const'")
    grain.decode_options = DecodeOptions.baseline()
    try:
        yield
    finally:
        grain.decode_options = options
        grain.train(was_training)


def _graph_bytes(graph: nn.Module, example: torch.Tensor, input_name: str, output_names: list[str],
                 opset: int) -> bytes:
    buffer = io.BytesIO()
    dynamic = {name: {0: "batch"} for name in [input_name, *output_names]}
    with warnings.catch_warnings():
        # the TorchScript exporter's deprecation notice, and tracer notes on the size checks (sizes are fixed)
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, (example,), buffer, dynamo=False, opset_version=opset, input_names=[input_name],
                          output_names=output_names, dynamic_axes=dynamic)
    return buffer.getvalue()


def _manifest(grain: GRAIN, opset: int, model: str | None, preset: str | None, describe: str) -> dict:
    config = grain.config
    hr, lr = config.hr_size, config.lr_size

    def image(size: int, dtype: str = "float32", value_range: tuple[int, int] = (-1, 1)) -> dict:
        return {"shape": ["batch", 3, size, size], "dtype": dtype, "range": list(value_range)}

    from grain_pl import __version__

    return {
        "format": FORMAT,
        "grain_pl": __version__,
        "model": model,
        "preset": preset,
        "describe": describe,
        "config": config.as_dict(),
        "opset": opset,
        "hr_size": hr,
        "lr_size": lr,
        "encoder": {"file": ENCODER_FILE, "inputs": {"hr": image(hr)},
                    "outputs": {"lr": image(lr), "lr_uint8": image(lr, "uint8", (0, LEVELS)),
                                "lr_unquantized": image(lr) | {"range": None}}},
        "decoder": {"file": DECODER_FILE, "inputs": {"lr": image(lr)}, "outputs": {"hr": image(hr)}},
        "pixels": {"to_network": f"value = level / {LEVELS / 2} - 1 (float32)",
                   "from_network": f"level = clip(round((value + 1) * {LEVELS / 2}), 0, {LEVELS}), half to even"},
        "prior_noise": grain.current_noise_mode,  # "const": the fixed noise buffers, as grain decode
    }


def export_onnx(source, folder: str | os.PathLike, *, overwrite: bool = False, opset: int = ONNX_OPSET
                ) -> list[Path]:
    """Write encoder.onnx, decoder.onnx, grain_onnx.json and onnx_decode.py into `folder` (created if needed).

    source: a `GrainModule` (its model name and preset go into the JSON) or a `GRAIN`.
    Raises DestinationExistsError (a FileExistsError) naming the first of those files that exists, before anything
    is written, unless `overwrite`; each file is written atomically. Returns the paths written.
    """
    grain: GRAIN = source.grain if hasattr(source, "grain") else source
    folder = Path(folder)
    check_destination(folder, overwrite)
    config = grain.config
    model = getattr(source, "checkpoint_name", None)
    preset = getattr(source, "preset", None)
    describe = source.describe() if hasattr(source, "describe") else \
        f"GRAIN ({config.hr_size} px, LR {config.lr_size} px)"
    device = next(grain.parameters()).device
    example_hr = torch.zeros(EXAMPLE_BATCH, 3, config.hr_size, config.hr_size, device=device)
    example_lr = torch.zeros(EXAMPLE_BATCH, 3, config.lr_size, config.lr_size, device=device)
    prepare_resize_matrices((config.hr_size, config.lr_size), (config.lr_size, config.hr_size))
    with _exportable(grain), torch.no_grad():
        # in eval mode: the exporter puts the wrapper back in its mode afterwards, and with it the whole network
        encoder = _graph_bytes(EncoderGraph(grain).eval(), example_hr, "hr", ["lr", "lr_uint8", "lr_unquantized"],
                               opset)
        decoder = _graph_bytes(DecoderGraph(grain).eval(), example_lr, "lr", ["hr"], opset)
        manifest = json.dumps(_manifest(grain, opset, model, preset, describe), indent=2) + "\n"
    script = Path(__file__).with_name(DECODE_SCRIPT)
    encoder_path, decoder_path, manifest_path, script_path = onnx_files(folder)
    written = [
        write_bytes(encoder, encoder_path, overwrite=overwrite),
        write_bytes(decoder, decoder_path, overwrite=overwrite),
        write_bytes(manifest.encode(), manifest_path, overwrite=overwrite),
        write_bytes(script.read_bytes(), script_path, overwrite=overwrite),
    ]
    shutil.copymode(script, script_path)  # executable as the original
    return written



def verify_onnx(source, folder: str | os.PathLike, batch_size: int = 2, seed: int = 0,
                threads: int = 0) -> dict[str, float]:
    """Run the exported graphs with onnxruntime on a random batch (HR: uniform noise; LR: random 8-bit levels)
    and return the largest absolute difference of each output from the PyTorch modules'."""
    import onnxruntime

    grain: GRAIN = source.grain if hasattr(source, "grain") else source
    config = grain.config
    generator = torch.Generator().manual_seed(seed)
    hr = torch.rand(batch_size, 3, config.hr_size, config.hr_size, generator=generator) * 2 - 1
    lr = from_uint8(torch.randint(0, LEVELS + 1, (batch_size, 3, config.lr_size, config.lr_size),
                                  generator=generator))
    device = next(grain.parameters()).device
    with _exportable(grain), torch.no_grad():
        expected = dict(zip(("lr", "lr_uint8", "lr_unquantized"), EncoderGraph(grain)(hr.to(device))))
        expected["hr"] = DecoderGraph(grain)(lr.to(device))
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    differences = {}
    for name, inputs in ((ENCODER_FILE, {"hr": hr}), (DECODER_FILE, {"lr": lr})):
        session = onnxruntime.InferenceSession(str(Path(folder) / name), options,
                                               providers=["CPUExecutionProvider"])
        outputs = session.run(None, {key: value.numpy() for key, value in inputs.items()})
        for output, value in zip(session.get_outputs(), outputs):
            reference = expected[output.name].cpu().double()
            differences[output.name] = float((torch.from_numpy(value).double() - reference).abs().max())
    return differences
