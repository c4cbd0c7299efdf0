"""--device, checked once: a torch device of a kind the benchmark runs on and that is visible here."""

from __future__ import annotations

import torch
from vae_collapse_bench.bench.errors import BenchError, plain


def check_device(name: str) -> torch.device:
    """cpu, cuda or cuda:N that is visible here; else a BenchError naming the fix."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise BenchError(f"unknown --device {plain(name)}: use cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise BenchError(f"--device {plain(name)}: bench runs on cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BenchError(f"--device {plain(name)}: no CUDA device is visible here; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise BenchError(f"--device {plain(name)}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    return device
