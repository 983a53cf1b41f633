"""torch.distributed helpers: the same commands run under ``torchrun`` (NCCL on GPUs, gloo on CPUs).

Outside a process group every helper is a no-op for a single process (rank 0 of 1), so library code
calls them unconditionally. Only rank 0 writes files.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist


def initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if initialized() else 1


def is_main() -> bool:
    return rank() == 0


def init_from_environment() -> bool:
    """Join the process group torchrun describes (WORLD_SIZE > 1 in the environment); True if joined.

    CUDA machines use NCCL with one device per local rank; otherwise gloo."""
    if initialized() or not dist.is_available():
        return initialized()
    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1 or "MASTER_ADDR" not in os.environ:
        return False  # one process (a WORLD_SIZE without torchrun's rendezvous variables is not a group)
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")
    return True


def barrier() -> None:
    if initialized():
        dist.barrier()


def broadcast(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (picklable Python objects; tensors travel on the CPU)."""
    if not initialized():
        return obj
    box = [obj if rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather(obj: Any, dst: int = 0) -> list[Any] | None:
    """Every rank's ``obj`` as a list on rank ``dst`` (None elsewhere)."""
    if not initialized():
        return [obj]
    out = [None] * world_size() if rank() == dst else None
    dist.gather_object(obj, out, dst=dst)
    return out


def all_gather(obj: Any) -> list[Any]:
    """Every rank's ``obj`` as a list (in rank order) on every rank."""
    if not initialized():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def block(n: int) -> tuple[int, int]:
    """This rank's contiguous block [start, stop) of n items split as evenly as possible over the ranks
    (rank r of W gets items floor(r n / W) to floor((r + 1) n / W); the blocks cover 0..n-1 in rank order)."""
    size, me = world_size(), rank()
    return me * n // size, (me + 1) * n // size


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """In-place sum over the ranks (no-op for one process)."""
    if initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def shutdown() -> None:
    """Wait for every rank, then leave the group (a rank exiting while others still talk can abort gloo)."""
    if initialized():
        dist.barrier()
        dist.destroy_process_group()
