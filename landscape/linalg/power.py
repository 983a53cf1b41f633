"""Power iteration with Hotelling deflation (for comparison with Lanczos and with PyHessian).

For the i-th pair, iterate v <- A_i v / ||A_i v|| with A_i = A - sum_{j<i} lambda_j v_j v_j^T until
both the relative change of the Rayleigh quotient and the relative residual ||A_i v - lambda v|| /
|lambda| are below ``tol``. It finds eigenvalues of largest magnitude, each needing its own run, so
it uses many more products than Lanczos for the same accuracy.
"""

from __future__ import annotations

import numpy as np
import torch

from .lanczos import EigenResult
from .operators.base import LinearOperator
from .probes import generator, probes


def power_iteration(op: LinearOperator, k: int = 1, tol: float = 1e-4, max_iter: int = 1000,
                    seed: int = 0) -> EigenResult:
    n = op.shape[0]
    gen = generator(seed)
    before = op.num_products
    values, vectors, residuals = [], [], []
    converged, iterations = True, 0
    for _ in range(min(k, n)):
        v = probes(n, 1, gen, "gaussian", torch.float64, op.device)[:, 0]
        v = v / v.norm()
        lam_old, done = None, False
        for _ in range(max_iter):
            iterations += 1
            w = op.matvec(v.to(op.dtype)).to(torch.float64)
            for lam_j, v_j in zip(values, vectors):
                w = w - lam_j * (v_j @ v) * v_j
            lam = float(v @ w)
            res = float((w - lam * v).norm())
            if lam_old is not None and abs(lam - lam_old) <= tol * abs(lam) and res <= tol * abs(lam):
                done = True
            lam_old = lam
            norm = w.norm()
            if norm == 0:
                done = True
                break
            v = w / norm
            if done:
                break
        converged &= done
        values.append(lam)
        vectors.append(v)
        residuals.append(res)
    order = np.argsort(-np.abs(values))
    return EigenResult(eigenvalues=np.asarray(values)[order], eigenvectors=torch.stack(vectors, 1)[:, order].to(op.dtype),
                       residuals=np.asarray(residuals)[order], iterations=iterations,
                       products=op.num_products - before, converged=converged)
