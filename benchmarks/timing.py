"""Timing helper shared by the benchmark scripts (run as ``python benchmarks/NAME.py``, which puts this
folder on the import path)."""

from __future__ import annotations

import torch


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA kernels run asynchronously); a no-op elsewhere."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
