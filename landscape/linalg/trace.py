"""The best available trace of a curvature operator: exact where it can be, otherwise the cheapest estimator.

GGN and Fisher traces are exact from per-sample gradient norms (:mod:`landscape.linalg.operators.exact_trace`).
A Hessian trace is the exact GGN trace plus a control-variate estimate of tr(H - G), or Hutch++, whichever a
pilot of both predicts to need fewer products. Other operators: Hutch++.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .control_variate import control_variate_trace, residual_samples
from .hutchpp import HutchppSketch, hutchpp
from .operators import FisherOperator, GGNOperator, HessianOperator
from .operators.base import LinearOperator
from .operators.exact_trace import exact_fisher_trace, exact_ggn_trace
from .probes import generator, probes
from .trace_result import TraceResult


def estimate_trace(op: LinearOperator, *, rtol: float = 1e-2, max_probes: int = 1000, seed: int = 0) -> TraceResult:
    """The best available trace estimate for a curvature operator (also for per-layer blocks).

    GGN and Fisher: exact, from per-sample gradient norms, when every parameterised module is
    supported (:mod:`landscape.linalg.operators.exact_trace`). Hessian: the exact GGN trace plus a Hutchinson
    estimate of tr(H - G) (:func:`control_variate_trace`) or Hutch++, whichever a pilot of both predicts
    to reach the standard error ``rtol * |trace|`` with fewer products (:func:`_choose_hessian_estimator`).
    Otherwise, or for other operators: Hutch++.
    """
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
    residual = residual_samples(op, control, V)
    control_cost = _predicted_products(residual, control_trace, rtol, min_probes, max_probes, per_probe=2)
    least_hutchpp = 2 * min(sketch, op.shape[0]) + min_probes
    if control_cost + 2 * pilot > least_hutchpp:
        state = HutchppSketch(op, sketch, seed, "rademacher")
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
