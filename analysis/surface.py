"""1-D loss slices and 2-D loss surfaces of a checkpoint, resumable, in the loss-landscape file format.

::

    loaded = load_checkpoint_model("runs/cnn")
    spec = SurfaceSpec(dims=2, directions="filter", xrange=(-1, 1), xnum=51)
    result = compute_surface(loaded, spec)          # RUN/analysis/<step>/surface-2d-filter.h5
    result.train_loss[i, j]                         # L(x_i, y_j): rows follow x, columns follow y
    SurfaceResult.load(result.path)                 # the stored file, in the same typed form

Directions (:mod:`landscape.analysis.directions`): ``random`` (Gaussian, normalised by ``norm``,
default none), ``filter`` (Gaussian, filter-normalised: Li et al. 2018), ``pca`` (principal
directions of the run's checkpoints about this one), ``eigen`` (top Hessian eigenvectors of the
training loss: those ``landscape analyze --top-k`` stored for the checkpoint, else Lanczos on
``eigen_samples`` samples); ``between`` replaces the x direction by
w_other - w (checkpoint buffers such as BatchNorm statistics move along with it in ``bn="eval"``
mode). In 2-D the y direction is orthogonalised against x (Gram-Schmidt, keeping its norm).

Storage and resume (:mod:`.surface_job`): the grid is cut into chunks of a fixed number of points,
fixed when the computation starts. ``surface-NAME.h5.partial/`` holds ``spec.h5`` (directions,
coordinates, options) and ``part-NNNNNN.h5`` files with the values of the chunks finished since the
previous part (``indices`` into the flattened grid), each written atomically every ``save_every``
seconds; a rerun with the same options computes only the missing chunks, so the result equals an
uninterrupted run bit for bit. The finished file is written atomically and the partial folder removed.

File layout (``format = "landscape.surface"``): ``xcoordinates`` (nx,), ``ycoordinates`` (ny,),
``train_loss``, ``train_acc``, ``test_loss``, ``test_acc`` of shape (nx,) or (nx, ny) with
``train_loss[i, j] = L(xcoordinates[i], ycoordinates[j])`` (the original loss-landscape code
stores the transpose under an (nx, ny) label); accuracies are fractions in [0, 1] (loss-landscape:
percent). ``xdirection/<k>``, ``ydirection/<k>``: the direction per parameter tensor in
``named_parameters()`` order (attribute ``names``), as loss-landscape's direction files.
PCA planes add ``explained_variance_ratio_`` and ``singular_values_``; eigen planes ``eigenvalues``;
2-D planes through a run with several checkpoints add the trajectory projection ``proj_xcoord``,
``proj_ycoord``, ``proj_steps`` (least squares of w_i - w in the plane; Li et al. Sec. 7).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from landscape import distributed
from landscape.errors import LandscapeError
from landscape.results import result_path
from landscape.runs import open_h5

from . import directions as dirs
from .contract import Choice, Progress, jsonable, parse_choices, require
from .loading import LoadedCheckpoint
from .surface_job import SURFACE_FORMAT, EvaluationPlan, Setup, SurfaceJob
from .surface_plane import Plane

SPLITS = ("train", "test")
METRICS = ("train_loss", "train_acc", "test_loss", "test_acc")
TRAJECTORY = ("proj_xcoord", "proj_ycoord", "proj_steps")


class Directions(Choice):
    RANDOM = "random"   # Gaussian, normalized by ``norm`` (default none)
    FILTER = "filter"   # Gaussian, filter-normalized (Li et al. 2018)
    PCA = "pca"         # principal directions of the run's checkpoints about this one
    EIGEN = "eigen"     # top Hessian eigenvectors of the training loss
    PLANE = "plane"     # given to compute_surface as a Plane (e.g. through two minima and a bend)


class BatchNormMode(Choice):
    EVAL = "eval"            # the stored running statistics (moved along buffer directions)
    RECOMPUTE = "recompute"  # re-estimated from the training data at every point


@dataclass
class SurfaceSpec:
    """A 1-D slice or 2-D surface L(w + x d_x [+ y d_y]) on ``xnum`` [x ``ynum``] points of ``xrange``
    [x ``yrange``]; directions as :class:`Directions` (``between``: d_x = w_other - w, another run,
    checkpoint file or step of this run); ``norm`` of random directions (filter, layer, weight, none);
    ``ignore_biasbn`` gives biases and BatchNorm parameters zero direction (Li et al.'s ``biasbn``);
    ``splits`` the data sets evaluated; ``bf16`` evaluates under bfloat16 autocast (GPUs; the largest
    error against full precision at three points is stored)."""

    dims: int = 2
    directions: Directions = Directions.FILTER
    norm: str | None = None              # default: filter for "filter", none for "random"
    ignore_biasbn: bool = True
    xrange: tuple[float, float] | None = None
    xnum: int = 51
    yrange: tuple[float, float] | None = None
    ynum: int | None = None
    between: str | None = None           # another run, checkpoint file, or step of this run
    bn: BatchNormMode = BatchNormMode.EVAL
    seed: int = 0
    splits: tuple[str, ...] = SPLITS
    eigen_samples: int = 1000
    name: str | None = None
    bf16: bool = False

    def __post_init__(self) -> None:
        parse_choices(self)

    def validate(self) -> None:
        require(self.dims in (1, 2), self, "dims", f"must be 1d or 2d, got {self.dims}d")
        require(self.norm is None or self.norm in dirs.NORMS, self, "norm",
                f"must be one of {', '.join(dirs.NORMS)}, got {self.norm!r}")
        require(self.xnum >= 2, self, "xnum", "needs at least 2 points per axis")
        require(self.ynum is None or self.ynum >= 2, self, "ynum", "needs at least 2 points per axis")
        for name in ("xrange", "yrange"):
            r = getattr(self, name)
            require(r is None or (math.isfinite(r[0]) and math.isfinite(r[1]) and r[0] < r[1]), self, name,
                    f"A:B needs finite A < B, got {r[0]}:{r[1]}" if r is not None else "")
        unknown = [s for s in self.splits if s not in SPLITS]
        require(not unknown and bool(self.splits), self, "splits",
                f"takes train and/or test, got {','.join(self.splits) or 'nothing'}")

    @property
    def resolved_norm(self) -> str:
        if self.norm is not None:
            return self.norm
        return "filter" if self.directions == Directions.FILTER else "none"

    @property
    def surface_name(self) -> str:
        if self.name:
            return self.name
        kind = "between" if self.between and self.dims == 1 else self.directions.value
        return f"surface-{self.dims}d-{kind}"

    def coordinates(self, default_range: tuple[float, float]) -> tuple[np.ndarray, np.ndarray | None]:
        """The x (and y) coordinates; ``default_range`` is the directions' own (e.g. the trajectory's)."""
        xr = self.xrange or default_range
        x = np.linspace(xr[0], xr[1], self.xnum)
        if self.dims == 1:
            return x, None
        yr = self.yrange or (xr if (self.xrange or not self.between) else (-1.0, 1.0))
        return x, np.linspace(yr[0], yr[1], self.ynum or self.xnum)

    def options(self) -> dict[str, Any]:
        """What the stored file records (and a resume must match)."""
        d = json.loads(json.dumps(asdict(self)))
        d.pop("name")
        d["norm"] = self.resolved_norm
        return d


@dataclass
class SurfaceResult:
    """A finished slice or surface: ``train_loss[i, j] = L(xcoordinates[i], ycoordinates[j])`` (rows follow
    x), accuracies as fractions; ``info`` (explained variance, eigenvalues, distance, evaluation plan),
    the trajectory projection of 2-D planes; how many points this call computed and resumed.

    It is stored by its computation (which resumes from its partial files) in the loss-landscape layout;
    ``save`` returns that file, ``load`` reads one."""

    kind: ClassVar[str] = "surface"
    stored_by_run: ClassVar[bool] = True
    checkpoint: int
    path: Path
    dims: int
    xcoordinates: np.ndarray
    ycoordinates: np.ndarray | None = None
    train_loss: np.ndarray | None = None
    train_acc: np.ndarray | None = None
    test_loss: np.ndarray | None = None
    test_acc: np.ndarray | None = None
    proj_xcoord: np.ndarray | None = None
    proj_ycoord: np.ndarray | None = None
    proj_steps: np.ndarray | None = None
    options: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    computed_points: int = 0
    resumed_points: int = 0
    seconds: float = 0.0

    def metric(self, name: str) -> np.ndarray:
        """One of METRICS by name (for plots that take ``--metric``)."""
        value = getattr(self, name, None) if name in METRICS else None
        if value is None:
            raise LandscapeError(f"{self.path} has no {name} (it has {', '.join(self.metrics())})")
        return value

    def metrics(self) -> list[str]:
        return [m for m in METRICS if getattr(self, m) is not None]

    def save(self, run: Any = None) -> Path:
        return self.path

    @classmethod
    def load(cls, path: str | Path) -> "SurfaceResult":
        """A finished surface file (its directions are left out)."""
        path = Path(path)
        if not path.exists():
            raise LandscapeError(f"surface file {path} not found")
        with open_h5(path, SURFACE_FORMAT, "surface file") as fh:
            arrays = {k: fh[k][()] for k in ("xcoordinates", "ycoordinates", *METRICS, *TRAJECTORY) if k in fh}
            return cls(checkpoint=int(fh.attrs.get("checkpoint", -1)), path=path,
                       dims=2 if "ycoordinates" in fh else 1, options=json.loads(fh.attrs.get("options", "{}")),
                       info=json.loads(fh.attrs.get("info", "{}")), **arrays)

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` object: file, options, axes, metric arrays (rows follow x), info, counts."""
        view: dict[str, Any] = {"checkpoint": self.checkpoint, "surface": str(self.path), "dims": self.dims,
                                "options": self.options,
                                "axis_order": "values[i][j] = f(xcoordinates[i], ycoordinates[j])"
                                if self.dims == 2 else "values[i] = f(xcoordinates[i])"}
        for key in ("xcoordinates", "ycoordinates", *METRICS, *TRAJECTORY):
            if getattr(self, key) is not None:
                view[key] = getattr(self, key)
        view.update(self.info)
        view.update(computed_points=self.computed_points, resumed_points=self.resumed_points, seconds=self.seconds)
        return jsonable(view)

    def summary(self) -> str:
        xs, ys = self.xcoordinates, self.ycoordinates
        grid = f"{len(xs)}" + (f" x {len(ys)}" if ys is not None else "")
        lines = [f"checkpoint {self.checkpoint}: {self.dims}-D {self.options['directions']} slice, {grid} points "
                 f"on [{xs[0]:g}, {xs[-1]:g}]" + (f" x [{ys[0]:g}, {ys[-1]:g}]" if ys is not None else "")]
        for key in self.metrics():
            v = np.asarray(getattr(self, key))
            lines.append(f"  {key}: min {np.nanmin(v):.4g}, max {np.nanmax(v):.4g}")
        info = self.info
        if "explained_variance_ratio_" in info:
            lines.append("  PCA explained variance: "
                         + ", ".join(f"{100 * r:.2f}%" for r in info["explained_variance_ratio_"]))
        if "eigenvalues" in info:
            lines.append("  Hessian eigenvalues of the directions: " + ", ".join(f"{v:.5g}" for v in info["eigenvalues"]))
        if "distance" in info:
            lines.append(f"  distance to {info['between']}: {info['distance']:.5g}")
        if self.computed_points == 0 and self.resumed_points == 0:
            lines.append("  (already computed with these options)")
        else:
            resumed = f", {self.resumed_points} resumed" if self.resumed_points else ""
            lines.append(f"  {self.computed_points} points computed{resumed} in {self.seconds:.2f} s")
        lines.append(f"  saved {self.path}")
        return "\n".join(lines)


