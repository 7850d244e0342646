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
after, ...), so that a busy machine slows both alike.

The `stage1:*`, `stage3:*` and `final:*` cases are one generator-side training step of the real stage (its
`generate`, its losses without identity and discriminator: pixel + LPIPS at full size + the LR guidance where the
stage has it, and an Adam step), `:baseline` with today's path (`MemoryOptions.baseline()`, no thread policy) and
`:lean` with the defaults. The ratio table compares every case with its family's baseline (`decode:baseline`,
`stage1:baseline`, ...). Modifiers (`final:lean@loaded`): `@loaded` runs a busy-loop process alongside; `@passive` /
`@spin` set OMP_WAIT_POLICY; `@threads1` one torch thread; `@default` without grain_pl's thread policy.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from measure import machine_description, run_isolated, timed_repeats, total_peak_bytes, write_json

DECODE_CASES = ["decode:baseline", "decode:fast", "decode:bf16"]
# A training step of a real stage (its generate, its losses, Adam), today's path vs the lean one (MemoryOptions).
STAGE_CASES = [f"{stage}:{variant}" for stage in ("stage1", "stage2", "stage3", "final")
               for variant in ("baseline", "lean")]
# Not in `make bench`: the final stage with its decoder's scales from 1024 (or 512) px up checkpointed too
# (MemoryOptions' decoder_checkpoint_size, off by default).
STAGE_CASES += ["final:lean+decoder1024", "final:lean+decoder512"]
# What `make bench` runs: today's code against the current one, decode and a step of each training stage.
BENCH_CASES = ["decode:baseline", "decode:fast"] + [case for case in STAGE_CASES if "+" not in case]
CASES = DECODE_CASES + STAGE_CASES + [
    "forward:encoder", "forward:decoder", "forward:latent_codes", "forward:generator", "forward:fusion",
    "forward:whole", "train:stage1", "train:stage1+checkpointing"]
# Suffixes that change how a case runs: "@passive" OMP_WAIT_POLICY=PASSIVE, "@spin" OMP_WAIT_POLICY=ACTIVE,
# "@threads1" torch.set_num_threads(1), "@default" without grain_pl's thread policy (grain_pl/threads.py; the
# ":baseline" cases never have it: they are today's code); "@loaded" a busy-loop process alongside.
MODIFIERS = ("passive", "spin", "threads1", "default", "loaded")


def run_case(case: str, preset: str, batch: int, repeats: int, device: str, warmup: int = 0,
             prior: str | None = None) -> dict:
    import torch
    import torch.nn.functional as F

    from grain_pl.networks import GRAIN, get_preset

    case, *modifiers = case.split("@")
    if "threads1" in modifiers:
        torch.set_num_threads(1)
    torch.manual_seed(0)
    config = get_preset(preset)
    extra: dict = {}
    if case in STAGE_CASES:
        stage, step, hold = build_stage_step(case, preset, batch, device, prior)
        grain = stage.grain
    else:
        grain = GRAIN(config, checkpointing=case.endswith("+checkpointing")).to(device)
        hr = (torch.rand(batch, 3, config.hr_size, config.hr_size, device=device) * 2 - 1)
    if case in STAGE_CASES:
        pass  # built above
    elif case.startswith("decode:"):
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
            "case": "@".join([case, *modifiers]), "preset": preset, "batch": batch, "device": device,
            "threads": torch.get_num_threads(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
            "seconds": times, "median_seconds": statistics.median(times), "peak_bytes": max(peaks),
            "weights_bytes": sum(p.numel() * p.element_size() for p in grain.parameters())}


def build_stage_step(case: str, preset: str, batch: int, device: str, prior: str | None):
    """A training step of the stage `case` names, as its training_step runs the generator side: the stage's
    `generate`, its losses (pixel + LPIPS at full size + the LR guidance where the stage has it; no identity, no
    discriminator) and an Adam step. "baseline" is today's path (`MemoryOptions.baseline()`), "lean" the default."""
    import torch

    from grain_pl.losses import LossWeights
    from grain_pl.networks import get_preset
    from grain_pl.networks.training_memory import MemoryOptions
    from grain_pl.stages import FinalStage, Stage1, Stage2, Stage3

    name, variant = case.split(":")
    stage_class = {"stage1": Stage1, "stage2": Stage2, "stage3": Stage3, "final": FinalStage}[name]
    weights = LossWeights(identity=0.0, adversarial=0.0, lr=stage_class.default_lr_weight)
    memory = {"baseline": MemoryOptions.baseline(), "lean": MemoryOptions(),
              "lean+decoder1024": MemoryOptions(decoder_checkpoint_size=1024),
              "lean+decoder512": MemoryOptions(decoder_checkpoint_size=512)}[variant]
    stage = stage_class(network=preset, prior_path=prior if stage_class.needs_prior else None, loss_weights=weights,
                        memory=memory, metrics_lpips=False).to(device)
    stage.train()
    config = get_preset(preset)
    hr = torch.rand(batch, 3, config.hr_size, config.hr_size, device=device) * 2 - 1
    (optimizer,) = stage.configure_optimizers()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        out = stage.generate(hr)
        total, _ = stage.generator_losses(out, hr)
        total.backward()
        optimizer.step()

    return stage, step, (hr,)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="paper-1024-lr16")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2, help="measured runs per case (the median is reported)")
    parser.add_argument("--warmup", type=int, default=0, help="unmeasured runs first (use 1+ for small presets)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--cases", nargs="+", default=BENCH_CASES, type=checked_case,
                        help=f"cases, each optionally with modifiers ({', '.join('@' + m for m in MODIFIERS)})")
    parser.add_argument("--prior", help="a StyleGAN2 prior file for the stage-3 and final cases (default: a random "
                                        "one of the preset's size, built once)")
    parser.add_argument("--rounds", type=int, default=1, help="run the case list this many times, interleaved")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one case in this process
    args = parser.parse_args()

    if args.one:
        import grain_pl  # noqa: F401  (before torch: grain_pl's thread policy, grain_pl/threads.py)

        print(json.dumps(run_case(args.one, args.preset, args.batch, args.repeats, args.device, args.warmup,
                                  args.prior)))
        return

    from grain_pl.networks.inference import cpu_has_native_bf16

    cases = [case for case in args.cases
             if not case.startswith("decode:bf16") or cpu_has_native_bf16() or args.device != "cpu"]
    print(machine_description())
    with tempfile.TemporaryDirectory() as tmp:
        if args.prior is None and any(case.split(":")[0] in ("stage3", "final") for case in cases):
            args.prior = str(Path(tmp) / "prior.pt")
            build_random_prior(args.preset, args.prior)
        results = run_cases(cases, args)
    print_ratios(results)
    write_json(results, args.json)


