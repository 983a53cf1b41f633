"""Stochastic trace, squared Frobenius norm and diagonal estimates with standard errors.

Hutchinson (1989): for probes v with E[v v^T] = I (Rademacher +-1 or Gaussian),
  tr(A) = E[v^T A v],   ||A||_F^2 = tr(A^2) = E[||A v||^2],   diag(A) = E[v * A v] (Rademacher; Bekas et al. 2007).
One product A v serves all three. Probes are drawn in blocks (one ``matmat`` per block, sharing the
batch graphs) until the standard error of the trace, s / sqrt(m) with s the sample standard
deviation, is at most ``max(atol, rtol * |estimate|)`` (after ``min_probes``), or ``max_probes``.

Hutch++ (Meyer, Musco, Musco & Woodruff 2021): sketch the range of A with Q = orth(A S) for s
random columns, take tr(Q^T A Q) exactly and apply Hutchinson only to the deflated remainder
P A P with P = I - Q Q^T, so the outlier eigenvalues that dominate a Hessian's variance cost nothing.
Its standard error is that of the remainder's samples (conditional on the sketch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from landscape.operators.base import LinearOperator

from .probes import generator, probes


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


def _block_size(drawn: int, block: int | None, min_probes: int, max_probes: int, device: torch.device) -> int:
    """Probes to draw next: up to ``min_probes`` exactly, then ``block`` (default: 8 on CUDA, where one
    batched product for several probes is cheaper, 2 elsewhere), never beyond ``max_probes``.

    Drawing only what the stopping rule needs avoids overshooting it by most of a block.
    """
    block = block or (8 if device.type == "cuda" else 2)
    want = min_probes - drawn if drawn < min_probes else block
    return max(1, min(want, max_probes - drawn))


def _stderr(samples: list[float]) -> float:
    if len(samples) < 2:
        return math.inf
    return float(np.std(samples, ddof=1) / math.sqrt(len(samples)))


def _done(samples: list[float], base: float, rtol: float, atol: float, min_probes: int) -> bool:
    if len(samples) < max(2, min_probes):
        return False
    return _stderr(samples) <= max(atol, rtol * abs(base + float(np.mean(samples))))


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
    while len(trace) < max_probes and not _done(trace, 0.0, rtol, atol, min_probes):
        k = _block_size(len(trace), block, min_probes, max_probes, op.device)
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
    result = TraceResult(float(np.mean(trace)), _stderr(trace), m, op.num_products - before,
                         _done(trace, 0.0, rtol, atol, min_probes), "hutchinson", np.asarray(trace))
    if frobenius:
        result.frobenius = Estimate(float(np.mean(frob)), _stderr(frob))
    if diagonal:
        mean = diag_sum / m
        var = (diag_sq / m - mean * mean).clamp_min(0) * (m / max(m - 1, 1))
        result.diagonal, result.diagonal_stderr = mean, (var / m).sqrt()
    return result


class _HutchppState:
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
               and not _done(self.remainder, self.exact, rtol, atol, min_probes)):
            self.draw(_block_size(len(self.remainder), block, min_probes, max_probes, self.op.device))
        rest = float(np.mean(self.remainder)) if self.remainder else 0.0
        converged = self.complete or _done(self.remainder, self.exact, rtol, atol, min_probes)
        return TraceResult(self.exact + rest, 0.0 if self.complete else _stderr(self.remainder), len(self.remainder),
                           self.op.num_products - self.before, converged, "hutch++",
                           np.asarray(self.remainder) + self.exact)


def hutchpp(op: LinearOperator, *, sketch: int = 16, rtol: float = 1e-2, atol: float = 0.0, min_probes: int = 10,
            max_probes: int = 1000, block: int | None = None, seed: int = 0, distribution: str = "rademacher") -> TraceResult:
    """Hutch++ with a sketch of ``sketch`` columns and an adaptive number of remainder probes."""
    return _HutchppState(op, sketch, seed, distribution).run(rtol, atol, min_probes, max_probes, block)


def exact_diagonal(op: LinearOperator, chunk: int = 64) -> torch.Tensor:
    """diag(A) from n products with unit vectors (small models, reference values)."""
    n = op.shape[0]
    out = torch.empty(n, dtype=torch.float64, device=op.device)
    for i in range(0, n, chunk):
        j = min(n, i + chunk)
        E = torch.zeros(n, j - i, dtype=op.dtype, device=op.device)
        E[torch.arange(i, j), torch.arange(j - i)] = 1
        out[i:j] = op.matmat(E)[torch.arange(i, j), torch.arange(j - i)].to(torch.float64)
    return out


def control_variate_trace(op: LinearOperator, control: LinearOperator, control_trace: float, *, rtol: float = 1e-2,
                          atol: float = 0.0, min_probes: int = 10, max_probes: int = 1000, block: int | None = None,
                          seed: int = 0, distribution: str = "rademacher",
                          initial: list[float] | None = None) -> TraceResult:
    """tr(A) = tr(C) + E[v^T (A - C) v] for a control C whose trace is known exactly.

    With A the Hessian and C the GGN (H = G + R, R = sum_n sum_c (dl_n/df_nc) d^2 f_nc/dtheta^2), the
    Hutchinson samples only see R, which is small near a fitted minimum, so far fewer probes reach a
    given standard error. Unbiased whatever C is; the stopping rule is the same as :func:`hutchinson`.
    ``initial`` holds residual samples already drawn (from independent probes), e.g. by a pilot.
    """
    n = op.shape[0]
    gen = generator(seed)
    before = op.num_products + control.num_products
    samples: list[float] = list(initial or [])
    while len(samples) < max_probes and not _done(samples, control_trace, rtol, atol, min_probes):
        k = _block_size(len(samples), block, min_probes, max_probes, op.device)
        V = probes(n, k, gen, distribution, torch.float64, op.device)
        RV = op.matmat(V.to(op.dtype)).to(torch.float64) - control.matmat(V.to(control.dtype)).to(torch.float64)
        samples.extend((V * RV).sum(0).tolist())
    return TraceResult(control_trace + float(np.mean(samples)), _stderr(samples), len(samples),
                       op.num_products + control.num_products - before + 2 * len(initial or []),
                       _done(samples, control_trace, rtol, atol, min_probes), "ggn-control-variate",
                       np.asarray(samples) + control_trace)


def estimate_trace(op: LinearOperator, *, rtol: float = 1e-2, max_probes: int = 1000, seed: int = 0) -> TraceResult:
    """The best available trace estimate for a curvature operator (also for per-layer blocks).

    GGN and Fisher: exact, from per-sample gradient norms, when every parameterised module is
    supported (:mod:`landscape.operators.exact_trace`). Hessian: the exact GGN trace plus a Hutchinson
    estimate of tr(H - G) (:func:`control_variate_trace`) or Hutch++, whichever a pilot of both predicts
    to reach the standard error ``rtol * |trace|`` with fewer products (:func:`_choose_hessian_estimator`).
    Otherwise, or for other operators: Hutch++.
    """
    from landscape.operators import FisherOperator, GGNOperator, HessianOperator
    from landscape.operators.exact_trace import exact_fisher_trace, exact_ggn_trace

    exact = None
    if isinstance(op, GGNOperator):
        exact = exact_ggn_trace(op.objective)
    elif isinstance(op, FisherOperator):
        exact = exact_fisher_trace(op)
    if exact is not None:
        value = float(sum(exact.values()))
        return TraceResult(value, 0.0, 0, 0, True, "exact", np.asarray([value]))
    if isinstance(op, HessianOperator):
        ggn = exact_ggn_trace(op.objective)
        if ggn is not None:
            return _choose_hessian_estimator(op, GGNOperator(op.objective), float(sum(ggn.values())), rtol=rtol,
                                             max_probes=max_probes, seed=seed)
    return hutchpp(op, rtol=rtol, max_probes=max_probes, seed=seed)


def _predicted_products(samples: list[float], base: float, rtol: float, min_probes: int, max_probes: int,
                        per_probe: int) -> float:
    """Products still needed for the standard error rtol * |base + mean| at the samples' variance."""
    target = rtol * abs(base + float(np.mean(samples)))
    variance = float(np.var(samples, ddof=1))
    needed = min(max_probes, max(min_probes, math.ceil(variance / target ** 2) if target > 0 else max_probes))
    return per_probe * max(0, needed - len(samples))


