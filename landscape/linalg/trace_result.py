"""The result type of the trace estimators and the standard-error stopping rule they share.

A trace estimate from m samples s_i has standard error s / sqrt(m) (s the sample standard deviation);
sampling stops once that is at most ``max(atol, rtol * |base + mean|)``, after ``min_probes``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class Estimate:
    estimate: float
    stderr: float

    def as_dict(self) -> dict[str, float]:
        return {"estimate": self.estimate, "stderr": self.stderr}


@dataclass
class TraceResult:
    estimate: float
    stderr: float
    probes: int
    products: int
    converged: bool
    method: str
    samples: np.ndarray = field(repr=False)
    frobenius: Estimate | None = None        # tr(A^2) (Hutchinson only)
    diagonal: torch.Tensor | None = None     # (n,) mean of v * A v (Hutchinson only)
    diagonal_stderr: torch.Tensor | None = None

    def as_dict(self) -> dict:
        return {"estimate": self.estimate, "stderr": self.stderr, "probes": self.probes, "products": self.products,
                "converged": self.converged, "method": self.method}


def next_block(drawn: int, block: int | None, min_probes: int, max_probes: int, device: torch.device) -> int:
    """Probes to draw next: up to ``min_probes`` exactly, then ``block`` (default: 8 on CUDA, where one
    batched product for several probes is cheaper, 2 elsewhere), never beyond ``max_probes``.

    Drawing only what the stopping rule needs avoids overshooting it by most of a block.
    """
    block = block or (8 if device.type == "cuda" else 2)
    want = min_probes - drawn if drawn < min_probes else block
    return max(1, min(want, max_probes - drawn))


def standard_error(samples: list[float]) -> float:
    if len(samples) < 2:
        return math.inf
    return float(np.std(samples, ddof=1) / math.sqrt(len(samples)))


def reached(samples: list[float], base: float, rtol: float, atol: float, min_probes: int) -> bool:
    if len(samples) < max(2, min_probes):
        return False
    return standard_error(samples) <= max(atol, rtol * abs(base + float(np.mean(samples))))
