"""1-D loss slices and 2-D loss surfaces of a checkpoint, resumable, in the loss-landscape file format.

::

    loaded = load_checkpoint_model("runs/cnn")
    spec = SurfaceSpec(dims=2, directions="filter", xrange=(-1, 1), xnum=51)
    result = compute_surface(loaded, spec)          # RUN/analysis/<step>/surface-2d-filter.h5
    result["train_loss"][i, j]                      # L(x_i, y_j): rows follow x, columns follow y

Directions (:mod:`landscape.analysis.directions`): ``random`` (Gaussian, normalised by ``norm``,
default none), ``filter`` (Gaussian, filter-normalised: Li et al. 2018), ``pca`` (principal
directions of the run's checkpoints about this one), ``eigen`` (top Hessian eigenvectors of the
training loss: those ``landscape analyze --top-k`` stored for the checkpoint, else Lanczos on
``eigen_samples`` samples); ``between`` replaces the x direction by
w_other - w (checkpoint buffers such as BatchNorm statistics move along with it in ``bn="eval"``
mode). In 2-D the y direction is orthogonalised against x (Gram-Schmidt, keeping its norm).

Storage and resume: the grid is cut into chunks of a fixed number of points, fixed when the
computation starts. ``surface-NAME.h5.partial/`` holds ``spec.h5`` (directions, coordinates,
options) and ``part-NNNNNN.h5`` files with the values of the chunks finished since the previous
part (``indices`` into the flattened grid), each written atomically every ``save_every`` seconds;
a rerun with the same options computes only the missing chunks, so the result equals an
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
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np
import torch

from landscape import distributed
from landscape.atomic import remove_stale_temporaries
from landscape.errors import LandscapeError
from landscape.linalg.lanczos import lanczos
from landscape.linalg.operators import HessianOperator
from landscape.objective import Objective
from landscape.params import ParamLayout
from landscape.results import load_result, result_path
from landscape.runs import SCHEMA, Checkpoint, Run, atomic_h5, read_checkpoint

from . import directions as dirs
from .grid_evaluation import GridEvaluator, candidate_plans, fastest_plan, plan_chunks, split_batches
from .loading import LoadedCheckpoint

SURFACE_FORMAT = "landscape.surface"
DIRECTIONS = ("random", "filter", "pca", "eigen")
SPLITS = ("train", "test")
ROUND_SECONDS = 1.0  # several processes: the length of a round of chunks between two gathers on rank 0
DEFAULT_MEMORY = {"cpu": 16 * 2**20, "cuda": 2 * 2**30}  # CPU: stay near the caches


@dataclass
class SurfaceSpec:
    dims: int = 2
    directions: str = "filter"
    norm: str | None = None              # default: filter for "filter", none for "random"
    ignore_biasbn: bool = True
    xrange: tuple[float, float] | None = None
    xnum: int = 51
    yrange: tuple[float, float] | None = None
    ynum: int | None = None
    between: str | None = None           # another run, checkpoint file, or step of this run
    bn: str = "eval"                     # eval | recompute
    seed: int = 0
    splits: tuple[str, ...] = SPLITS
    eigen_samples: int = 1000
    name: str | None = None
    bf16: bool = False                   # forward passes under bfloat16 autocast (GPUs; checked, see info)

    def validate(self) -> None:
        if self.dims not in (1, 2):
            raise LandscapeError(f"--slice must be 1d or 2d, got {self.dims}d")
        if self.directions not in DIRECTIONS + ("plane",):  # plane: directions given to compute_surface
            raise LandscapeError(f"--directions must be one of {', '.join(DIRECTIONS)}, got {self.directions!r}")
        if self.norm is not None and self.norm not in dirs.NORMS:
            raise LandscapeError(f"--norm must be one of {', '.join(dirs.NORMS)}, got {self.norm!r}")
        if self.xnum < 2 or (self.ynum is not None and self.ynum < 2):
            raise LandscapeError("--grid needs at least 2 points per axis")
        for r in (self.xrange, self.yrange):
            if r is not None and not (math.isfinite(r[0]) and math.isfinite(r[1]) and r[0] < r[1]):
                raise LandscapeError(f"--range A:B needs finite A < B, got {r[0]}:{r[1]}")
        if self.bn not in ("eval", "recompute"):
            raise LandscapeError(f"--bn must be eval or recompute, got {self.bn!r}")
        unknown = [s for s in self.splits if s not in SPLITS]
        if unknown or not self.splits:
            raise LandscapeError(f"--metrics takes train and/or test, got {','.join(self.splits) or 'nothing'}")

    @property
    def resolved_norm(self) -> str:
        if self.norm is not None:
            return self.norm
        return "filter" if self.directions == "filter" else "none"

    @property
    def surface_name(self) -> str:
        if self.name:
            return self.name
        kind = "between" if self.between and self.dims == 1 else self.directions
        return f"surface-{self.dims}d-{kind}"


def parse_range(text: str) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in text.split(":"))
    except ValueError:
        raise LandscapeError(f"--range must be A:B with numbers A < B, got {text!r}") from None
    return a, b


# --- directions ------------------------------------------------------------------------------------------
@dataclass
class Plane:
    layout: ParamLayout
    vectors: list[torch.Tensor]                       # 1 or 2 flat directions
    buffer_vectors: list[dict[str, torch.Tensor]]     # per direction: float-buffer differences (may be empty)
    info: dict[str, Any]                              # explained variance, eigenvalues, cosines ...
    default_range: tuple[float, float]
    trajectory: dict[str, np.ndarray] | None = None


def other_checkpoint(run: Run, ref: str) -> Checkpoint:
    """The checkpoint ``ref`` names: a checkpoint file, a run folder (its last checkpoint) or a step of ``run``."""
    path = Path(ref)
    if path.is_file():
        return read_checkpoint(path, weights_only=True)
    if path.is_dir():
        return Run.open(path).load_checkpoint("last", weights_only=True)
    try:
        return run.load_checkpoint(int(ref), weights_only=True)
    except ValueError:
        raise LandscapeError(f"--between {ref!r} is neither a run folder, a checkpoint file nor a step") from None


def _between(loaded: LoadedCheckpoint, layout: ParamLayout, center: torch.Tensor, ref: str
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    other = other_checkpoint(loaded.run, ref)
    params = dict(other.params)
    missing = [n for n in layout.names if n not in params]
    if missing:
        raise LandscapeError(f"--between {ref}: checkpoint has no parameter {missing[0]!r} (different model?)")
    for name, shape in zip(layout.names, layout.shapes):
        if tuple(params[name].shape) != tuple(shape):
            raise LandscapeError(f"--between {ref}: parameter {name!r} has shape {tuple(params[name].shape)}, "
                                 f"this model has {tuple(shape)}")
    target = layout.flatten({n: params[n].to(center) for n in layout.names})
    own = dict(loaded.model.named_buffers())
    buffers = {n: b.to(own[n]) - own[n] for n, b in other.buffers.items()
               if n in own and own[n].is_floating_point() and tuple(b.shape) == tuple(own[n].shape)}
    return target - center, buffers


def _trajectory_points(run: Run, layout: ParamLayout, up_to: int, device, dtype) -> tuple[list[int], torch.Tensor]:
    steps = [s for s in run.checkpoint_steps() if s <= up_to]
    rows = []
    for s in steps:
        ck = run.load_checkpoint(s, weights_only=True)
        rows.append(layout.flatten({n: ck.params[n].to(device=device, dtype=dtype) for n in layout.names}))
    return steps, (torch.stack(rows) if rows else torch.zeros(0, layout.dim, device=device, dtype=dtype))


def build_plane(loaded: LoadedCheckpoint, spec: SurfaceSpec) -> Plane:
    """The directions of the slice or surface described by ``spec`` at the loaded checkpoint."""
    layout, center = dirs.flat_parameters(loaded.model)
    gen = torch.Generator().manual_seed(spec.seed)
    info: dict[str, Any] = {}
    vectors: list[torch.Tensor] = []
    buffer_vectors: list[dict[str, torch.Tensor]] = []
    default = (-1.0, 1.0)
    trajectory = None
    wanted = spec.dims
    if spec.between:
        d, buffers = _between(loaded, layout, center, spec.between)
        if not bool(d.any()):
            raise LandscapeError(f"--between {spec.between}: the two checkpoints have identical parameters")
        vectors.append(d)
        buffer_vectors.append(buffers)
        info["between"] = spec.between
        info["distance"] = float(d.norm())
        default = (-0.5, 1.5)
        wanted -= 1
    if wanted:
        if spec.directions in ("random", "filter"):
            for _ in range(wanted):
                raw = dirs.gaussian(layout, gen, center.dtype, center.device)
                vectors.append(dirs.normalize(raw, center, layout, spec.resolved_norm, spec.ignore_biasbn))
                buffer_vectors.append({})
        elif spec.directions == "pca":
            steps, points = _trajectory_points(loaded.run, layout, loaded.step, center.device, center.dtype)
            pca = dirs.trajectory_pca(points, k=wanted)
            vectors.extend(pca.directions)
            buffer_vectors.extend({} for _ in range(wanted))
            info["explained_variance_ratio_"] = pca.explained_variance_ratio
            info["singular_values_"] = pca.singular_values
            if wanted == 2:
                lo = pca.coordinates.min(dim=0).values
                hi = pca.coordinates.max(dim=0).values
                span = float((hi - lo).max())
                default = (float(lo.min()) - 0.2 * span, float(hi.max()) + 0.2 * span)
        else:  # eigen
            values, vecs = _eigen_directions(loaded, wanted, spec)
            vectors.extend(vecs)
            buffer_vectors.extend({} for _ in range(wanted))
            info["eigenvalues"] = values
    if len(vectors) == 2:
        vectors[1] = dirs.orthogonalize(vectors[1], vectors[0])
        info["cosine_xy"] = dirs.cosine(vectors[0], vectors[1])
        steps, points = _trajectory_points(loaded.run, layout, loaded.step, center.device, center.dtype)
        if len(steps) >= 2:
            coords = dirs.project(points - center, torch.stack(vectors)).cpu().numpy()
            trajectory = {"proj_xcoord": coords[:, 0], "proj_ycoord": coords[:, 1], "proj_steps": np.array(steps)}
    return Plane(layout, vectors, buffer_vectors, info, default, trajectory)


def _stored_eigenvectors(loaded: LoadedCheckpoint, k: int) -> tuple[list[float], list[torch.Tensor]] | None:
    """Top-k Hessian eigenpairs stored by ``landscape analyze --top-k`` for this checkpoint, if any."""
    path = result_path(loaded.run, loaded.step, "hessian")
    if not path.exists():
        return None
    try:
        stored, _ = load_result(path)
    except LandscapeError:
        return None
    vecs, values = stored.get("eigenvectors"), stored.get("eigenvalues")
    if vecs is None or values is None or len(values) < k:
        return None
    vecs = torch.as_tensor(np.asarray(vecs))
    param = next(loaded.model.parameters())
    return [float(v) for v in list(values)[:k]], [v.to(device=param.device, dtype=param.dtype) for v in vecs[:k]]


def _eigen_directions(loaded: LoadedCheckpoint, k: int, spec: SurfaceSpec) -> tuple[list[float], list[torch.Tensor]]:
    """Unit top-k Hessian eigenvectors: the stored ones (``analyze --top-k``) when there are enough,
    otherwise Lanczos on ``spec.eigen_samples`` training samples."""
    stored = _stored_eigenvectors(loaded, k)
    if stored is not None:
        return stored
    ds = loaded.dataset
    n = min(spec.eigen_samples, ds.num_train)
    idx = torch.randperm(ds.num_train, generator=torch.Generator().manual_seed(spec.seed))[:n].to(ds.x_train.device)
    objective = Objective(loaded.model, ds.x_train[idx], ds.y_train[idx], loaded.loss)
    result = lanczos(HessianOperator(objective), k=k, which="LA", tol=1e-4, seed=spec.seed)
    vecs = [v.to(next(loaded.model.parameters()).dtype) for v in result.eigenvectors.T]
    return [float(v) for v in result.eigenvalues], vecs


# --- storage ------------------------------------------------------------------------------------------------
def _write_directions(fh: h5py.File, plane: Plane) -> None:
    for axis, vec, bufs in zip("xy", plane.vectors, plane.buffer_vectors):
        grp = fh.create_group(f"{axis}direction")
        grp.attrs["names"] = json.dumps(list(plane.layout.names))
        for k, (name, piece) in enumerate(plane.layout.unflatten(vec.detach().cpu()).items()):
            grp.create_dataset(str(k), data=piece.numpy())
        if bufs:
            bg = fh.create_group(f"{axis}buffers")
            bg.attrs["names"] = json.dumps(list(bufs))
            for k, t in enumerate(bufs.values()):
                bg.create_dataset(str(k), data=t.detach().cpu().numpy())


def _read_directions(fh: h5py.File, layout: ParamLayout, device, dtype) -> tuple[list[torch.Tensor], list[dict]]:
    vectors, buffers = [], []
    for axis in "xy":
        if f"{axis}direction" not in fh:
            break
        grp = fh[f"{axis}direction"]
        names = json.loads(grp.attrs["names"])
        if tuple(names) != layout.names:
            raise LandscapeError("the stored directions belong to a different model")
        vectors.append(layout.flatten([torch.from_numpy(grp[str(k)][()]) for k in range(len(names))])
                       .to(device=device, dtype=dtype))
        bufs = {}
        if f"{axis}buffers" in fh:
            bg = fh[f"{axis}buffers"]
            bufs = {n: torch.from_numpy(bg[str(k)][()]).to(device) for k, n in enumerate(json.loads(bg.attrs["names"]))}
        buffers.append(bufs)
    return vectors, buffers


def _open(path: Path, what: str) -> h5py.File:
    try:
        fh = h5py.File(path, "r")
    except OSError as exc:
        raise LandscapeError(f"cannot read {what} {path}: file is corrupt or incomplete ({exc})") from None
    if fh.attrs.get("format") != SURFACE_FORMAT:
        fh.close()
        raise LandscapeError(f"{path} is not a landscape surface file")
    return fh


def load_surface(path: str | Path) -> dict[str, Any]:
    """Every dataset and attribute of a finished surface file (directions are left out)."""
    path = Path(path)
    if not path.exists():
        raise LandscapeError(f"surface file {path} not found")
    with _open(path, "surface file") as fh:
        out: dict[str, Any] = {k: fh[k][()] for k in fh if isinstance(fh[k], h5py.Dataset)}
        out["options"] = json.loads(fh.attrs.get("options", "{}"))
        out["info"] = json.loads(fh.attrs.get("info", "{}"))
        out["checkpoint"] = int(fh.attrs.get("checkpoint", -1))
        out["dims"] = 2 if "ycoordinates" in fh else 1
    return out


# --- computation ---------------------------------------------------------------------------------------------
def _coordinates(spec: SurfaceSpec, plane: Plane) -> tuple[np.ndarray, np.ndarray | None]:
    xr = spec.xrange or plane.default_range
    x = np.linspace(xr[0], xr[1], spec.xnum)
    if spec.dims == 1:
        return x, None
    yr = spec.yrange or (xr if (spec.xrange or not spec.between) else (-1.0, 1.0))
    return x, np.linspace(yr[0], yr[1], spec.ynum or spec.xnum)


def _options(spec: SurfaceSpec) -> dict[str, Any]:
    d = asdict(spec)
    d.pop("name")
    d["norm"] = spec.resolved_norm
    d["splits"] = list(spec.splits)
    return d


def compute_surface(loaded: LoadedCheckpoint, spec: SurfaceSpec, *, path: Path | None = None,
                    points_per_chunk: int | None = None, batch_size: int | None = None,
                    memory_bytes: int | None = None, affine_first_layer: bool = True,
                    save_every: float = 10.0, progress: Callable[[int, int], None] | None = None,
                    plane: Plane | None = None) -> dict[str, Any]:
    """Compute (or resume, or return the finished) surface; returns :func:`load_surface`'s dict plus
    ``path``, ``computed_points``, ``resumed_points`` and ``seconds``.

    Finished chunks are stored at most every ``save_every`` seconds (0: after every chunk), so a
    kill loses at most that much work; ``progress(done, total)`` is called after every chunk.
    ``plane`` gives the directions directly (``spec.directions = "plane"``), e.g. the plane through
    two minima and a curve's bend."""
    spec.validate()
    if (plane is None) != (spec.directions != "plane"):
        raise LandscapeError("directions='plane' goes with a Plane argument, and only with it")
    path = path or result_path(loaded.run, loaded.step, spec.surface_name)
    partial = path.with_name(path.name + ".partial")
    options = _options(spec)
    if plane is not None:
        options["plane"] = json.loads(json.dumps(plane.info))
    t0 = time.perf_counter()
    model = loaded.model
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    layout, center = dirs.flat_parameters(model)
    ds = loaded.dataset
    data = {"train": (ds.x_train, ds.y_train), "test": (ds.x_test, ds.y_test)}
    data = {s: data[s] for s in spec.splits}
    spec_file = partial / "spec.h5"
    metrics = [f"{s}_{m}" for s in data for m in (("loss", "acc") if loaded.loss == "cross_entropy" else ("loss",))]

    def make_evaluator(vectors: list[torch.Tensor], buffer_vectors: list[dict], bf16: bool = spec.bf16) -> GridEvaluator:
        return GridEvaluator(model, loaded.loss, layout.unflatten(center), [layout.unflatten(v) for v in vectors],
                             buffer_vectors, bn=spec.bn, affine_first_layer=affine_first_layer,
                             sample_input=next(iter(data.values()))[0][:2], bf16=bf16)

    # rank 0 reads and writes the files and decides; the other ranks get its decisions (torch.distributed)
    setup = None
    if distributed.is_main():
        try:
            setup = _prepare(loaded, spec, options, path, partial, spec_file, plane, make_evaluator, metrics,
                             layout, device, dtype, points_per_chunk, batch_size, memory_bytes)
        except LandscapeError as exc:
            setup = exc
    values = setup.pop("values", None) if isinstance(setup, dict) else None  # rank 0 alone stores values
    setup = distributed.broadcast(setup)
    if isinstance(setup, LandscapeError):
        raise setup
    if "finished" in setup:
        return setup["finished"]
    xs, ys, chunk, batch = setup["xs"], setup["ys"], setup["chunk"], setup["batch"]
    vectors = [v.to(device=device, dtype=dtype) for v in setup["vectors"]]
    buffer_vectors = [{n: t.to(device) for n, t in b.items()} for b in setup["buffer_vectors"]]
    info, trajectory, missing = setup["info"], setup["trajectory"], setup["missing"]
    info = {**info, "points_per_chunk": chunk, "batch_size": batch}  # the evaluation plan, for the record
    grid = (np.stack(np.meshgrid(xs, ys, indexing="ij"), -1).reshape(-1, 2) if ys is not None else xs[:, None])
    npoints = grid.shape[0]
    shape = (len(xs),) if ys is None else (len(xs), len(ys))
    resumed = npoints - sum(min(chunk, npoints - c * chunk) for c in missing)
    evaluator = make_evaluator(vectors, buffer_vectors)
    batches = {s: split_batches(x, y, batch) for s, (x, y) in data.items()}
    train_batches = split_batches(ds.x_train, ds.y_train, batch) if spec.bn == "recompute" else None
    coords_all = torch.as_tensor(grid, dtype=dtype, device=device)
    done_new, pending, last_save = 0, [], time.monotonic()
    serial = setup["serial"]

    def store() -> None:
        nonlocal serial, last_save
        idx = np.concatenate(pending)
        with atomic_h5(partial / f"part-{serial:06d}.h5", SURFACE_FORMAT) as fh:
            fh.create_dataset("indices", data=idx)
            for m in metrics:
                fh.create_dataset(m, data=values[m][idx])
        serial += 1
        pending.clear()
        last_save = time.monotonic()

    def evaluate_chunk(c: int) -> dict[str, np.ndarray]:
        return evaluator.metrics(coords_all[c * chunk:(c + 1) * chunk], batches, train_batches)

    # Rounds: every rank evaluates per_rank chunks (round-robin within the round), rank 0 gathers and
    # stores them. Several processes start at one chunk per rank and then size the rounds to about
    # ROUND_SECONDS (rank 0's measurement, broadcast), so the ranks synchronise rarely; one process
    # takes one chunk per round (progress after every chunk, no collective to amortise).
    size, me = distributed.world_size(), distributed.rank()
    position, per_rank = 0, 1
    while position < len(missing):
        round_chunks = missing[position:position + per_rank * size]
        position += len(round_chunks)
        started = time.monotonic()
        gathered = distributed.gather([(c, evaluate_chunk(c)) for c in round_chunks[me::size]])
        if size > 1:
            elapsed = time.monotonic() - started
            per_rank = distributed.broadcast(min(1024, max(1, round(per_rank * ROUND_SECONDS / max(elapsed, 1e-3)))))
        if not distributed.is_main():
            continue
        for c, out in (pair for rank_results in gathered for pair in rank_results):
            for m in metrics:
                values[m][c * chunk:(c + 1) * chunk] = out[m]
            pending.append(np.arange(c * chunk, min((c + 1) * chunk, npoints)))
            done_new += len(out[metrics[0]])
        if time.monotonic() - last_save >= save_every:
            store()
        if progress is not None:
            progress(resumed + done_new, npoints)
    if not distributed.is_main():
        return distributed.broadcast(None)
    with atomic_h5(path, SURFACE_FORMAT) as fh:
        fh.attrs["checkpoint"] = int(loaded.step)
        fh.attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        fh.attrs["options"] = json.dumps(options)
        fh.attrs["info"] = json.dumps(info)
        fh.attrs["axis_order"] = ("train_loss[i] = L(xcoordinates[i])" if ys is None else
                                  "train_loss[i, j] = L(xcoordinates[i], ycoordinates[j])")
        fh.attrs["schema"] = SCHEMA
        fh.create_dataset("xcoordinates", data=xs)
        if ys is not None:
            fh.create_dataset("ycoordinates", data=ys)
        for m in metrics:
            fh.create_dataset(m, data=values[m].reshape(shape))
        for k, v in (trajectory or {}).items():
            fh.create_dataset(k, data=v)
        for k in ("explained_variance_ratio_", "singular_values_", "eigenvalues"):
            if k in info:
                fh.create_dataset(k, data=np.asarray(info[k]))
        with h5py.File(spec_file, "r") as src:
            for axis in ("xdirection", "ydirection", "xbuffers", "ybuffers"):
                if axis in src:
                    src.copy(src[axis], fh, axis)
    shutil.rmtree(partial, ignore_errors=True)
    result = load_surface(path)
    result.update(path=str(path), computed_points=done_new, resumed_points=resumed,
                  seconds=time.perf_counter() - t0)
    return distributed.broadcast(result)