def compute_surface(loaded: LoadedCheckpoint, spec: SurfaceSpec, progress: Progress | None = None, *,
                    plan: EvaluationPlan | None = None, path: Path | None = None,
                    plane: Plane | None = None) -> SurfaceResult:
    """Compute (or resume, or return the finished) surface at ``path`` (default
    ``RUN/analysis/<checkpoint>/<spec.surface_name>.h5``).

    ``plan`` fixes chunking, batching and how often finished chunks are stored (a kill loses at most
    that much work); ``progress(done, total, "surface")`` is called after every chunk. ``plane`` gives the
    directions directly (``spec.directions = "plane"``), e.g. the plane through two minima and a bend."""
    spec.validate()
    plan = plan or EvaluationPlan()
    plan.validate()
    if (plane is None) != (spec.directions != Directions.PLANE):
        raise LandscapeError("directions='plane' goes with a Plane argument, and only with it")
    t0 = time.perf_counter()
    options = spec.options()
    if plane is not None:
        options["plane"] = json.loads(json.dumps(plane.info))
    job = SurfaceJob(loaded, spec, options, path or result_path(loaded.run, loaded.step, spec.surface_name), plan, plane)
    setup = _rank0_setup(job)
    if setup is None:  # finished before, with these options
        return distributed.broadcast(_finished(job, 0, 0, 0.0))
    computed, resumed = job.evaluate(setup, progress)
    if not distributed.is_main():
        return distributed.broadcast(None)
    job.write(setup)
    return distributed.broadcast(_finished(job, computed, resumed, time.perf_counter() - t0))


