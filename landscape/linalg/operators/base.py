"""Common base of the curvature operators: symmetric linear maps on the flat parameter vector.

``A @ v`` for a vector (n,), ``A @ V`` for a matrix (n, k) of columns; ``A.matmat`` shares the
per-batch work (graph, forward pass) among the k columns. Products are accumulated over the data
batches with weights n_b / N. ``A.num_products`` counts column products (for benchmarks).
"""

from __future__ import annotations

import time
from typing import Iterable

import numpy as np
import torch

from ...derivatives import is_missing_derivative, missing_derivative_error
from ...errors import LandscapeError
from ...objective import Objective


class LinearOperator:
    """Minimal symmetric operator interface shared by curvature operators and dense matrices."""

    shape: tuple[int, int]
    dtype: torch.dtype
    device: torch.device

    def __init__(self) -> None:
        self.num_products = 0

    def _matmat_rows(self, rows: torch.Tensor) -> torch.Tensor:  # (k, n) -> (k, n)
        raise NotImplementedError

    def matmat(self, columns: torch.Tensor) -> torch.Tensor:
        """A @ X for X of shape (n, k)."""
        if columns.ndim != 2 or columns.shape[0] != self.shape[1]:
            raise LandscapeError(f"matmat expects shape ({self.shape[1]}, k), got {tuple(columns.shape)}")
        rows = columns.T.to(device=self.device, dtype=self.dtype)
        self.num_products += rows.shape[0]
        try:
            return self._matmat_rows(rows).T
        except (NotImplementedError, RuntimeError) as exc:
            error = self._explain(exc, rows)
            if error is None:
                raise
            raise error from exc

    def _explain(self, exc: BaseException, rows: torch.Tensor) -> LandscapeError | None:
        """A one-line error for a failed product, or None to let ``exc`` through."""
        return None

    def matvec(self, vector: torch.Tensor) -> torch.Tensor:
        return self.matmat(vector.reshape(-1, 1)).reshape(-1)

    def __matmul__(self, other: torch.Tensor) -> torch.Tensor:
        return self.matvec(other) if other.ndim == 1 else self.matmat(other)

    def to_dense(self, chunk: int = 64) -> torch.Tensor:
        """The full n x n matrix (n products; for small models and tests)."""
        n = self.shape[0]
        eye = torch.eye(n, dtype=self.dtype, device=self.device)
        return torch.cat([self.matmat(eye[:, i:i + chunk]) for i in range(0, n, chunk)], dim=1)

    def to_scipy(self):
        """A ``scipy.sparse.linalg.LinearOperator`` view (float64 NumPy in and out)."""
        from scipy.sparse.linalg import LinearOperator as ScipyOperator

        def mv(v):
            out = self.matvec(torch.as_tensor(np.asarray(v).reshape(-1), dtype=self.dtype, device=self.device))
            return out.detach().cpu().double().numpy()

        def mm(m):
            out = self.matmat(torch.as_tensor(np.asarray(m), dtype=self.dtype, device=self.device))
            return out.detach().cpu().double().numpy()

        return ScipyOperator(self.shape, matvec=mv, rmatvec=mv, matmat=mm, dtype=np.float64)


class ShiftedOperator(LinearOperator):
    """A + shift I for an operator A (damping, or the curvature of an L2 term)."""

    def __init__(self, op: LinearOperator, shift: float):
        super().__init__()
        self.op, self.shift = op, float(shift)
        self.shape, self.dtype, self.device = op.shape, op.dtype, op.device

    def _matmat_rows(self, rows: torch.Tensor) -> torch.Tensor:
        out = self.op._matmat_rows(rows)
        return out + self.shift * rows if self.shift else out


class DenseOperator(LinearOperator):
    """A symmetric matrix held in memory, with the operator interface (reference and tests)."""

    def __init__(self, matrix: torch.Tensor):
        super().__init__()
        self.matrix = matrix
        self.shape = tuple(matrix.shape)
        self.dtype = matrix.dtype
        self.device = matrix.device

    def _matmat_rows(self, rows: torch.Tensor) -> torch.Tensor:
        return rows @ self.matrix.T


class CurvatureOperator(LinearOperator):
    """Base of the Hessian, GGN and Fisher operators of an :class:`Objective`.

    Subclasses implement ``_batch_rows(b, rows)``: the batch-mean curvature of batch ``b`` applied
    to each row of ``rows`` (k, n). This class accumulates over batches with weights n_b / N.
    """

    products = "curvature products"  # what the products are called in error messages

    def __init__(self, objective: Objective):
        super().__init__()
        self.objective = objective
        self.shape = (objective.dim, objective.dim)
        self.dtype = objective.dtype
        self.device = objective.device
        self.seconds = 0.0

    def _options(self) -> dict:
        return {}

    def _explain(self, exc: BaseException, rows: torch.Tensor) -> LandscapeError | None:
        if not is_missing_derivative(exc):
            return None
        return missing_derivative_error(exc, self.products, self.objective.model, lambda: self._matmat_rows(rows[:1]))

    def restrict(self, names: Iterable[str]) -> "CurvatureOperator":
        """The diagonal block for the parameters ``names`` (e.g. one layer)."""
        return type(self)(self.objective.restrict(names), **self._options())

    def blocks(self) -> dict[str, "CurvatureOperator"]:
        """One restricted operator per module (per layer)."""
        return {group: self.restrict(names) for group, names in self.objective.layout.groups().items()}

    def _batch_rows(self, b: int, rows: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _weighted(self, fn, rows: torch.Tensor) -> torch.Tensor:
        """sum_b (n_b / N) fn(b, rows): per-batch products combined into the mean over all samples. Several
        batches (or processes) are summed in float64 and rounded once, so the result does not depend on how
        the batches are shared among processes."""
        obj = self.objective
        if len(obj.batches) == 1 and not obj.sharded:
            weight = obj.weights[0]
            out = fn(0, rows)
            return out if weight == 1.0 else weight * out
        total = torch.zeros(rows.shape, dtype=torch.float64, device=rows.device)
        for b, weight in enumerate(obj.weights):
            total.add_(fn(b, rows), alpha=weight)
        return obj.all_reduce(total).to(rows.dtype)  # data shared by several processes: sum their parts

    def _matmat_rows(self, rows: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        total = self._weighted(self._batch_rows, rows)
        self.seconds += time.perf_counter() - t0
        return total
