"""The directions of a slice or surface at a checkpoint (a :class:`Plane`): random or filter-normalized
Gaussian, the trajectory's principal directions, top Hessian eigenvectors, or the difference to another
checkpoint; with the run's trajectory projected into 2-D planes, and their storage in surface files."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np
import torch

from landscape.errors import LandscapeError
from landscape.linalg.lanczos import lanczos
from landscape.linalg.operators import HessianOperator
from landscape.objective import Objective
from landscape.params import ParamLayout
from landscape.runs import Checkpoint, Run, read_checkpoint

from . import directions as dirs
from .contract import SpecError, quote
from .curvature import CurvatureResult
from .loading import LoadedCheckpoint

if TYPE_CHECKING:
    from .surface import SurfaceSpec


@dataclass
class Plane:
    layout: ParamLayout
    vectors: list[torch.Tensor]                       # 1 or 2 flat directions
    buffer_vectors: list[dict[str, torch.Tensor]]     # per direction: float-buffer differences (may be empty)
    info: dict[str, Any]                              # explained variance, eigenvalues, cosines ...
    default_range: tuple[float, float]
    trajectory: dict[str, np.ndarray] | None = None


def other_checkpoint(run: Run, ref: str, field: tuple[str, str] = ("SurfaceSpec", "between")) -> Checkpoint:
    """The checkpoint ``ref`` names: a checkpoint file, a run folder (its last checkpoint) or a step of ``run``
    (``field``: the spec and field that named it, for the error)."""
    path = Path(ref)
    if path.is_file():
        return read_checkpoint(path, weights_only=True)
    if path.is_dir():
        return Run.open(path).load_checkpoint("last", weights_only=True)
    try:
        return run.load_checkpoint(int(ref), weights_only=True)
    except ValueError:
        raise SpecError(*field, f"{quote(ref)} is neither a run folder, a checkpoint file nor a step") from None


def _between(loaded: LoadedCheckpoint, layout: ParamLayout, center: torch.Tensor, ref: str
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    other = other_checkpoint(loaded.run, ref)
    params = dict(other.params)
    missing = [n for n in layout.names if n not in params]
    if missing:
        raise SpecError("SurfaceSpec", "between", f"{quote(ref)}: checkpoint has no parameter {quote(missing[0])} "
                        "(different model?)")
    for name, shape in zip(layout.names, layout.shapes):
        if tuple(params[name].shape) != tuple(shape):
            raise SpecError("SurfaceSpec", "between", f"{quote(ref)}: parameter {quote(name)} has shape "
                            f"{tuple(params[name].shape)}, this model has {tuple(shape)}")
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


def build_plane(loaded: LoadedCheckpoint, spec: "SurfaceSpec") -> Plane:
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
            raise SpecError("SurfaceSpec", "between", f"{quote(spec.between)}: the two checkpoints have identical "
                            "parameters")
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
    try:
        stored = CurvatureResult.load(loaded.run, loaded.step)
    except LandscapeError:
        return None
    vecs, values = stored.eigenvectors, stored.eigenvalues
    if vecs is None or values is None or len(values) < k:
        return None
    vecs = torch.as_tensor(np.asarray(vecs))
    param = next(loaded.model.parameters())
    return [float(v) for v in list(values)[:k]], [v.to(device=param.device, dtype=param.dtype) for v in vecs[:k]]


def _eigen_directions(loaded: LoadedCheckpoint, k: int, spec: "SurfaceSpec") -> tuple[list[float], list[torch.Tensor]]:
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


def write_directions(fh: h5py.File, plane: Plane) -> None:
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


def read_directions(fh: h5py.File, layout: ParamLayout, device, dtype) -> tuple[list[torch.Tensor], list[dict]]:
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