def _choose_hessian_estimator(op: LinearOperator, control: LinearOperator, control_trace: float, *, rtol: float,
                              max_probes: int, seed: int, pilot: int = 8, sketch: int = 16,
                              min_probes: int = 10) -> TraceResult:
    """Hessian trace by the control variate (two products per probe, variance of v^T (H - G) v) or by Hutch++
    (a sketch of 2 x ``sketch`` products, then one per probe of the deflated remainder), chosen by their
    measured variance per product.

    Near a fitted minimum H - G is small and the control variate wins by a wide margin; early in training
    the few outlying eigenvalues that Hutch++ deflates can dominate instead. A pilot of ``pilot`` probes of
    the control variate comes first; when even its predicted total beats the least Hutch++ can cost, it goes
    on alone. Otherwise a Hutch++ pilot (its sketch and ``pilot`` remainder probes) runs too, and the estimator
    predicted to need fewer further products continues with its pilot's samples (the other pilot's products
    are counted in ``products``).
    """
    before = op.num_products + control.num_products
    V = probes(op.shape[0], pilot, generator(seed + 104729), "rademacher", torch.float64, op.device)
    residual = (V * (op.matmat(V.to(op.dtype)).to(torch.float64)
                     - control.matmat(V.to(control.dtype)).to(torch.float64))).sum(0).tolist()
    control_cost = _predicted_products(residual, control_trace, rtol, min_probes, max_probes, per_probe=2)
    least_hutchpp = 2 * min(sketch, op.shape[0]) + min_probes
    if control_cost + 2 * pilot > least_hutchpp:
        state = _HutchppState(op, sketch, seed, "rademacher")
        if not state.complete:
            state.draw(pilot)
        hutchpp_cost = 0.0 if state.complete else _predicted_products(state.remainder, state.exact, rtol, min_probes,
                                                                      max_probes, per_probe=1)
        if hutchpp_cost < control_cost:
            result = state.run(rtol, 0.0, min_probes, max_probes, None)
            result.products = op.num_products + control.num_products - before
            return result
    result = control_variate_trace(op, control, control_trace, rtol=rtol, max_probes=max_probes, seed=seed,
                                   initial=residual, min_probes=min_probes)
    result.products = op.num_products + control.num_products - before
    return result
