"""Time and peak memory of the GRAIN network, per module and whole, at a preset (default: the paper's 1024 px).

    python benchmarks/bench_network.py                      # what `make bench` runs
    python benchmarks/bench_network.py --preset tiny-64-lr8 --cases forward:whole train:stage1

Each case runs in a fresh subprocess, so one case's allocations never count towards another's. Peak memory is
the process's resident-set high-water mark (VmHWM, reset through /proc/self/clear_refs right before the
measured call) minus the resident set just before it: what the call itself needs on top of weights and
inputs. On a GPU (`--device cuda`) it is torch.cuda.max_memory_allocated instead. fp32, batch 1 by default.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from measure import run_isolated, timed_repeats, write_json

CASES = ["forward:encoder", "forward:decoder", "forward:latent_codes", "forward:generator", "forward:fusion",
         "forward:whole", "train:stage1", "train:stage1+checkpointing"]


def run_case(case: str, preset: str, batch: int, repeats: int, device: str, warmup: int = 0) -> dict:
    import torch
    import torch.nn.functional as F

    from grain_pl.networks import GRAIN, get_preset

    torch.manual_seed(0)
    config = get_preset(preset)
    grain = GRAIN(config, checkpointing=case.endswith("+checkpointing")).to(device)
    hr = (torch.rand(batch, 3, config.hr_size, config.hr_size, device=device) * 2 - 1)

    if case.startswith("forward:"):
        grain.eval()
        part = case.split(":", 1)[1]
        with torch.inference_mode():  # inputs of the measured part, computed outside the measurement
            lr = grain.encode(hr)
            _, decoder_features = grain.decoder(lr)
            w_plus = grain.latent_codes(decoder_features)
            prior_features = grain.generator.synthesize(w_plus, noise_mode="const", return_features=True).features
        calls = {
            "encoder": lambda: grain.encoder(hr),
            "decoder": lambda: grain.decoder(lr),
            "latent_codes": lambda: grain.latent_codes(decoder_features),
            "generator": lambda: grain.generator.synthesize(w_plus, noise_mode="const", return_features=True),
            "fusion": lambda: grain.fusion(decoder_features, prior_features),
            "whole": lambda: grain(hr),
        }
        if part != "whole":  # the whole forward must not keep the other parts' inputs alive
            hold = (lr, decoder_features, w_plus, prior_features)
        else:
            del lr, decoder_features, w_plus, prior_features
            hold = ()

        def step() -> None:
            with torch.inference_mode():
                calls[part]()
    else:
        grain.train()
        hold = ()
        trainable = list(grain.encoder.parameters()) + list(grain.decoder.parameters())
        optimizer = torch.optim.Adam(trainable, lr=1e-4)
        lr_target = F.interpolate(hr, size=(config.lr_size, config.lr_size), mode="bilinear", align_corners=False)

        def step() -> None:  # stage 1: encoder + quantizer + decoder, L2 on y_inv and on the LR
            optimizer.zero_grad(set_to_none=True)
            out = grain.rescale(hr)
            loss = F.mse_loss(out.y_inv, hr) + 0.1 * F.mse_loss(out.lr, lr_target)
            loss.backward()
            optimizer.step()

    for _ in range(warmup):
        step()
    times, peaks = timed_repeats(step, repeats, device)
    del hold
    return {"case": case, "preset": preset, "batch": batch, "device": device, "threads": torch.get_num_threads(),
            "seconds": times, "median_seconds": statistics.median(times), "peak_bytes": max(peaks),
            "weights_bytes": sum(p.numel() * p.element_size() for p in grain.parameters())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="paper-1024-lr16")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2, help="measured runs per case (the median is reported)")
    parser.add_argument("--warmup", type=int, default=0, help="unmeasured runs first (use 1+ for small presets)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--cases", nargs="+", default=CASES, choices=CASES)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one case in this process
    args = parser.parse_args()

    if args.one:
        print(json.dumps(run_case(args.one, args.preset, args.batch, args.repeats, args.device, args.warmup)))
        return

    results = []
    print("| case | preset | batch | device | median time (s) | peak extra memory (GiB) |")
    print("|---|---|---|---|---|---|")
    for case in args.cases:
        command = [sys.executable, __file__, "--one", case, "--preset", args.preset, "--batch", str(args.batch),
                   "--repeats", str(args.repeats), "--warmup", str(args.warmup), "--device", args.device]
        result = run_isolated(command, case)
        if result is None:
            continue
        results.append(result)
        print(f"| {case} | {args.preset} | {args.batch} | {args.device} ({result['threads']} threads) | "
              f"{result['median_seconds']:.2f} | {result['peak_bytes'] / 2**30:.2f} |", flush=True)
    write_json(results, args.json)


if __name__ == "__main__":
    main()
