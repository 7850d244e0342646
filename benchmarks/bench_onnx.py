"""ONNX export at a preset: export time, file sizes, and one decode by PyTorch and by onnxruntime at the same
thread count, with the largest difference between them.

    python benchmarks/bench_onnx.py                                      # paper-1024-lr16, 1 thread
    python benchmarks/bench_onnx.py --preset demo-64-lr8 --threads 2

Random weights of the preset (seed 0; the cost does not depend on them), batch 1, fp32, CPU. PyTorch decodes as
`grain decode` does (`GrainModule.decode`: the inference path, `DecodeOptions()`); onnxruntime runs decoder.onnx
(traced from the modules' own forward) with `intra_op_num_threads` = the same count. One run each, PyTorch first,
without a warm-up (a decode at 1024 px takes a minute; one-time costs are small against it; onnxruntime's session
creation is timed apart). The machine and its load are printed with the result: on a shared machine, read the two
times as one sample each; the CPU times (all threads of the process) are less sensitive to other work.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from measure import machine_description, total_peak_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="paper-1024-lr16")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import numpy as np
    import onnxruntime
    import torch

    from grain_pl.codec import GrainModule
    from grain_pl.codec.onnx_export import export_onnx
    from grain_pl.io.images import from_uint8, to_uint8

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    module = GrainModule(network=args.preset).eval()
    config = module.config
    lr = from_uint8(torch.randint(0, 256, (1, 3, config.lr_size, config.lr_size),
                                  generator=torch.Generator().manual_seed(0)))
    result: dict = {"preset": args.preset, "threads": args.threads, "machine": machine_description()}
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        written = export_onnx(module, folder)
        result["export_seconds"] = time.perf_counter() - start
        result["file_mib"] = {path.name: path.stat().st_size / 2**20 for path in written}

        start, cpu_start = time.perf_counter(), time.process_time()
        expected = module.decode(lr)
        result["torch_decode_seconds"] = time.perf_counter() - start
        result["torch_decode_cpu_seconds"] = time.process_time() - cpu_start

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = args.threads
        start = time.perf_counter()
        session = onnxruntime.InferenceSession(str(Path(folder) / "decoder.onnx"), options,
                                               providers=["CPUExecutionProvider"])
        result["onnxruntime_load_seconds"] = time.perf_counter() - start
        start, cpu_start = time.perf_counter(), time.process_time()
        (hr,) = session.run(None, {"lr": lr.numpy()})
        result["onnxruntime_decode_seconds"] = time.perf_counter() - start
        result["onnxruntime_decode_cpu_seconds"] = time.process_time() - cpu_start
    result["max_abs_difference"] = float(np.abs(hr - expected.numpy()).max())
    levels = np.abs(to_uint8(torch.from_numpy(hr)).numpy().astype(int) - to_uint8(expected).numpy().astype(int))
    result["max_level_difference"] = int(levels.max())
    result["unclamped_fraction"] = float((np.abs(expected.numpy()) < 0.99).mean())
    result["torch_output_std_min_max"] = [float(expected.std()), float(expected.min()), float(expected.max())]
    result["peak_total_gib"] = total_peak_bytes("cpu") / 2**30
    result["load_average_1min_after"] = os.getloadavg()[0]
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
