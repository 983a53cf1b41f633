"""Hutch++ (Meyer, Musco, Musco & Woodruff 2021): sketch the range of A with Q = orth(A S) for s
random columns, take tr(Q^T A Q) exactly and apply Hutchinson only to the deflated remainder
P A P with P = I - Q Q^T, so the outlier eigenvalues that dominate a Hessian's variance cost nothing.
Its standard error is that of the remainder's samples (conditional on the sketch); the number of
remainder probes is adaptive (the stopping rule of :mod:`landscape.linalg.trace_result`).
"""
from __future__ import annotations

import numpy as np
import torch

from .operators.base import LinearOperator
from .probes import generator, probes
from .trace_result import TraceResult, next_block, reached, standard_error


class HutchppSketch:
    """Hutch++'s sketch (Q, exact tr(Q^T A Q)) and the remainder samples drawn so far."""

    def __init__(self, op: LinearOperator, sketch: int, seed: int, distribution: str):
        self.op, self.distribution = op, distribution
        self.gen = generator(seed)
        self.before = op.num_products
        n = op.shape[0]
        self.complete = min(sketch, n) >= n  # the sketch spans the whole space: the trace is exact
        S = probes(n, min(sketch, n), self.gen, distribution, torch.float64, op.device)
        self.Q, _ = torch.linalg.qr(op.matmat(S.to(op.dtype)).to(torch.float64))
        self.exact = float(torch.trace(self.Q.T @ op.matmat(self.Q.to(op.dtype)).to(torch.float64)))
        self.remainder: list[float] = []

    def draw(self, k: int) -> None:
        G = probes(self.op.shape[0], k, self.gen, self.distribution, torch.float64, self.op.device)
        PG = G - self.Q @ (self.Q.T @ G)
        APG = self.op.matmat(PG.to(self.op.dtype)).to(torch.float64)
        self.remainder.extend((PG * APG).sum(0).tolist())

    def run(self, rtol: float, atol: float, min_probes: int, max_probes: int, block: int | None) -> TraceResult:
        while (not self.complete and len(self.remainder) < max_probes
               and not reached(self.remainder, self.exact, rtol, atol, min_probes)):
            self.draw(next_block(len(self.remainder), block, min_probes, max_probes, self.op.device))
        rest = float(np.mean(self.remainder)) if self.remainder else 0.0
        converged = self.complete or reached(self.remainder, self.exact, rtol, atol, min_probes)
        return TraceResult(self.exact + rest, 0.0 if self.complete else standard_error(self.remainder), len(self.remainder),
                           self.op.num_products - self.before, converged, "hutch++",
                           np.asarray(self.remainder) + self.exact)


def hutchpp(op: LinearOperator, *, sketch: int = 16, rtol: float = 1e-2, atol: float = 0.0, min_probes: int = 10,
            max_probes: int = 1000, block: int | None = None, seed: int = 0, distribution: str = "rademacher") -> TraceResult:
    """Hutch++ with a sketch of ``sketch`` columns and an adaptive number of remainder probes."""
    return HutchppSketch(op, sketch, seed, distribution).run(rtol, atol, min_probes, max_probes, block)
