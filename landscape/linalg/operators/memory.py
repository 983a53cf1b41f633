"""Memory accounting for cached autograd graphs."""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch

CPU_CACHE_FRACTION = 0.25
CPU_CACHE_CAP = 8 * 2**30
GPU_CACHE_FRACTION = 0.5


class _Counter:
    """Saved-tensor hooks that add up the bytes of the distinct tensors an autograd graph keeps."""

    def __init__(self) -> None:
        self.bytes = 0
        self._seen: set[int] = set()

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        try:
            storage = tensor.untyped_storage()
            key = storage.data_ptr()
            if key not in self._seen:
                self._seen.add(key)
                self.bytes += storage.nbytes()
        except (RuntimeError, NotImplementedError):  # tensors without storage (functorch wrappers)
            self.bytes += tensor.element_size() * tensor.nelement()
        return tensor


@contextlib.contextmanager
def saved_tensor_bytes() -> Iterator[_Counter]:
    """Count the distinct storage bytes autograd saves for backward inside the block."""
    counter = _Counter()
    with torch.autograd.graph.saved_tensors_hooks(counter.pack, lambda t: t):
        yield counter


def total_memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def graph_cache_budget(device: torch.device) -> int:
    """Bytes we allow for cached gradient graphs: half the free GPU memory, or 1/4 of RAM (<= 8 GiB)."""
    override = os.environ.get("LANDSCAPE_GRAPH_CACHE_BYTES")
    if override:
        return int(float(override))
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(GPU_CACHE_FRACTION * free)
    return int(min(CPU_CACHE_FRACTION * total_memory_bytes(), CPU_CACHE_CAP))


def may_cache(cache: str | bool, already: int, nbytes: int, device: torch.device) -> bool:
    """Whether one more graph of ``nbytes`` may be kept: ``cache`` True/False, or "auto" within the budget."""
    if isinstance(cache, bool):
        return cache
    return (already + 1) * nbytes <= graph_cache_budget(device)
