"""Linear solves for Newton-type steps: A d = b with a symmetric operator A given by its products.

``conjugate_gradient`` is Hestenes-Stiefel CG (Nocedal & Wright Algorithm 5.2) with three stopping
rules: the residual ||r|| <= tol ||b|| (N&W 7.1's forcing term), Martens' (2010) relative progress of
the quadratic phi(d) = 1/2 d^T A d - b^T d, and negative or zero curvature p^T A p <= 0 (the matrix is
not positive definite along p: the caller decides what to do). ``keep`` stores the iterates at
Martens' backtracking indices ceil(1.3^j).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

Apply = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class CGResult:
    solution: torch.Tensor
    iterations: int
    products: int
    negative_curvature: bool = False
    direction: torch.Tensor | None = None  # the direction with p^T A p <= 0, when found
    iterates: list[tuple[int, torch.Tensor]] = field(default_factory=list)


def backtracking_indices(max_iter: int, gamma: float = 1.3) -> set[int]:
    """Martens' (2010) CG iterations whose iterates are kept: ceil(gamma^j), plus the last."""
    out, j = set(), 0
    while math.ceil(gamma ** j) <= max_iter:
        out.add(math.ceil(gamma ** j))
        j += 1
    return out


def conjugate_gradient(apply: Apply, b: torch.Tensor, x0: torch.Tensor | None = None, max_iter: int = 250,
                       tol: float = 1e-10, martens_epsilon: float | None = None,
                       keep: bool = False) -> CGResult:
    """Approximately solve A x = b by CG from ``x0`` (default 0)."""
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - apply(x) if x0 is not None and bool(x0.any()) else b.clone()
    products = 1 if x0 is not None and bool(x0.any()) else 0
    p = r.clone()
    rr = float(r @ r)
    b_norm = float(b.norm())
    keep_at = backtracking_indices(max_iter) if keep else set()
    iterates: list[tuple[int, torch.Tensor]] = []
    phis: list[float] = []
    i = 0
    for i in range(1, max_iter + 1):
        if math.sqrt(rr) <= tol * b_norm:
            i -= 1
            break
        ap = apply(p)
        products += 1
        pap = float(p @ ap)
        if pap <= 0:
            return CGResult(x, i - 1, products, True, p, iterates)
        alpha = rr / pap
        x = x + alpha * p
        r = r - alpha * ap
        rr_new = float(r @ r)
        p = r + (rr_new / rr) * p
        rr = rr_new
        if i in keep_at:
            iterates.append((i, x.clone()))
        if martens_epsilon is not None:
            phis.append(-0.5 * float(x @ (b + r)))  # phi(x) = 1/2 x^T A x - b^T x = -1/2 x^T (b + r)
            k = max(10, int(0.1 * i))
            if i > k and phis[-1] < 0 and (phis[-1] - phis[-1 - k]) / phis[-1] < k * martens_epsilon:
                break
    if keep and (not iterates or iterates[-1][0] != i):
        iterates.append((i, x.clone()))
    return CGResult(x, i, products, False, None, iterates)
