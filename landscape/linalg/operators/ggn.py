"""Generalized Gauss-Newton products G v = J^T H_out J v (Schraudolph 2002; Martens 2010).

J is the Jacobian of the model outputs f(x_n; theta) with respect to theta and H_out the Hessian of
the loss with respect to the outputs (block diagonal over samples; for cross-entropy diag(p) - p p^T,
for squared errors a multiple of I). One product: J v by forward-mode AD (``jvp``), H_out (J v) by a
Hessian-vector product of the loss in output space, and J^T (.) by a reverse pass whose graph is
cached per batch like the Hessian's. G is positive semi-definite for convex losses, and equals the
Hessian when the model is linear in theta.
"""

from __future__ import annotations

import torch
from torch.func import grad, jvp

from ...objective import Objective
from .base import CurvatureOperator
from .memory import may_cache, saved_tensor_bytes


class OutputSpaceOperator(CurvatureOperator):
    """Shared machinery for J^T M J products with per-batch output-space matrices M."""

    def __init__(self, objective: Objective, cache: str | bool = "auto"):
        super().__init__(objective)
        self.cache = cache
        self._linearizations: dict[int, tuple] = {}
        self._bytes: int | None = None

    def linearization(self, b: int):
        """(outputs f(theta), pullback u -> J^T u as a list per parameter) of batch b; the graph is cached
        while its memory fits the budget (with ``cache=False`` the pullback may be called once)."""
        if b in self._linearizations:
            return self._linearizations[b]
        obj = self.objective
        x, _ = obj.batches[b]
        leaves = {n: t.detach().requires_grad_() for n, t in obj.theta.items()}
        with saved_tensor_bytes() as counter:
            out = obj.output(leaves, x)
        if self._bytes is None:
            self._bytes = counter.bytes
        keep = may_cache(self.cache, len(self._linearizations), self._bytes, self.device)

        def pullback(u: torch.Tensor) -> list[torch.Tensor]:
            return list(torch.autograd.grad(out, list(leaves.values()), grad_outputs=u, retain_graph=keep,
                                            allow_unused=True, materialize_grads=True))

        entry = (out.detach(), pullback)
        if keep:
            self._linearizations[b] = entry
        return entry

    def jvp_rows(self, b: int, rows: torch.Tensor) -> list[torch.Tensor]:
        """J v in output space (forward mode) for each flat row v."""
        obj = self.objective
        x, _ = obj.batches[b]
        with obj.transformable():
            return [jvp(lambda th: obj.output(th, x), (obj.theta,), (obj.layout.unflatten(r),))[1] for r in rows]

    def output_product(self, b: int, out: torch.Tensor, jv: torch.Tensor) -> torch.Tensor:
        """M_b u for an output-space vector u (M = the loss Hessian for the GGN, the Fisher factor for Fisher)."""
        raise NotImplementedError

    def _batch_rows(self, b: int, rows: torch.Tensor) -> torch.Tensor:
        out, pullback = self.linearization(b)
        layout = self.objective.layout
        result = []
        for jv in self.jvp_rows(b, rows):
            result.append(layout.flatten(pullback(self.output_product(b, out, jv))))
        return torch.stack(result)


class GGNOperator(OutputSpaceOperator):
    """The generalized Gauss-Newton matrix G = (1/N) sum_n J_n^T H_out,n J_n (Schraudolph 2002, "Fast
    curvature matrix-vector products for second-order gradient descent"; Martens 2010) as a linear operator:
    a product is one ``jvp`` J v, the output-space Hessian H_out (J v) and one cached reverse pass J^T (.)
    (module docstring).

    Args:
        objective: the :class:`~landscape.objective.Objective` whose parameters are the variables.
        cache: keep each batch's linearization across products (``"auto"``: while it fits the budget).
    """

    products = "GGN products"

    def _options(self) -> dict:
        return {"cache": self.cache}

    def output_product(self, b: int, out: torch.Tensor, jv: torch.Tensor) -> torch.Tensor:
        obj = self.objective
        _, y = obj.batches[b]
        return jvp(grad(lambda z: obj.loss_fn(z, y)), (out,), (jv,))[1]


__all__ = ["GGNOperator", "OutputSpaceOperator"]
