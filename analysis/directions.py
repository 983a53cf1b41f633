"""Directions in parameter space for loss slices and surfaces.

Every direction is a flat vector over the model's trainable parameters in ``named_parameters()``
order (a :class:`landscape.params.ParamLayout`); a surface evaluates L(w + a d_x + b d_y).

Normalisations (Li, Xu, Taylor, Studer & Goldstein 2018, "Visualizing the loss landscape of neural
nets", Sec. 4), applied per parameter tensor W with direction D:

- ``filter``: every filter (slice along dim 0: an output neuron's row of a linear layer, an output
  channel of a convolution) is rescaled, D_f <- D_f ||W_f|| / (||D_f|| + 1e-10);
- ``layer``: the whole tensor, D <- D ||W|| / (||D|| + 1e-10);
- ``weight``: D <- D * W elementwise;
- ``none``: raw Gaussian entries.

Tensors with at most one dimension (biases, BatchNorm scales and shifts) get a zero direction with
``ignore_biasbn=True`` (Li's ``--xignore biasbn``, our default); otherwise ``filter`` and ``layer``
treat the whole tensor as one filter (Li's code sets such directions to a copy of W, and the
loss-landscapes package gives every bias entry the magnitude of its weight: neither is random).

Also: the direction between two parameter vectors, principal components of an optimisation
trajectory (Li et al. Sec. 7: PCA of w_i - w_final, centred as sklearn's PCA does, with the
explained variance ratios), the top Hessian eigenvectors, and Gram-Schmidt orthogonalisation of a
plane.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from landscape.errors import LandscapeError
from landscape.params import ParamLayout

NORMS = ("filter", "layer", "weight", "none")
EPS = 1e-10


def trainable(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's trainable parameters (detached), in ``named_parameters()`` order."""
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


def flat_parameters(model: torch.nn.Module) -> tuple[ParamLayout, torch.Tensor]:
    params = trainable(model)
    if not params:
        raise LandscapeError("the model has no trainable parameters")
    layout = ParamLayout.from_tensors(params)
    return layout, layout.flatten(params)


def gaussian(layout: ParamLayout, generator: torch.Generator, dtype: torch.dtype = torch.float32,
             device: torch.device | str = "cpu") -> torch.Tensor:
    """Standard normal entries, drawn on the CPU from ``generator`` (same numbers on every device)."""
    return torch.randn(layout.dim, generator=generator, dtype=torch.float64).to(dtype=dtype, device=device)


def normalize(direction: torch.Tensor, weights: torch.Tensor, layout: ParamLayout, norm: str = "filter",
              ignore_biasbn: bool = True) -> torch.Tensor:
    """The direction rescaled per tensor as described in the module docstring."""
    if norm not in NORMS:
        raise LandscapeError(f"unknown direction normalisation {norm!r}; choose one of {', '.join(NORMS)}")
    d_parts, w_parts = layout.unflatten(direction), layout.unflatten(weights)
    out = []
    for name in layout.names:
        d, w = d_parts[name], w_parts[name]
        if w.ndim <= 1 and ignore_biasbn:
            d = torch.zeros_like(d)
        elif norm == "weight":
            d = d * w
        elif norm == "layer" or (norm == "filter" and w.ndim <= 1):
            d = d * (w.norm() / (d.norm() + EPS))
        elif norm == "filter":
            dims = tuple(range(1, w.ndim))
            norm_of = torch.linalg.vector_norm
            d = d * (norm_of(w, dim=dims, keepdim=True) / (norm_of(d, dim=dims, keepdim=True) + EPS))
        out.append(d.reshape(-1))
    return torch.cat(out)


def orthogonalize(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """y minus its projection on x, rescaled to the norm y had (the plane keeps its scale)."""
    xx = torch.dot(x, x)
    if not xx > 0:
        return y
    z = y - (torch.dot(x, y) / xx) * x
    zn = z.norm()
    return z * (y.norm() / zn) if zn > 0 else z


def cosine(x: torch.Tensor, y: torch.Tensor) -> float:
    denom = float(x.norm() * y.norm())
    return float(torch.dot(x, y)) / denom if denom > 0 else 0.0


@dataclass
class TrajectoryPCA:
    """Principal directions of a trajectory w_1..w_T about its last point (unit vectors)."""
    directions: torch.Tensor        # (k, n)
    explained_variance_ratio: list[float]
    singular_values: list[float]
    coordinates: torch.Tensor       # (T, k): least-squares coordinates of w_i - w_T in the directions


def trajectory_pca(points: torch.Tensor, k: int = 2) -> TrajectoryPCA:
    """PCA of the rows w_i - w_T of ``points`` (T, n), T >= k + 1 (Li et al. 2018, Sec. 7)."""
    if points.ndim != 2 or points.shape[0] < k + 1:
        raise LandscapeError(f"PCA directions need at least {k + 1} checkpoints along the run, "
                             f"found {points.shape[0] if points.ndim == 2 else 0}")
    rows = (points - points[-1]).double()
    centred = rows - rows.mean(dim=0, keepdim=True)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    var = s.pow(2)
    total = float(var.sum())
    if not total > 0:
        raise LandscapeError("the checkpoints are all identical: the trajectory has no principal directions")
    dirs = vh[:k]
    coords = project(rows, dirs)
    return TrajectoryPCA(dirs.to(points.dtype), [float(v) / total for v in var[:k]], [float(v) for v in s[:k]],
                         coords)


def project(rows: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """Least-squares coordinates c of each row r in span(directions): min ||r - c^T D|| (D: (k, n))."""
    a = directions.double().T                                  # (n, k)
    return torch.linalg.lstsq(a, rows.double().T).solution.T    # (T, k)
