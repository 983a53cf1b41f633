"""Curvature analysis of a checkpoint: eigenvalues, trace, tr(H^2), diagonal, spectral density.

This is what ``landscape analyze RUN --top-k/--bottom-k/--trace/--frobenius/--diag/--density``
computes; it is equally usable from Python::

    loaded = load_checkpoint_model("runs/cnn", "last", samples=1000)
    result = curvature_analysis(loaded, top_k=5, trace=True, density=True)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from landscape.errors import LandscapeError
from landscape.linalg import estimate_trace, hutchinson
from landscape.linalg.lanczos import lanczos
from landscape.linalg.operators import FisherOperator, GGNOperator, HessianOperator
from landscape.linalg.slq import slq
from landscape.objective import Objective

from .loading import LoadedCheckpoint

PRECISIONS = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class CurvatureOptions:
    curvature: str = "hessian"          # hessian | ggn | fisher
    fisher_type: str = "mc"             # mc | empirical
    top_k: int = 0
    bottom_k: int = 0
    trace: bool = False
    frobenius: bool = False
    diag: bool = False
    density: bool = False
    per_layer: bool = False
    seed: int = 0
    batch_size: int | None = None
    precision: str | None = None        # float32 | float64 | None: the model's own
    product_method: str = "auto"
    compile: bool = False               # torch.compile the forward-over-reverse Hessian-vector product
    tol: float = 1e-5                   # Lanczos: relative Ritz residual
    trace_rtol: float = 1e-2            # stop when stderr <= trace_rtol * |trace|
    max_probes: int = 1000
    density_runs: int = 10
    density_steps: int = 80
    density_points: int = 1000

    def validate(self) -> None:
        if self.curvature not in ("hessian", "ggn", "fisher"):
            raise LandscapeError(f"--curvature must be hessian, ggn or fisher, got {self.curvature!r}")
        if self.fisher_type not in ("mc", "empirical"):
            raise LandscapeError(f"--fisher-type must be mc or empirical, got {self.fisher_type!r}")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise LandscapeError(f"--precision must be float32 or float64, got {self.precision!r}")
        if self.product_method not in ("auto", "double-backward", "forward-over-reverse"):
            raise LandscapeError("--product-method must be auto, double-backward or forward-over-reverse")
        if self.compile and self.curvature != "hessian":
            raise LandscapeError("--compile applies to Hessian-vector products (--curvature hessian)")
        if self.top_k < 0 or self.bottom_k < 0:
            raise LandscapeError("--top-k and --bottom-k must be >= 0")
        if not (self.tol > 0 and self.trace_rtol > 0):
            raise LandscapeError("--tol and --trace-rtol must be positive")
        if self.density_runs < 1 or self.density_steps < 2:
            raise LandscapeError("--density-runs must be >= 1 and --density-steps >= 2")

    def wants_curvature(self) -> bool:
        return bool(self.top_k or self.bottom_k or self.trace or self.frobenius or self.diag or self.density)


def make_operator(objective: Objective, opts: CurvatureOptions):
    if opts.curvature == "hessian":
        return HessianOperator(objective, method=opts.product_method, compile=opts.compile)
    if opts.curvature == "ggn":
        return GGNOperator(objective)
    return FisherOperator(objective, kind=opts.fisher_type, seed=opts.seed)


def _spectrum(op, opts: CurvatureOptions) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if opts.top_k:
        top = lanczos(op, k=opts.top_k, which="LA", tol=opts.tol, seed=opts.seed)
        out["eigenvalues"] = top.eigenvalues.tolist()
        out["eigenvalue_residuals"] = top.residuals.tolist()
        out["eigenvectors"] = top.eigenvectors.T.contiguous().cpu()  # (k, n), stored in HDF5 only
        out["lanczos"] = {"iterations": top.iterations, "products": top.products, "converged": top.converged}
    if opts.bottom_k:
        bottom = lanczos(op, k=opts.bottom_k, which="SA", tol=opts.tol, seed=opts.seed + 1,
                         max_iter=max(300, 10 * opts.bottom_k))
        out["smallest_eigenvalues"] = bottom.eigenvalues.tolist()
        out["smallest_residuals"] = bottom.residuals.tolist()
        out["smallest_lanczos"] = {"iterations": bottom.iterations, "products": bottom.products,
                                   "converged": bottom.converged}
    if opts.trace:
        tr = estimate_trace(op, rtol=opts.trace_rtol, seed=opts.seed, max_probes=opts.max_probes)
        out["trace"] = tr.as_dict()
    if opts.frobenius or opts.diag:
        h = hutchinson(op, rtol=opts.trace_rtol, seed=opts.seed + 2, max_probes=opts.max_probes,
                       frobenius=opts.frobenius, diagonal=opts.diag)
        if opts.frobenius:
            out["frobenius_squared"] = {**h.frobenius.as_dict(), "probes": h.probes}
        if opts.diag:
            out["diagonal"] = {"values": h.diagonal.cpu().tolist(), "stderr": h.diagonal_stderr.cpu().tolist(),
                               "probes": h.probes, "sum": float(h.diagonal.sum())}
    return out


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    top = result.get("eigenvalues")
    bottom = result.get("smallest_eigenvalues")
    if top:
        summary["lambda_max"] = top[0]
    if bottom:
        summary["lambda_min"] = bottom[0]
    if top and bottom:
        lmax, lmin = top[0], bottom[0]
        summary["condition_number"] = lmax / lmin if lmin > 0 else None
        summary["negative_ratio"] = abs(lmin) / abs(lmax) if lmin < 0 and lmax else 0.0
    if "density" in result:
        summary["negative_mass"] = result["density"]["negative_mass"]
    return summary


def curvature_analysis(loaded: LoadedCheckpoint, opts: CurvatureOptions | None = None, **kwargs) -> dict[str, Any]:
    """Run the requested curvature estimators on a loaded checkpoint; returns a result tree."""
    opts = opts or CurvatureOptions(**kwargs)
    opts.validate()
    t0 = time.perf_counter()
    ds = loaded.dataset
    objective = Objective(loaded.model, ds.x_train, ds.y_train, loaded.loss, batch_size=opts.batch_size,
                          dtype=PRECISIONS.get(opts.precision), device=loaded.device, shard=True)
    op = make_operator(objective, opts)
    result: dict[str, Any] = {"curvature": opts.curvature, "parameters": objective.dim, "samples": ds.num_train,
                              "precision": str(objective.dtype).replace("torch.", ""), "loss": objective.value()}
    result.update(_spectrum(op, opts))
    if opts.density:
        dens = slq(op, num_runs=opts.density_runs, num_steps=opts.density_steps, seed=opts.seed + 3)
        grid, values = dens.smooth(num_points=opts.density_points)
        result["density"] = {"grid": grid.tolist(), "values": values.tolist(), "sigma": dens.default_sigma(),
                             "nodes": dens.nodes, "weights": dens.weights, "negative_mass": dens.negative_mass(),
                             "products": dens.products}
    if opts.per_layer:
        layer_opts = CurvatureOptions(**{**opts.__dict__, "density": False, "diag": False, "per_layer": False})
        layers = {}
        for group, block in op.blocks().items():
            block_result = {"parameters": block.shape[0], **_spectrum(block, layer_opts)}
            block_result.pop("eigenvectors", None)
            layers[group] = block_result
        result["per_layer"] = layers
    result["summary"] = _summary(result)
    result["products"] = op.num_products
    if isinstance(op, HessianOperator):
        result["product_method"] = op.method
        result["product_calibration"] = dict(op.calibration)
    result["seconds"] = time.perf_counter() - t0
    return result


def json_view(result: dict[str, Any]) -> dict[str, Any]:
    """The result without bulky arrays (eigenvectors, quadrature nodes), as plain JSON types."""
    out = {}
    for key, value in result.items():
        if key == "eigenvectors":
            continue
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in ("nodes", "weights")}
            value = json_view(value)
        elif isinstance(value, np.ndarray):
            value = value.tolist()
        elif isinstance(value, torch.Tensor):
            value = value.tolist()
        elif isinstance(value, float) and not math.isfinite(value):
            value = None
        out[key] = value
    return out
