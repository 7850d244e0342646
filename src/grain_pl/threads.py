"""How grain_pl's processes wait for their CPU threads: one policy, applied when grain_pl is imported.

torch runs its CPU operations on OpenMP threads (one per core). At the end of every parallel region the threads
that are done wait for the last one; by default they spin (burn CPU) for a while before they sleep. On a machine
whose cores are shared with another CPU-bound process that is the wrong choice: the thread that is not done has
been descheduled to let the other process run, and the spinning threads take the CPU time it needs, at every one
of the thousands of parallel regions of a training step. With a busy-loop process alongside on 2 cores, a stage-1
step at 1024 px took 3.3x its time on the idle machine (docs/benchmarks.md). Waiting threads that sleep at once
(`OMP_WAIT_POLICY=PASSIVE`) give it back; on an idle machine the cost is a wake-up per region, which the same
benchmark measures.

`apply_thread_policy` sets `OMP_WAIT_POLICY=PASSIVE` unless the variable is already set (the user's choice wins) or
`GRAIN_PL_THREAD_POLICY=0`. OpenMP reads it once, when torch is loaded: `grain_pl/__init__.py` applies it before it
imports torch, so every `grain` command and every program that imports grain_pl before torch gets it; a program
that imported torch first keeps torch's default (set the variable in the environment instead).
"""

from __future__ import annotations

import os
import sys

POLICY_VARIABLE = "GRAIN_PL_THREAD_POLICY"


def apply_thread_policy() -> bool:
    """Set OMP_WAIT_POLICY=PASSIVE for the OpenMP runtime torch is about to load; True if it was set here."""
    if os.environ.get(POLICY_VARIABLE, "1") == "0" or "OMP_WAIT_POLICY" in os.environ:
        return False
    if "torch" in sys.modules:  # too late: OpenMP has read its settings
        return False
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True
