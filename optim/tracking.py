"""Curvature during training: lambda_max (and optionally the trace) of the training-loss Hessian,
recorded by ``landscape train --track-curvature-every K`` into the run's metrics.

The Hessian is that of the mean loss over a fixed seeded subset of the training set
(``track_samples``), in evaluation mode (BatchNorm with its running statistics). lambda_max comes from
Lanczos (largest algebraic eigenvalue, relative residual 1e-4) warm-started from the previous
eigenvector, so consecutive measurements cost a few Hessian-vector products once the top
eigenvector settles (Cohen et al. 2021, "Gradient descent on neural networks typically occurs at the
edge of stability", track it the same way). The trace uses :func:`estimate_trace` (exact GGN trace
plus a Hutchinson estimate of tr(H - G) where supported) to 5% standard error.
"""

from __future__ import annotations

import torch

from landscape.linalg.lanczos import lanczos
from landscape.linalg.operators import HessianOperator
from landscape.linalg.trace import estimate_trace
from landscape.objective import Objective


class CurvatureTracker:
    """lambda_max (and the trace) of the Hessian of the mean training loss over a fixed seeded subset,
    measured by Lanczos warm-started from the last eigenvector (module docstring; Cohen et al. 2021).

    Args:
        x, y: the training set. loss: its loss name. samples: size of the fixed subset.
        seed: of the subset and the estimators. trace: also estimate the trace.

    ``tracker(model)`` returns ``{"lambda_max", "curvature_products"[, "trace"]}``.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, loss: str, samples: int, seed: int = 0,
                 trace: bool = False):
        n = x.shape[0]
        idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:min(samples, n)].to(x.device)
        self.x, self.y = x[idx], y[idx]
        self.loss, self.trace, self.seed = loss, trace, seed
        self.vector: torch.Tensor | None = None

    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        op = HessianOperator(Objective(model, self.x, self.y, self.loss), method="double-backward")
        start = self.vector if self.vector is not None and self.vector.shape[0] == op.shape[0] else None
        top = lanczos(op, k=1, which="LA", tol=1e-4, max_iter=200, seed=self.seed, v0=start)
        self.vector = top.eigenvectors[:, 0].detach().double()
        row = {"lambda_max": float(top.eigenvalues[0]), "curvature_products": float(top.products)}
        if self.trace:
            row["trace"] = float(estimate_trace(op, rtol=0.05, max_probes=200, seed=self.seed).estimate)
        return row