def _bf16_error(make_evaluator, vectors, buffer_vectors, xs, ys, x, y, batch, device, dtype) -> float:
    """The accuracy check of ``bf16``: the largest relative difference of the loss between bfloat16
    autocast and full precision at the grid's corners and centre."""
    corners = [(xs[0], ys[0] if ys is not None else None), (xs[-1], ys[-1] if ys is not None else None),
               (xs[len(xs) // 2], ys[len(ys) // 2] if ys is not None else None)]
    coords = torch.tensor([[a] if b is None else [a, b] for a, b in corners], dtype=dtype, device=device)
    batches = split_batches(x, y, batch)
    low = make_evaluator(vectors, buffer_vectors, True).sums(coords, batches)
    full = make_evaluator(vectors, buffer_vectors, False).sums(coords, batches)
    return float(((low.loss - full.loss).abs() / full.loss.abs().clamp_min(1e-12)).max())


def _prepare(loaded, spec, options, path, partial, spec_file, plane, make_evaluator, metrics, layout, device, dtype,
             points_per_chunk, batch_size, memory_bytes) -> dict[str, Any]:
    """Rank 0's part of :func:`compute_surface` before the evaluation: the finished result, or the
    directions, grid, chunking and the values already stored (creating the partial folder if new)."""
    if path.exists() and not partial.exists():
        try:
            done = load_surface(path)
        except LandscapeError:
            done = None
        if done is not None and done["options"] == json.loads(json.dumps(options)):
            done.update(path=str(path), computed_points=0, resumed_points=0, seconds=0.0)
            return {"finished": done}
    remove_stale_temporaries(partial)
    ds = loaded.dataset
    x_any, y_any = (ds.x_train, ds.y_train) if "train" in spec.splits else (ds.x_test, ds.y_test)
    if spec_file.exists():
        with _open(spec_file, "partial surface") as fh:
            stored = json.loads(fh.attrs["options"])
            if stored != json.loads(json.dumps(options)):
                raise LandscapeError(f"an unfinished surface {spec.surface_name!r} with other options is in {partial}; "
                                     "rerun with the same options to resume it, or delete that folder")
            vectors, buffer_vectors = _read_directions(fh, layout, device, dtype)
            xs = fh["xcoordinates"][()]
            ys = fh["ycoordinates"][()] if "ycoordinates" in fh else None
            chunk = int(fh.attrs["points_per_chunk"])
            batch = int(fh.attrs["batch_size"])
            info = json.loads(fh.attrs["info"])
            trajectory = {k: fh[k][()] for k in ("proj_xcoord", "proj_ycoord", "proj_steps") if k in fh}
    else:
        plane = plane if plane is not None else build_plane(loaded, spec)
        vectors, buffer_vectors, info, trajectory = plane.vectors, plane.buffer_vectors, plane.info, plane.trajectory
        xs, ys = _coordinates(spec, plane)
        npoints = len(xs) * (len(ys) if ys is not None else 1)
        memory = memory_bytes or DEFAULT_MEMORY.get(device.type, DEFAULT_MEMORY["cpu"])
        if points_per_chunk:
            chunk, batch = plan_chunks(loaded.model, x_any, npoints, x_any.shape[0], layout.dim, memory, batch_size)
            chunk = min(points_per_chunk, npoints)
        else:
            plans = candidate_plans(loaded.model, x_any, npoints, x_any.shape[0], layout.dim, memory, batch_size)
            evaluator = make_evaluator(vectors, buffer_vectors)
            chunk, batch = (plans[0] if evaluator.bn == "recompute"
                            else fastest_plan(evaluator, plans, x_any, y_any, len(vectors)))
        if spec.bf16:
            info["bf16_max_relative_error"] = _bf16_error(make_evaluator, vectors, buffer_vectors, xs, ys,
                                                          x_any, y_any, batch, device, dtype)
        partial.mkdir(parents=True, exist_ok=True)
        with atomic_h5(spec_file, SURFACE_FORMAT) as fh:
            fh.attrs["options"] = json.dumps(options)
            fh.attrs["points_per_chunk"] = chunk
            fh.attrs["batch_size"] = batch
            fh.attrs["info"] = json.dumps(info)
            fh.create_dataset("xcoordinates", data=xs)
            if ys is not None:
                fh.create_dataset("ycoordinates", data=ys)
            for k, v in (trajectory or {}).items():
                fh.create_dataset(k, data=v)
            _write_directions(fh, plane)
    npoints = len(xs) * (len(ys) if ys is not None else 1)
    values = {m: np.full(npoints, np.nan) for m in metrics}
    done = np.zeros(npoints, dtype=bool)
    parts = sorted(partial.glob("part-*.h5"))
    for f in parts:
        try:
            with h5py.File(f, "r") as fh:
                idx = fh["indices"][()]
                for m in metrics:
                    values[m][idx] = fh[m][()]
                done[idx] = True
        except (OSError, KeyError):
            continue
    nchunks = math.ceil(npoints / chunk)
    missing = [c for c in range(nchunks) if not done[c * chunk:(c + 1) * chunk].all()]
    return {"xs": xs, "ys": ys, "chunk": chunk, "batch": batch, "info": info, "trajectory": trajectory,
            "vectors": [v.cpu() for v in vectors], "buffer_vectors": [{n: t.cpu() for n, t in b.items()}
                                                                      for b in buffer_vectors],
            "values": values, "missing": missing, "serial": len(parts)}
