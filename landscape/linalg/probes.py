"""Random probe vectors drawn from seeded generators (deterministic for a given seed)."""

from __future__ import annotations

import torch

DISTRIBUTIONS = ("rademacher", "gaussian")


def probes(n: int, k: int, generator: torch.Generator, distribution: str = "rademacher",
           dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu") -> torch.Tensor:
    """k probe columns (n, k): Rademacher +-1 entries (each sign with probability 1/2) or N(0, 1)."""
    if distribution == "rademacher":
        v = torch.randint(0, 2, (n, k), generator=generator, dtype=torch.int8).to(torch.float64) * 2 - 1
    elif distribution == "gaussian":
        v = torch.randn(n, k, generator=generator, dtype=torch.float64)
    else:
        raise ValueError(f"distribution must be one of {', '.join(DISTRIBUTIONS)}")
    return v.to(device=device, dtype=dtype)


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))