def _rank0_setup(job: SurfaceJob) -> Setup | None:
    """Rank 0 reads the files and decides (None: already finished); the other ranks get its decisions."""
    decision: Setup | LandscapeError | None = None
    if distributed.is_main():
        try:
            decision = None if job.finished() else job.prepare()
        except LandscapeError as exc:
            decision = exc
    if distributed.world_size() > 1:
        if isinstance(decision, Setup):  # tensors travel on the CPU
            decision.vectors = [v.cpu() for v in decision.vectors]
            decision.buffer_vectors = [{n: t.cpu() for n, t in b.items()} for b in decision.buffer_vectors]
        decision = distributed.broadcast(decision)
    if isinstance(decision, LandscapeError):
        raise decision
    if decision is not None:
        decision.vectors = [v.to(device=job.device, dtype=job.dtype) for v in decision.vectors]
        decision.buffer_vectors = [{n: t.to(job.device) for n, t in b.items()} for b in decision.buffer_vectors]
    return decision


def _finished(job: SurfaceJob, computed: int, resumed: int, seconds: float) -> SurfaceResult:
    result = SurfaceResult.load(job.path) if distributed.is_main() else None
    if result is not None:
        result.computed_points, result.resumed_points, result.seconds = computed, resumed, seconds
    return result
