"""Time and peak memory of the GRAIN network, per module and whole, at a preset (default: the paper's 1024 px).

    python benchmarks/bench_network.py                      # what `make bench` runs
    python benchmarks/bench_network.py --preset tiny-64-lr8 --cases forward:whole train:stage1
    python benchmarks/bench_network.py --cases decode:baseline decode:fast --rounds 2   # before/after, interleaved

Each case runs in a fresh subprocess, so one case's allocations never count towards another's. Peak memory is
the process's resident-set high-water mark (VmHWM, reset through /proc/self/clear_refs right before the
measured call) minus the resident set just before it: what the call itself needs on top of weights and
inputs. On a GPU (`--device cuda`) it is torch.cuda.max_memory_allocated instead. fp32, batch 1 by default.

The `decode:*` cases are `GRAIN.decode` as the codec runs it (inference mode), with `decode:baseline` the modules'
own forward (`DecodeOptions.baseline()`), `decode:fast` the default inference path (also checked against the
baseline: its largest pixel difference is printed) and `decode:bf16` its opt-in bf16 autocast (only where the
CPU has native bf16; its PSNR against fp32 is printed). Their "peak total" is the process's whole resident-set
high-water mark, weights included. `--rounds N` runs every case N times, interleaved (before, after, before,
after, ...), so that a busy machine slows both alike; the ratio table compares each case with `decode:baseline`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from measure import machine_description, run_isolated, timed_repeats, total_peak_bytes, write_json

DECODE_CASES = ["decode:baseline", "decode:fast", "decode:bf16"]
CASES = DECODE_CASES + ["forward:encoder", "forward:decoder", "forward:latent_codes", "forward:generator",
                        "forward:fusion", "forward:whole", "train:stage1", "train:stage1+checkpointing"]


def run_case(case: str, preset: str, batch: int, repeats: int, device: str, warmup: int = 0) -> dict:
    import torch
    import torch.nn.functional as F

    from grain_pl.networks import GRAIN, get_preset

    torch.manual_seed(0)
    config = get_preset(preset)
    grain = GRAIN(config, checkpointing=case.endswith("+checkpointing")).to(device)
    hr = (torch.rand(batch, 3, config.hr_size, config.hr_size, device=device) * 2 - 1)
    extra: dict = {}

    if case.startswith("decode:"):
        from grain_pl.networks.inference import DecodeOptions

        grain.eval()
        variant = case.split(":", 1)[1]
        grain.decode_options = {"baseline": DecodeOptions.baseline(), "fast": DecodeOptions(),
                                "bf16": DecodeOptions(bf16=True) if variant == "bf16" else None}[variant]
        with torch.inference_mode():
            lr = grain.encode(hr)
        del hr
        outputs = []
        hold = ()

        def step() -> None:
            with torch.inference_mode():
                outputs.append(grain.decode(lr).hr_out.clamp(-1, 1))
                del outputs[:-1]
    elif case.startswith("forward:"):
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
    peak_total = total_peak_bytes(device)
    if case in ("decode:fast", "decode:bf16"):  # the same decode without the optimisation, for comparison
        from grain_pl.networks.inference import DecodeOptions

        grain.decode_options = DecodeOptions.baseline() if case == "decode:fast" else DecodeOptions()
        with torch.inference_mode():
            reference = grain.decode(lr).hr_out.clamp(-1, 1)
        difference = (outputs[-1] - reference).abs()
        mse = float((difference**2).mean())
        extra = {"max_abs_difference": float(difference.max()),
                 "psnr_db": 10 * torch.log10(torch.tensor(4.0 / mse)).item() if mse > 0 else float("inf"),
                 "compared_with": "decode:baseline" if case == "decode:fast" else "decode:fast"}
    del hold
    return {**extra, "peak_total_bytes": peak_total,
            "case": case, "preset": preset, "batch": batch, "device": device, "threads": torch.get_num_threads(),
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
    parser.add_argument("--rounds", type=int, default=1, help="run the case list this many times, interleaved")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one case in this process
    args = parser.parse_args()

    if args.one:
        print(json.dumps(run_case(args.one, args.preset, args.batch, args.repeats, args.device, args.warmup)))
        return

    from grain_pl.networks.inference import cpu_has_native_bf16

    cases = [case for case in args.cases if case != "decode:bf16" or cpu_has_native_bf16() or args.device != "cpu"]
    print(machine_description())
    results = []
    print("| case | preset | batch | device | median time (s) | peak extra memory (GiB) | peak total (GiB) | note |")
    print("|---|---|---|---|---|---|---|---|")
    for _ in range(args.rounds):
        for case in cases:
            command = [sys.executable, __file__, "--one", case, "--preset", args.preset, "--batch", str(args.batch),
                       "--repeats", str(args.repeats), "--warmup", str(args.warmup), "--device", args.device]
            result = run_isolated(command, case)
            if result is None:
                continue
            results.append(result)
            note = ""
            if "max_abs_difference" in result:
                note = (f"vs {result['compared_with']}: max |diff| {result['max_abs_difference']:.2g}, "
                        f"PSNR {result['psnr_db']:.1f} dB")
            print(f"| {case} | {args.preset} | {args.batch} | {args.device} ({result['threads']} threads) | "
                  f"{result['median_seconds']:.2f} | {result['peak_bytes'] / 2**30:.2f} | "
                  f"{result['peak_total_bytes'] / 2**30:.2f} | {note} |", flush=True)
    print_ratios(results)
    write_json(results, args.json)


def print_ratios(results: list[dict]) -> None:
    """Each case against decode:baseline: medians over the rounds, as ratios (time: baseline / case)."""
    by_case: dict[str, list[dict]] = {}
    for result in results:
        by_case.setdefault(result["case"], []).append(result)
    if "decode:baseline" not in by_case or len(by_case) < 2:
        return
    base = by_case.pop("decode:baseline")
    base_time = statistics.median(r["median_seconds"] for r in base)
    base_peak = statistics.median(r["peak_total_bytes"] for r in base)
    print()
    print(f"| case | time (s) | speed-up vs decode:baseline ({base_time:.2f} s) | peak total (GiB) | "
          f"peak vs baseline ({base_peak / 2**30:.2f} GiB) |")
    print("|---|---|---|---|---|")
    for case, runs in by_case.items():
        seconds = statistics.median(r["median_seconds"] for r in runs)
        peak = statistics.median(r["peak_total_bytes"] for r in runs)
        print(f"| {case} | {seconds:.2f} | {base_time / seconds:.2f}x | {peak / 2**30:.2f} | "
              f"{peak / base_peak:.2f}x |")


if __name__ == "__main__":
    main()