def checked_case(text: str) -> str:
    case, *modifiers = text.split("@")
    if case not in CASES or any(modifier not in MODIFIERS for modifier in modifiers):
        raise argparse.ArgumentTypeError(f"unknown case {text!r}; cases: {', '.join(CASES)}; modifiers: "
                                         f"{', '.join('@' + m for m in MODIFIERS)}")
    return text


def build_random_prior(preset: str, path: str) -> None:
    from bench_stages import build_prior

    from grain_pl.networks import get_preset

    build_prior(get_preset(preset), Path(path))


def run_cases(cases: list[str], args: argparse.Namespace) -> list[dict]:
    results = []
    print("| case | preset | batch | device | median time (s) | peak extra memory (GiB) | peak total (GiB) | note |")
    print("|---|---|---|---|---|---|---|---|")
    for round_index in range(args.rounds):
        for case in cases if round_index % 2 == 0 else cases[::-1]:  # reversed every other round
            command = [sys.executable, __file__, "--one", case, "--preset", args.preset, "--batch", str(args.batch),
                       "--repeats", str(args.repeats), "--warmup", str(args.warmup), "--device", args.device]
            if args.prior:
                command += ["--prior", args.prior]
            result = run_with_modifiers(command, case)
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
    return results


def run_with_modifiers(command: list[str], case: str) -> dict | None:
    """One fresh process for `case`, with the environment its modifiers ask for (and a busy loop for @loaded)."""
    modifiers = case.split("@")[1:]
    env = {}
    if "passive" in modifiers:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    if "spin" in modifiers:
        env["OMP_WAIT_POLICY"] = "ACTIVE"
    if "default" in modifiers or case.split("@")[0].endswith(":baseline"):  # today's code: no thread policy
        env["GRAIN_PL_THREAD_POLICY"] = "0"
    saved = dict(os.environ)
    os.environ.update(env)
    # In its own session: under Linux's autogroup scheduling a process of the same session would share this
    # session's CPU share instead of competing like another user's job (a 1.5x instead of a 2x-or-worse slowdown).
    busy = (subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
            if "loaded" in modifiers else None)
    try:
        return run_isolated(command, case)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
        os.environ.clear()
        os.environ.update(saved)


def baseline_of(case: str) -> str:
    """The case a case is compared with: its family's baseline ("final:lean@loaded" -> "final:baseline"), and for a
    case with modifiers other than @loaded, the same case without them."""
    name, *modifiers = case.split("@")
    family = name.split(":")[0]
    return f"{family}:baseline" if family in ("decode", "stage1", "stage2", "stage3", "final") else name


def print_ratios(results: list[dict]) -> None:
    """One table: every case against its family's baseline (decode, stage1, stage2, stage3, final), medians over the
    rounds; time as a ratio (case / baseline: below 1 is faster) and as a speed-up, peak total as a ratio."""
    by_case: dict[str, list[dict]] = {}
    for result in results:
        by_case.setdefault(result["case"], []).append(result)
    if len(by_case) < 2:
        return

    def median(case: str, key: str) -> float:
        return statistics.median(r[key] for r in by_case[case])

    print()
    print("| case | time (s) | peak total (GiB) | vs | time ratio | speed-up | peak ratio | rounds |")
    print("|---|---|---|---|---|---|---|---|")
    for case in by_case:
        seconds, peak = median(case, "median_seconds"), median(case, "peak_total_bytes")
        base = baseline_of(case)
        if base == case or base not in by_case:
            print(f"| {case} | {seconds:.2f} | {peak / 2**30:.2f} | | | | | {len(by_case[case])} |")
            continue
        base_seconds, base_peak = median(base, "median_seconds"), median(base, "peak_total_bytes")
        print(f"| {case} | {seconds:.2f} | {peak / 2**30:.2f} | {base} | {seconds / base_seconds:.2f}x | "
              f"{base_seconds / seconds:.2f}x | {peak / base_peak:.2f}x | {len(by_case[case])} |")


if __name__ == "__main__":
    main()
