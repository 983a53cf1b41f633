"""Hutchinson's trace estimator (Hutchinson 1989), with tr(A^2) and diag(A) from the same probes.

For probes v with E[v v^T] = I (Rademacher +-1 or Gaussian),
  tr(A) = E[v^T A v],   ||A||_F^2 = tr(A^2) = E[||A v||^2],   diag(A) = E[v * A v] (Rademacher; Bekas et al. 2007).
One product A v serves all three. Probes are drawn in blocks (one ``matmat`` per block, sharing the
batch graphs) until the standard error of the trace, s / sqrt(m) with s the sample standard
deviation, is at most ``max(atol, rtol * |estimate|)`` (after ``min_probes``), or ``max_probes``.
"""
from __future__ import annotations

import numpy as np
import torch

from .operators.base import LinearOperator
from .probes import generator, probes
from .trace_result import Estimate, TraceResult, next_block, reached, standard_error


def hutchinson(op: LinearOperator, *, rtol: float = 1e-2, atol: float = 0.0, min_probes: int = 10,
               max_probes: int = 1000, block: int | None = None, seed: int = 0, distribution: str = "rademacher",
               frobenius: bool = False, diagonal: bool = False) -> TraceResult:
    """Hutchinson trace with a standard-error stopping rule; optionally tr(A^2) and diag(A) from the same probes."""
    n = op.shape[0]
    gen = generator(seed)
    before = op.num_products
    trace, frob = [], []
    diag_sum = torch.zeros(n, dtype=torch.float64, device=op.device)
    diag_sq = torch.zeros(n, dtype=torch.float64, device=op.device)
    while len(trace) < max_probes and not reached(trace, 0.0, rtol, atol, min_probes):
        k = next_block(len(trace), block, min_probes, max_probes, op.device)
        V = probes(n, k, gen, distribution, torch.float64, op.device)
        AV = op.matmat(V.to(op.dtype)).to(torch.float64)
        trace.extend((V * AV).sum(0).tolist())
        if frobenius:
            frob.extend((AV * AV).sum(0).tolist())
        if diagonal:
            d = V * AV
            diag_sum += d.sum(1)
            diag_sq += (d * d).sum(1)
    m = len(trace)
    result = TraceResult(float(np.mean(trace)), standard_error(trace), m, op.num_products - before,
                         reached(trace, 0.0, rtol, atol, min_probes), "hutchinson", np.asarray(trace))
    if frobenius:
        result.frobenius = Estimate(float(np.mean(frob)), standard_error(frob))
    if diagonal:
        mean = diag_sum / m
        var = (diag_sq / m - mean * mean).clamp_min(0) * (m / max(m - 1, 1))
        result.diagonal, result.diagonal_stderr = mean, (var / m).sqrt()
    return result
