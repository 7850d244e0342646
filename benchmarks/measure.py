"""What the benchmark scripts share: peak memory of a block, timed repeats, one measurement per fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def _rss_bytes(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


class PeakMemory:
    """Additional memory a block of code needs at its peak (CPU: VmHWM - VmRSS before; CUDA: allocator peak)."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.peak = 0

    def __enter__(self) -> PeakMemory:
        import gc

        import torch

        gc.collect()
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.before = torch.cuda.memory_allocated()
        else:
            with open("/proc/self/clear_refs", "w") as clear_refs:
                clear_refs.write("5")  # resets VmHWM to the current RSS
            self.before = _rss_bytes("VmRSS")
        return self

    def __exit__(self, *exc) -> None:
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.before
        else:
            self.peak = _rss_bytes("VmHWM") - self.before


def total_peak_bytes(device: str) -> int:
    """The process's whole peak so far (weights included): VmHWM on the CPU, the allocator's peak on CUDA. Read it
    right after the measured calls (PeakMemory resets VmHWM when a measurement starts)."""
    if device == "cuda":
        import torch

        return torch.cuda.max_memory_allocated()
    return _rss_bytes("VmHWM")


def machine_description() -> str:
    """One line naming the CPU (model, vector flags), the cores this process may use, torch's threads and the load."""
    import torch

    model, flags = "unknown CPU", []
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name") and model == "unknown CPU":
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = [flag for flag in line.split(":", 1)[1].split()
                             if flag.startswith(("avx", "amx", "fma"))]
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"Machine: {model}; {' '.join(flags) or 'no AVX flags'}; {len(os.sched_getaffinity(0))} cores usable, "
            f"torch {torch.__version__} with {torch.get_num_threads()} threads; load average {load:.1f} at the start")


def synchronize(device: str) -> None:
    """Wait for queued CUDA work, so that a timer stops after the work and not after its launch."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def timed_repeats(call: Callable[[], object], repeats: int, device: str) -> tuple[list[float], list[int]]:
    """Run `call` `repeats` times; the wall time and the peak extra memory of each run."""
    times, peaks = [], []
    for _ in range(repeats):
        with PeakMemory(device) as memory:
            start = time.perf_counter()
            call()
            synchronize(device)
            times.append(time.perf_counter() - start)
        peaks.append(memory.peak)
    return times, peaks


def run_isolated(command: list[str], label: str) -> dict | None:
    """Run one measurement in a fresh process (whose last stdout line is its JSON result), so that no other
    measurement's allocations count towards its peak. On failure, print a table row naming `label` and the
    error, and return None."""
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "?"
        print(f"| {label} | failed: {tail} |", flush=True)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def write_json(results: list[dict], path: Path | None) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2))
