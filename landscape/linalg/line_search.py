"""Strong-Wolfe line search (Nocedal & Wright, *Numerical Optimization*, 2nd ed., Algorithms 3.5
and 3.6, with the cubic interpolation of eq. 3.59).

Along a descent direction d from x, with phi(t) = f(x + t d), a step t satisfies the strong Wolfe
conditions when

    phi(t) <= phi(0) + c1 t phi'(0)          (sufficient decrease)
    |phi'(t)| <= c2 |phi'(0)|                (curvature)

with 0 < c1 < c2 < 1 (1e-4 and 0.9 for quasi-Newton methods, c2 = 0.1 for conjugate gradient).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

Evaluate = Callable[[float], tuple[float, torch.Tensor]]


@dataclass
class LineSearchResult:
    step: float            # t; 0.0 when no step decreased the loss
    loss: float            # phi(t)
    grad: torch.Tensor     # gradient of f at x + t d
    evaluations: int
    wolfe: bool            # both strong Wolfe conditions hold at ``step``


def value(loss) -> float:
    """A closure's loss as a Python float."""
    return float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)


def cubic_minimizer(a: float, fa: float, ga: float, b: float, fb: float, gb: float,
                    lower: float, upper: float) -> float:
    """Minimiser of the cubic through (a, fa, ga) and (b, fb, gb), clipped to [lower, upper]
    (Nocedal & Wright eq. 3.59); the interval's midpoint when the cubic has no minimiser."""
    d1 = ga + gb - 3.0 * (fa - fb) / (a - b)
    disc = d1 * d1 - ga * gb
    if disc < 0 or not math.isfinite(disc):
        return 0.5 * (lower + upper)
    d2 = math.copysign(math.sqrt(disc), b - a)
    denom = gb - ga + 2.0 * d2
    if denom == 0:
        return 0.5 * (lower + upper)
    t = b - (b - a) * (gb + d2 - d1) / denom
    if not math.isfinite(t):
        return 0.5 * (lower + upper)
    return min(max(t, lower), upper)


def strong_wolfe(evaluate: Evaluate, loss0: float, grad0: torch.Tensor, direction: torch.Tensor, step0: float,
                 c1: float = 1e-4, c2: float = 0.9, max_evaluations: int = 25,
                 tolerance_change: float = 1e-12) -> LineSearchResult:
    """Find t with the strong Wolfe conditions along ``direction``.

    ``evaluate(t)`` returns (f(x + t d), grad f(x + t d)). The returned result holds the gradient at
    the chosen step, so the caller need not evaluate again. When the budget runs out the best step
    with sufficient decrease found so far is returned (``wolfe=False``), or 0.0 when there is none.
    """
    if not 0 < c1 < c2 < 1:
        raise ValueError("line search needs 0 < c1 < c2 < 1")
    dphi0 = float(grad0 @ direction)
    if not dphi0 < 0:
        return LineSearchResult(0.0, loss0, grad0, 0, False)
    evals = 0
    best = LineSearchResult(0.0, loss0, grad0, 0, False)

    def probe(t: float) -> tuple[float, torch.Tensor, float]:
        nonlocal evals, best
        f, g = evaluate(t)
        evals += 1
        dphi = float(g @ direction)
        if math.isfinite(f) and f <= loss0 + c1 * t * dphi0 and f < best.loss:
            best = LineSearchResult(t, f, g, evals, False)
        return f, g, dphi

    def done(t: float, f: float, g: torch.Tensor) -> LineSearchResult:
        return LineSearchResult(t, f, g, evals, True)

    def zoom(lo: tuple, hi: tuple) -> LineSearchResult:
        while evals < max_evaluations:
            (t_lo, f_lo, d_lo), (t_hi, f_hi, d_hi) = lo, hi
            left, right = min(t_lo, t_hi), max(t_lo, t_hi)
            width = right - left
            if width < tolerance_change * max(1.0, right):
                break
            t = cubic_minimizer(t_lo, f_lo, d_lo, t_hi, f_hi, d_hi, left + 0.1 * width, right - 0.1 * width)
            f, g, dphi = probe(t)
            if not math.isfinite(f) or f > loss0 + c1 * t * dphi0 or f >= f_lo:
                hi = (t, f, dphi)
            else:
                if abs(dphi) <= -c2 * dphi0:
                    return done(t, f, g)
                if dphi * (t_hi - t_lo) >= 0:
                    hi = lo
                lo = (t, f, dphi)
        best.evaluations = evals
        return best

    prev = (0.0, loss0, dphi0)
    t = step0
    while evals < max_evaluations:
        f, g, dphi = probe(t)
        if not math.isfinite(f) or f > loss0 + c1 * t * dphi0 or (evals > 1 and f >= prev[1]):
            return zoom(prev, (t, f, dphi))
        if abs(dphi) <= -c2 * dphi0:
            return done(t, f, g)
        if dphi >= 0:
            return zoom((t, f, dphi), prev)
        t_next = cubic_minimizer(prev[0], prev[1], prev[2], t, f, dphi, t + 0.01 * (t - prev[0]), 10.0 * t)
        prev, t = (t, f, dphi), t_next
    best.evaluations = evals
    return best


def closure_value_and_grad(params: list[torch.Tensor], closure: Callable[[], torch.Tensor]
                           ) -> Callable[[], tuple[float, torch.Tensor]]:
    """(loss, flat gradient) at the current parameters from a torch-style closure."""
    from ..params import flat_grad

    def evaluate() -> tuple[float, torch.Tensor]:
        with torch.enable_grad():
            loss = value(closure())
        return loss, flat_grad(params)

    return evaluate


def search_along(params: list[torch.Tensor], value_and_grad: Callable[[], tuple[float, torch.Tensor]],
                 x0: torch.Tensor, loss0: float, grad0: torch.Tensor, direction: torch.Tensor, step0: float,
                 c1: float, c2: float, max_evaluations: int) -> LineSearchResult:
    """Strong-Wolfe search on the parameters themselves: ``value_and_grad()`` is evaluated with the
    parameters at x0 + t d, and they are left at x0 + t* d for the step t* found (x0 when it failed)."""
    from ..params import assign_

    last = [None]

    def evaluate(t: float) -> tuple[float, torch.Tensor]:
        assign_(params, x0 + t * direction)
        last[0] = t
        return value_and_grad()

    result = strong_wolfe(evaluate, loss0, grad0, direction, step0, c1=c1, c2=c2, max_evaluations=max_evaluations)
    if last[0] != result.step:
        assign_(params, x0 + result.step * direction)
    return result
