"""Encode and decode latency and peak memory of the codec (`GrainModule.encode` / `decode`), batch 1, fp32.

    python benchmarks/bench_codec.py                                   # paper-1024-lr16 and demo-64-lr8
    python benchmarks/bench_codec.py --presets demo-64-lr8 --repeats 5

Random weights of the preset (the cost does not depend on them). Each preset runs in a fresh process; the first
call of each kind is a warm-up. Peak memory is measured as in measure.py (what the call needs on top of
the weights and its input). The LR PNG size is not reported here: it depends on trained weights (see the demo's
metrics.json and `grain evaluate`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from measure import run_isolated, timed_repeats, write_json


def run_preset(preset: str, repeats: int, device: str) -> dict:
    import torch

    from grain_pl.codec import GrainModule

    torch.manual_seed(0)
    model = GrainModule(network=preset).to(device)
    size = model.config.hr_size
    hr = torch.rand(1, 3, size, size, device=device) * 2 - 1
    lr = model.encode(hr)
    model.decode(lr)  # warm-up
    results = {}
    for name, call in (("encode", lambda: model.encode(hr)), ("decode", lambda: model.decode(lr))):
        times, peaks = timed_repeats(call, repeats, device)
        results[name] = {"median_seconds": statistics.median(times), "seconds": times, "peak_bytes": max(peaks)}
    return {"preset": preset, "device": device, "threads": torch.get_num_threads(), **results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["paper-1024-lr16", "demo-64-lr8"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_preset(args.one, args.repeats, args.device)))
        return
    results = []
    print("| preset | device | encode (s) | encode peak (MiB) | decode (s) | decode peak (MiB) |")
    print("|---|---|---|---|---|---|")
    for preset in args.presets:
        command = [sys.executable, __file__, "--one", preset, "--repeats", str(args.repeats), "--device",
                   args.device]
        result = run_isolated(command, preset)
        if result is None:
            continue
        results.append(result)
        encode, decode = result["encode"], result["decode"]
        print(f"| {preset} | {args.device} ({result['threads']} threads) | {encode['median_seconds']:.4f} | "
              f"{encode['peak_bytes'] / 2**20:.0f} | {decode['median_seconds']:.4f} | "
              f"{decode['peak_bytes'] / 2**20:.0f} |", flush=True)
    write_json(results, args.json)


if __name__ == "__main__":
    main()
