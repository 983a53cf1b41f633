"""Curvature analysis of a checkpoint: eigenvalues, trace, tr(H^2), diagonal, spectral density.

This is what ``landscape analyze RUN --top-k/--bottom-k/--trace/--frobenius/--diag/--density``
computes; from Python::

    loaded = load_checkpoint_model("runs/cnn", "last", samples=1000)
    result = run_curvature(loaded, CurvatureSpec(top_k=5, trace=True, density=True))
    result.eigenvalues, result.trace.estimate, result.trace.stderr; result.save(loaded.run)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import torch

from landscape import distributed
from landscape.linalg import estimate_trace, hutchinson
from landscape.linalg.lanczos import EigenResult, lanczos
from landscape.linalg.operators import FisherOperator, GGNOperator, HessianOperator
from landscape.linalg.slq import slq
from landscape.objective import Objective

from .contract import Choice, Progress, Result, attrs_field, jsonable, parse_choices, require
from .loading import LoadedCheckpoint


class Curvature(Choice):
    HESSIAN = "hessian"
    GGN = "ggn"
    FISHER = "fisher"


class FisherType(Choice):
    MC = "mc"                # the true Fisher, targets sampled from the model
    EMPIRICAL = "empirical"  # the empirical Fisher, the data's own targets


class Precision(Choice):
    FLOAT32 = "float32"
    FLOAT64 = "float64"

    @property
    def dtype(self) -> torch.dtype:
        return getattr(torch, self.value)


class ProductMethod(Choice):
    AUTO = "auto"
    DOUBLE_BACKWARD = "double-backward"
    FORWARD_OVER_REVERSE = "forward-over-reverse"


class Backend(Choice):
    LANDSCAPE = "landscape"
    PYHESSIAN = "pyhessian"  # the peer package's own code, to reproduce its numbers


@dataclass
class CurvatureSpec:
    """Which curvature matrix (Hessian, GGN, Fisher) and which of its quantities to estimate.

    Eigenvalues by Lanczos with full reorthogonalization (``top_k`` largest, ``bottom_k`` smallest,
    to relative Ritz residual ``tol``); the trace by the adaptive Hutch++/control-variate estimator
    until its standard error is at most ``trace_rtol * |trace|``; tr(H^2) and the diagonal by
    Hutchinson; the spectral density by stochastic Lanczos quadrature (``density_runs`` runs of
    ``density_steps`` steps); ``per_layer`` repeats eigenvalues and trace on each layer's block.
    """

    curvature: Curvature = Curvature.HESSIAN
    fisher_type: FisherType = FisherType.MC
    top_k: int = 0
    bottom_k: int = 0
    trace: bool = False
    frobenius: bool = False
    diag: bool = False
    density: bool = False
    per_layer: bool = False
    seed: int = 0
    batch_size: int | None = None
    precision: Precision | None = None  # None: the model's own
    product_method: ProductMethod = ProductMethod.AUTO
    compile: bool = False               # torch.compile the forward-over-reverse Hessian-vector product
    tol: float = 1e-5
    trace_rtol: float = 1e-2
    max_probes: int = 1000
    density_runs: int = 10
    density_steps: int = 80
    density_points: int = 1000
    backend: Backend = Backend.LANDSCAPE

    def __post_init__(self) -> None:
        parse_choices(self)

    def validate(self) -> None:
        require(self.top_k >= 0, self, "top_k", f"must be >= 0, got {self.top_k}")
        require(self.bottom_k >= 0, self, "bottom_k", f"must be >= 0, got {self.bottom_k}")
        require(self.wants_something(), self, "top_k", "is 0 and nothing else is asked for: set {top_k}, {bottom_k}, "
                "{trace}, {frobenius}, {diag} or {density}")
        require(not self.compile or self.curvature == Curvature.HESSIAN, self, "compile",
                "applies to Hessian-vector products ({curvature} hessian)")
        require(self.tol > 0, self, "tol", f"must be positive, got {self.tol}")
        require(self.trace_rtol > 0, self, "trace_rtol", f"must be positive, got {self.trace_rtol}")
        require(self.max_probes >= 2, self, "max_probes", f"must be >= 2, got {self.max_probes}")
        require(self.density_runs >= 1, self, "density_runs", f"must be >= 1, got {self.density_runs}")
        require(self.density_steps >= 2, self, "density_steps", f"must be >= 2, got {self.density_steps}")
        require(self.batch_size is None or self.batch_size > 0, self, "batch_size",
                f"must be positive, got {self.batch_size}")
        if self.backend == Backend.PYHESSIAN:
            only = not (self.curvature != Curvature.HESSIAN or self.bottom_k or self.frobenius or self.diag
                        or self.per_layer)
            require(only, self, "backend", "pyhessian computes only the Hessian's {top_k} and {trace}")
            require(distributed.world_size() == 1, self, "backend",
                    "pyhessian (the peer's code) does not run under torchrun; run it as one process")

    def wants_something(self) -> bool:
        return bool(self.top_k or self.bottom_k or self.trace or self.frobenius or self.diag or self.density)


@dataclass
class LanczosRun:
    iterations: int
    products: int
    converged: bool


@dataclass
class TraceEstimate:
    """A stochastic estimate with its standard error (``method``: the trace estimator chosen)."""

    estimate: float
    stderr: float | None
    probes: int
    products: int | None = None
    converged: bool | None = None
    method: str | None = None


@dataclass
class Diagonal:
    values: list[float]
    stderr: list[float]
    probes: int
    sum: float


@dataclass
class Density:
    """Gaussian-smoothed SLQ density on ``grid`` (width ``sigma``), its quadrature nodes and weights
    (one list per run) and the mass below zero."""

    grid: list[float]
    values: list[float]
    sigma: float
    nodes: list
    weights: list
    negative_mass: float
    products: int


@dataclass
class Spectrum:
    """The fields of a (block's) spectrum shared by the whole matrix and its per-layer blocks."""

    eigenvalues: list[float] | None = None
    eigenvalue_residuals: list[float] | None = None
    lanczos: LanczosRun | None = None
    smallest_eigenvalues: list[float] | None = None
    smallest_residuals: list[float] | None = None
    smallest_lanczos: LanczosRun | None = None
    trace: TraceEstimate | None = None
    frobenius_squared: TraceEstimate | None = None
    diagonal: Diagonal | None = None


@dataclass
class LayerCurvature(Spectrum):
    parameters: int = 0


@dataclass
class CurvatureSummary:
    lambda_max: float | None = None
    lambda_min: float | None = None
    condition_number: float | None = None  # NaN when lambda_min <= 0
    negative_ratio: float | None = None    # |lambda_min| / |lambda_max| when lambda_min < 0
    negative_mass: float | None = None


@dataclass
class CurvatureResult(Result, Spectrum):
    """Estimates of one checkpoint's curvature; stored as ``<curvature>.h5`` (``pyhessian.h5`` for the
    PyHessian backend), merged with the quantities earlier invocations stored."""

    kind: ClassVar[str] = "curvature"
    merge: ClassVar[bool] = True
    checkpoint: int = 0
    curvature: Curvature = Curvature.HESSIAN
    backend: Backend | None = None
    samples: int = 0
    parameters: int | None = None
    precision: str | None = None
    loss: float | None = None
    eigenvectors: torch.Tensor | None = field(default=None, repr=False)  # (k, n); in the file, not in --json
    density: Density | None = None
    per_layer: dict[str, LayerCurvature] | None = None
    summary_values: CurvatureSummary | None = field(default=None, metadata={"key": "summary"})
    products: int | None = None
    product_method: str | None = None
    product_calibration: dict[str, Any] | None = None
    seconds: float = 0.0
    attrs: dict[str, Any] = attrs_field()

    @property
    def name(self) -> str:
        return Backend.PYHESSIAN.value if self.backend == Backend.PYHESSIAN else self.curvature.value

    @classmethod
    def load(cls, run, checkpoint: str | int = "last", name: str | None = None) -> "CurvatureResult":
        """The stored ``name`` result (hessian, ggn, fisher or pyhessian; default hessian) of ``checkpoint``."""
        return super().load(run, checkpoint, name or Curvature.HESSIAN.value)

    def to_json(self) -> dict[str, Any]:
        tree = self.to_tree()
        tree.pop("eigenvectors", None)
        if "density" in tree:
            tree["density"] = {k: v for k, v in tree["density"].items() if k not in ("nodes", "weights")}
        return jsonable({"checkpoint": self.checkpoint, **tree})

    def summary(self) -> str:
        return "\n".join([f"checkpoint {self.checkpoint}:", *_summary_lines(self)])


def _summary_lines(r: CurvatureResult) -> list[str]:
    lines = []
    if r.eigenvalues:
        lines.append(f"  top {r.curvature} eigenvalues: " + ", ".join(f"{v:.6g}" for v in r.eigenvalues))
    if r.smallest_eigenvalues:
        lines.append("  smallest eigenvalues: " + ", ".join(f"{v:.6g}" for v in r.smallest_eigenvalues))
    if r.trace is not None:
        se = f" +- {r.trace.stderr:.3g}" if r.trace.stderr is not None else ""
        lines.append(f"  trace {r.trace.estimate:.6g}{se} ({r.trace.probes} probes)")
    if r.frobenius_squared is not None:
        lines.append(f"  tr(H^2) {r.frobenius_squared.estimate:.6g} +- {r.frobenius_squared.stderr:.3g}")
    if r.diagonal is not None:
        lines.append(f"  diagonal: sum {r.diagonal.sum:.6g} ({r.diagonal.probes} probes)")
    if r.density is not None:
        lines.append(f"  density: {len(r.density.grid)} points, negative mass {r.density.negative_mass:.3g}")
    for group, layer in (r.per_layer or {}).items():
        parts = []
        if layer.eigenvalues:
            parts.append("eigenvalues " + ", ".join(f"{v:.4g}" for v in layer.eigenvalues))
        if layer.trace is not None:
            parts.append(f"trace {layer.trace.estimate:.4g}")
        lines.append(f"  layer {group} ({layer.parameters} params): " + "; ".join(parts))
    if r.products is not None:
        compiled = (r.product_calibration or {}).get("compile_seconds")
        lines.append(f"  {r.products} products in {r.seconds:.2f} s"
                     + (f" ({r.product_method})" if r.product_method else "")
                     + (f", of which {compiled:.1f} s compiling" if compiled else ""))
    return lines


def make_operator(objective: Objective, spec: CurvatureSpec):
    if spec.curvature == Curvature.HESSIAN:
        return HessianOperator(objective, method=spec.product_method.value, compile=spec.compile)
    if spec.curvature == Curvature.GGN:
        return GGNOperator(objective)
    return FisherOperator(objective, kind=spec.fisher_type.value, seed=spec.seed)


def _lanczos_run(found: EigenResult) -> LanczosRun:
    return LanczosRun(iterations=found.iterations, products=found.products, converged=found.converged)


def _spectrum(op, spec: CurvatureSpec, into: Spectrum, progress: Progress | None = None) -> torch.Tensor | None:
    """Fill ``into`` with the requested eigenvalues and trace of ``op``; returns the top eigenvectors."""
    vectors = None
    if spec.top_k:
        _tell(progress, "largest eigenvalues (Lanczos)")
        top = lanczos(op, k=spec.top_k, which="LA", tol=spec.tol, seed=spec.seed)
        into.eigenvalues, into.eigenvalue_residuals = top.eigenvalues.tolist(), top.residuals.tolist()
        into.lanczos, vectors = _lanczos_run(top), top.eigenvectors.T.contiguous().cpu()
    if spec.bottom_k:
        _tell(progress, "smallest eigenvalues (Lanczos)")
        bottom = lanczos(op, k=spec.bottom_k, which="SA", tol=spec.tol, seed=spec.seed + 1,
                         max_iter=max(300, 10 * spec.bottom_k))
        into.smallest_eigenvalues, into.smallest_residuals = bottom.eigenvalues.tolist(), bottom.residuals.tolist()
        into.smallest_lanczos = _lanczos_run(bottom)
    if spec.trace:
        _tell(progress, "trace")
        into.trace = TraceEstimate(**estimate_trace(op, rtol=spec.trace_rtol, seed=spec.seed,
                                                    max_probes=spec.max_probes).as_dict())
    if spec.frobenius or spec.diag:
        _tell(progress, "Hutchinson")
        _hutchinson(op, spec, into)
    return vectors


def _tell(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(0, None, message)


def _hutchinson(op, spec: CurvatureSpec, result: Spectrum) -> None:
    h = hutchinson(op, rtol=spec.trace_rtol, seed=spec.seed + 2, max_probes=spec.max_probes,
                   frobenius=spec.frobenius, diagonal=spec.diag)
    if spec.frobenius:
        result.frobenius_squared = TraceEstimate(estimate=h.frobenius.estimate, stderr=h.frobenius.stderr,
                                                 probes=h.probes)
    if spec.diag:
        result.diagonal = Diagonal(values=h.diagonal.cpu().tolist(), stderr=h.diagonal_stderr.cpu().tolist(),
                                   probes=h.probes, sum=float(h.diagonal.sum()))


def _density(op, spec: CurvatureSpec) -> Density:
    dens = slq(op, num_runs=spec.density_runs, num_steps=spec.density_steps, seed=spec.seed + 3)
    grid, values = dens.smooth(num_points=spec.density_points)
    return Density(grid=grid.tolist(), values=values.tolist(), sigma=dens.default_sigma(), nodes=dens.nodes,
                   weights=dens.weights, negative_mass=dens.negative_mass(), products=dens.products)


def _per_layer(op, spec: CurvatureSpec) -> dict[str, LayerCurvature]:
    layer_spec = replace(spec, density=False, diag=False, per_layer=False)
    layers = {}
    for group, block in op.blocks().items():
        layers[group] = LayerCurvature(parameters=block.shape[0])
        _spectrum(block, layer_spec, layers[group])
    return layers


def _summarize(result: CurvatureResult) -> CurvatureSummary:
    summary = CurvatureSummary()
    top, bottom = result.eigenvalues, result.smallest_eigenvalues
    if top:
        summary.lambda_max = top[0]
    if bottom:
        summary.lambda_min = bottom[0]
    if top and bottom:
        lmax, lmin = top[0], bottom[0]
        summary.condition_number = lmax / lmin if lmin > 0 else math.nan
        summary.negative_ratio = abs(lmin) / abs(lmax) if lmin < 0 and lmax else 0.0
    if result.density is not None:
        summary.negative_mass = result.density.negative_mass
    return summary


def run_curvature(loaded: LoadedCheckpoint, spec: CurvatureSpec, progress: Progress | None = None) -> CurvatureResult:
    """Run the requested curvature estimators on a loaded checkpoint (every rank under torchrun)."""
    spec.validate()
    if spec.backend == Backend.PYHESSIAN:
        from .pyhessian_backend import pyhessian_analysis

        tree = pyhessian_analysis(loaded, top_k=spec.top_k, trace=spec.trace, density=spec.density,
                                  batch_size=spec.batch_size, seed=spec.seed)
        return CurvatureResult.from_stored(tree, loaded.step, loaded.subset)
    t0 = time.perf_counter()
    ds = loaded.dataset
    objective = Objective(loaded.model, ds.x_train, ds.y_train, loaded.loss, batch_size=spec.batch_size,
                          dtype=spec.precision.dtype if spec.precision else None, device=loaded.device, shard=True)
    op = make_operator(objective, spec)
    precision = str(objective.dtype).replace("torch.", "")
    result = CurvatureResult(checkpoint=loaded.step, curvature=spec.curvature, parameters=objective.dim,
                             samples=ds.num_train, precision=precision, loss=objective.value(),
                             attrs={**loaded.subset, "precision": precision})
    result.eigenvectors = _spectrum(op, spec, result, progress)
    if spec.density:
        _tell(progress, "spectral density (SLQ)")
        result.density = _density(op, spec)
    if spec.per_layer:
        _tell(progress, "per-layer blocks")
        result.per_layer = _per_layer(op, spec)
    result.summary_values = _summarize(result)
    result.products = op.num_products
    if isinstance(op, HessianOperator):
        result.product_method, result.product_calibration = op.method, dict(op.calibration)
    result.seconds = time.perf_counter() - t0
    return result
