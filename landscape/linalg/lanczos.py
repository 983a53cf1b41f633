"""Extreme eigenpairs by the Lanczos method with full reorthogonalization.

Lanczos builds an orthonormal basis Q_m of the Krylov space span{v, Av, ..., A^(m-1) v} in which
A is tridiagonal, T_m = Q_m^T A Q_m (alpha on the diagonal, beta off it). Ritz values (eigenvalues of
T_m, computed in float64) approximate the extreme eigenvalues of A; the Ritz pair (theta_i, Q_m s_i)
has residual ||A y_i - theta_i y_i|| = beta_m |s_i[m]| (Golub & Van Loan, Sec. 10.1). Every new
vector is orthogonalized against the whole basis twice ("twice is enough", Parlett), which keeps the
basis orthogonal to working precision and avoids the ghost eigenvalues of plain Lanczos.
Iteration stops when the wanted Ritz residuals are below ``tol * max(|theta_i|, 1e-3 |theta|_max)``;
the eigenvalue error is then of order residual^2 / gap, far below the residual itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.linalg import eigh_tridiagonal

from .operators.base import LinearOperator
from .probes import generator, probes

WHICH = ("LA", "SA", "LM")


@dataclass
class EigenResult:
    """Eigenpairs of a symmetric operator and how they were obtained."""

    eigenvalues: np.ndarray        # float64, ordered as requested (LA: descending, SA: ascending, LM: by |.|)
    eigenvectors: torch.Tensor     # (n, k) unit columns
    residuals: np.ndarray          # ||A y - theta y|| bounds per pair
    iterations: int
    products: int
    converged: bool


def _basis_dtype(op: LinearOperator, steps: int) -> torch.dtype:
    n = op.shape[0]
    return torch.float64 if n * steps * 8 <= 2**31 or op.dtype == torch.float64 else op.dtype


def _wanted(theta: np.ndarray, k: int, which: str) -> np.ndarray:
    if which == "LA":
        return np.argsort(-theta)[:k]
    if which == "SA":
        return np.argsort(theta)[:k]
    return np.argsort(-np.abs(theta))[:k]


class LanczosProcess:
    """Incremental Lanczos tridiagonalization with full reorthogonalization."""

    def __init__(self, op: LinearOperator, start: torch.Tensor, max_steps: int, seed: int = 0):
        self.op = op
        self.dtype = _basis_dtype(op, max_steps)
        self.gen = generator(seed + 7919)
        q = start.to(device=op.device, dtype=self.dtype).reshape(-1)
        self.basis = [q / q.norm()]
        self.alpha: list[float] = []
        self.beta: list[float] = []
        self.scale = 0.0

    def _orthogonalize(self, w: torch.Tensor) -> torch.Tensor:
        Q = torch.stack(self.basis)
        for _ in range(2):
            w = w - Q.T @ (Q @ w)
        return w

    def step(self) -> bool:
        """One Lanczos step; returns False when the basis spans an invariant subspace of the whole space."""
        q = self.basis[-1]
        w = self.op.matvec(q.to(self.op.dtype)).to(self.dtype)
        a = float(q @ w)
        self.alpha.append(a)
        w = w - a * q - (self.beta[-1] * self.basis[-2] if self.beta else 0.0)
        w = self._orthogonalize(w)
        b = float(w.norm())
        self.scale = max(self.scale, abs(a), b)
        n = self.op.shape[0]
        if len(self.basis) >= n:
            self.beta.append(0.0)
            return False
        if b <= 1e-10 * max(self.scale, 1e-300):
            # invariant subspace: continue with a random vector orthogonal to the basis (T decouples)
            fresh = self._orthogonalize(probes(n, 1, self.gen, "gaussian", self.dtype, self.op.device)[:, 0])
            self.beta.append(0.0)
            self.basis.append(fresh / fresh.norm())
            return True
        self.beta.append(b)
        self.basis.append(w / b)
        return True

    def ritz(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ritz values, eigenvectors of T (m x m), and residual bounds beta_m |s_i[m]|."""
        m = len(self.alpha)
        alpha = np.asarray(self.alpha)
        off = np.asarray(self.beta[: m - 1])
        theta, s = eigh_tridiagonal(alpha, off) if m > 1 else (alpha.copy(), np.ones((1, 1)))
        residual = abs(self.beta[m - 1]) * np.abs(s[-1, :])
        return theta, s, residual

    def vectors(self, s: np.ndarray) -> torch.Tensor:
        Q = torch.stack(self.basis[: s.shape[0]])  # (m, n)
        Y = Q.T @ torch.as_tensor(s, dtype=self.dtype, device=Q.device)
        return Y / Y.norm(dim=0, keepdim=True)


def lanczos(op: LinearOperator, k: int = 1, which: str = "LA", tol: float = 1e-6, max_iter: int | None = None,
            seed: int = 0, v0: torch.Tensor | None = None) -> EigenResult:
    """The k extreme eigenpairs of the symmetric operator ``op`` (``which``: LA, SA or LM).

    ``v0`` warm-starts from a previous eigenvector (e.g. tracking lambda_max along training);
    otherwise the start is a seeded Rademacher vector.
    """
    if which not in WHICH:
        raise ValueError(f"which must be one of {', '.join(WHICH)}")
    n = op.shape[0]
    k = min(k, n)
    steps = min(n, max_iter if max_iter is not None else max(100, 10 * k))
    start = v0 if v0 is not None else probes(n, 1, generator(seed), "rademacher", torch.float64, op.device)[:, 0]
    before = op.num_products
    proc = LanczosProcess(op, start, steps, seed)
    converged = False
    theta = s = residual = None
    for it in range(1, steps + 1):
        more = proc.step()
        if it >= k or not more:
            theta, s, residual = proc.ritz()
            idx = _wanted(theta, k, which)
            # relative to |theta_i|, but eigenvalues below 1e-3 of the spectral scale are judged on that scale
            floor = 1e-3 * max(np.abs(theta).max(), 1e-300)
            if np.all(residual[idx] <= tol * np.maximum(np.abs(theta[idx]), floor)):
                converged = True
                break
        if not more:
            break
    idx = _wanted(theta, k, which)
    return EigenResult(eigenvalues=theta[idx], eigenvectors=proc.vectors(s[:, idx]).to(op.dtype),
                       residuals=residual[idx], iterations=len(proc.alpha),
                       products=op.num_products - before, converged=converged)
