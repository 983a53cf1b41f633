"""Mode connectivity between two checkpoints: the linear path and its barrier, Bezier / PolyChain
curves with a trained bend, AutoNEB minimum-energy paths, ensembles along the curve, the plane
through both minima and the bend, and permutation alignment before interpolating.

::

    loaded = load_checkpoint_model("runs/mlp-s0")
    result = connect(loaded, ConnectSpec(other="runs/mlp-s1", curve="bezier"))
    result.linear.barrier["train_loss"], result.fitted.barrier["train_loss"]

Barriers: :mod:`.path_result`. BatchNorm: with ``bn="recompute"`` (the default for BatchNorm models,
as Garipov et al.'s ``update_bn``) the statistics are re-estimated from the training data at every
evaluated point; ``bn="eval"`` interpolates the two checkpoints' running statistics along the linear path.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from landscape import distributed
from landscape.errors import LandscapeError
from landscape.models import has_batchnorm
from landscape.params import ParamLayout
from landscape.results import result_path

from . import directions as dirs
from .alignment import weight_matching
from .autoneb import autoneb
from .contract import Progress
from .curves import PathProblem, curve_coordinates, train_bend
from .grid_evaluation import GridEvaluator, split_batches
from .loading import LoadedCheckpoint
from .path_result import ConnectPath, ConnectResult, ConnectSpec, Curve, path_barriers
from .surface import SurfaceSpec, compute_surface
from .surface_plane import Plane, other_checkpoint


class _Evaluator:
    """Loss/accuracy of points given as coordinates on (center, directions), train and test."""

    def __init__(self, loaded: LoadedCheckpoint, layout, bn: str, batch_size: int):
        self.loaded, self.layout, self.bn = loaded, layout, bn
        ds = loaded.dataset
        self.data = {"train": (ds.x_train, ds.y_train), "test": (ds.x_test, ds.y_test)}
        self.batches = {s: split_batches(x, y, batch_size) for s, (x, y) in self.data.items()}
        self.train_batches = self.batches["train"]
        self.batch_size = batch_size

    def evaluator(self, center, directions, buffer_directions=None) -> GridEvaluator:
        return GridEvaluator(self.loaded.model, self.loaded.loss, self.layout.unflatten(center),
                             [self.layout.unflatten(d) for d in directions], buffer_directions, bn=self.bn,
                             sample_input=self.data["train"][0][:2])

    def metrics(self, ev: GridEvaluator, coords: np.ndarray, chunk: int = 8) -> dict[str, np.ndarray]:
        """Train/test loss (and accuracy) at every row of ``coords``; under torchrun each rank evaluates
        a contiguous block of the rows and every rank receives all of them."""
        start, stop = distributed.block(coords.shape[0])
        coords_t = torch.as_tensor(coords[start:stop], dtype=next(self.loaded.model.parameters()).dtype,
                                   device=self.data["train"][0].device)
        out: dict[str, list] = {}
        for lo in range(0, coords_t.shape[0], chunk):
            for key, values in ev.metrics(coords_t[lo:lo + chunk], self.batches, self.train_batches).items():
                out.setdefault(key, []).append(values)
        blocks = [b for b in distributed.all_gather({k: np.concatenate(v) for k, v in out.items()}) if b]
        return {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}

    def accuracy(self, probs: torch.Tensor) -> float:
        return float((probs.argmax(-1) == self.data["test"][1]).double().mean())

    def probabilities(self, ev: GridEvaluator, coords: np.ndarray) -> torch.Tensor:
        """Test-set softmax averaged over the points ``coords`` (the ranks share the points; a rank
        without points evaluates the first one with weight 0, so every rank joins the all-reduce)."""
        start, stop = distributed.block(coords.shape[0])
        mine, weight = (coords[start:stop], stop - start) if stop > start else (coords[:1], 0)
        c = torch.as_tensor(mine, dtype=next(self.loaded.model.parameters()).dtype,
                            device=self.data["test"][0].device)
        probs = ev.mean_probabilities(c, self.data["test"][0], self.batch_size, self.train_batches)
        if distributed.world_size() == 1:
            return probs
        return distributed.all_reduce_sum(probs * weight) / coords.shape[0]


@dataclass
class Endpoints:
    """The two minima as flat vectors (w1 permuted onto w0 when aligned), the buffer difference the
    linear path carries in ``bn="eval"`` mode, and the BatchNorm mode."""

    layout: ParamLayout
    w0: torch.Tensor
    w1: torch.Tensor
    buffer_delta: dict[str, torch.Tensor]
    permutations: dict[str, Any] | None
    bn: str

    def problem(self, loaded: LoadedCheckpoint) -> PathProblem:
        """The path-fitting problem on the checkpoint's training data."""
        ds = loaded.dataset
        return PathProblem(loaded.model, loaded.loss, self.layout, self.w0, self.w1, ds.x_train, ds.y_train)


def endpoints(loaded: LoadedCheckpoint, spec: ConnectSpec) -> Endpoints:
    model = loaded.model
    layout, w0 = dirs.flat_parameters(model)
    other = other_checkpoint(loaded.run, spec.other, ("ConnectSpec", "other"))
    params_b = dict(other.params)
    for name, shape in zip(layout.names, layout.shapes):
        if name not in params_b or tuple(params_b[name].shape) != tuple(shape):
            raise LandscapeError(f"{spec.other}: parameter {name!r} is missing or has another shape (different model?)")
    params_a = layout.unflatten(w0)
    permutations = None
    if spec.align:
        params_b, permutations = weight_matching(model, {n: t.cpu() for n, t in params_a.items()},
                                                 {n: params_b[n] for n in layout.names}, seed=0)
    w1 = layout.flatten({n: params_b[n].to(w0) for n in layout.names})
    if bool(torch.equal(w0, w1)) and spec.curve != Curve.LINEAR:
        raise LandscapeError("the two checkpoints are identical: there is no path to fit between them")
    bn = spec.bn.value if spec.bn else ("recompute" if has_batchnorm(model) else "eval")
    own_buffers = dict(model.named_buffers())
    buffer_delta = {n: b.to(own_buffers[n]) - own_buffers[n] for n, b in other.buffers.items()
                    if n in own_buffers and own_buffers[n].is_floating_point() and not spec.align}
    return Endpoints(layout, w0, w1, buffer_delta, permutations, bn)


def connect(loaded: LoadedCheckpoint, spec: ConnectSpec, progress: Progress | None = None) -> ConnectResult:
    """Connect the loaded checkpoint to ``spec.other``; stores (rank 0) and returns the result."""
    spec.validate()
    t_start = time.perf_counter()
    say = (lambda message: progress(0, None, message)) if progress is not None else (lambda message: None)
    ends = endpoints(loaded, spec)
    ev = _Evaluator(loaded, ends.layout, ends.bn, spec.batch_size)
    t = np.linspace(0.0, 1.0, spec.points)
    say("linear path")
    linear, ensemble = _linear_path(ev, ends, t)
    result = ConnectResult(checkpoint=loaded.step, other=spec.other, curve=spec.curve, bn=ends.bn,
                           aligned=spec.align, distance=float((ends.w1 - ends.w0).norm()), linear=linear,
                           ensemble=ensemble, permutations=ends.permutations, result_name=spec.result_name,
                           path=result_path(loaded.run, loaded.step, spec.result_name),
                           attrs={k: v for k, v in asdict(spec).items() if k != "name"})
    state = None  # the resumable state file of the bend training or AutoNEB
    if spec.curve in (Curve.BEZIER, Curve.POLYCHAIN):
        state = result.path.with_suffix(".training.h5")
        _fit_bend(loaded, spec, ev, ends, t, state, say, result)
    elif spec.curve == Curve.AUTONEB:
        state = result.path.with_suffix(".autoneb.h5")
        _fit_autoneb(loaded, spec, ev, ends, state, say, result)
    result.seconds = time.perf_counter() - t_start
    if distributed.is_main():
        result.save(loaded.run)
        if state is not None:  # only once the result is stored: a kill before keeps the training
            state.unlink(missing_ok=True)
    return result


def _linear_path(ev: "_Evaluator", ends: Endpoints, t: np.ndarray) -> tuple[ConnectPath, dict[str, float]]:
    """The straight segment w0 + t (w1 - w0) and the test accuracy of the endpoints and their ensemble."""
    linear_ev = ev.evaluator(ends.w0, [ends.w1 - ends.w0], [ends.buffer_delta] if ends.buffer_delta else None)
    metrics = ev.metrics(linear_ev, t[:, None])
    probs = [ev.probabilities(linear_ev, np.array([[0.0]])), ev.probabilities(linear_ev, np.array([[1.0]]))]
    ensemble = {"endpoint_0_test_acc": ev.accuracy(probs[0]), "endpoint_1_test_acc": ev.accuracy(probs[1]),
                "endpoints_test_acc": ev.accuracy(0.5 * (probs[0] + probs[1]))}
    return ConnectPath(t=t, **metrics, barrier=path_barriers(t, metrics)), ensemble


def _fit_bend(loaded: LoadedCheckpoint, spec: ConnectSpec, ev: "_Evaluator", ends: Endpoints, t: np.ndarray,
              state: Path, say: Callable[[str], None], result: ConnectResult) -> None:
    """Bezier / PolyChain: train the bend, evaluate the curve, its ensemble and (optionally) the plane."""

    def epoch_done(epoch, total, value):
        say(f"bend training: epoch {epoch}/{total}, mean loss along the curve {value:.4g}")

    theta, history = train_bend(ends.problem(loaded), spec.curve.value, spec.training, state_path=state,
                                progress=epoch_done)
    say("curve evaluation")
    curve_ev = ev.evaluator(ends.w0, [theta - ends.w0, ends.w1 - ends.w0])
    curve = ev.metrics(curve_ev, curve_coordinates(spec.curve.value, t))
    result.fitted = ConnectPath(t=t, **curve, barrier=path_barriers(t, curve), training_loss=history,
                                bend=theta.cpu().numpy())
    if spec.ensemble_points:
        ts = (np.arange(spec.ensemble_points) + 0.5) / spec.ensemble_points
        probs = ev.probabilities(curve_ev, curve_coordinates(spec.curve.value, ts))
        result.ensemble["curve_test_acc"] = ev.accuracy(probs)
        result.ensemble["curve_points"] = spec.ensemble_points
    if spec.plane_grid:
        say("plane through the two minima and the bend")
        result.plane = _plane(loaded, spec, ends.layout, ends.w0, ends.w1, theta, ends.bn)


def _fit_autoneb(loaded: LoadedCheckpoint, spec: ConnectSpec, ev: "_Evaluator", ends: Endpoints, state: Path,
                 say: Callable[[str], None], result: ConnectResult) -> None:
    """AutoNEB: relax the chain, then evaluate its segments at about ``spec.points`` points in all,
    t proportional to the distance along the chain."""
    say("AutoNEB")
    neb = autoneb(ends.problem(loaded), spec.neb, state_path=state,
                  progress=lambda c, total, n: say(f"AutoNEB: cycle {c}/{total}, {n} pivots"))
    pivots = neb["pivots"]
    lengths = (pivots[1:] - pivots[:-1]).norm(dim=1).double().cpu().numpy()
    cumulative = np.concatenate([[0.0], np.cumsum(lengths)]) / max(lengths.sum(), 1e-30)
    per_segment = max(2, math.ceil(spec.points / (len(pivots) - 1)))
    ts, parts = [], []
    for i in range(len(pivots) - 1):
        last = i == len(pivots) - 2
        local = np.linspace(0.0, 1.0, per_segment + 1) if last else np.linspace(0.0, 1.0, per_segment + 1)[:-1]
        parts.append(ev.metrics(ev.evaluator(pivots[i], [pivots[i + 1] - pivots[i]]), local[:, None]))
        ts.append(cumulative[i] + local * (cumulative[i + 1] - cumulative[i]))
    tt = np.concatenate(ts)
    curve = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    result.fitted = ConnectPath(t=tt, **curve, barrier=path_barriers(tt, curve), pivots=len(pivots),
                                pivot_t=cumulative, history=neb["history"], length=float(lengths.sum()))
    result.saddle_train_loss = float(np.max(curve["train_loss"]))


def _plane(loaded: LoadedCheckpoint, spec: ConnectSpec, layout, w0, w1, theta, bn: str) -> dict[str, Any]:
    """Loss on the plane through w0, w1 and the bend (Garipov et al. Fig. 1): origin w0, e1 along
    w1 - w0, e2 the component of theta - w0 orthogonal to it; coordinates in parameter distance."""
    u = w1 - w0
    length = float(u.norm())
    e1 = u / length
    v = theta - w0
    v_perp = v - torch.dot(v, e1) * e1
    e2 = v_perp / v_perp.norm()
    bend = (float(torch.dot(v, e1)), float(torch.dot(v, e2)))
    xr = (min(0.0, bend[0]) - 0.2 * length, max(length, bend[0]) + 0.2 * length)
    yr = (min(0.0, bend[1]) - 0.3 * length, max(0.0, bend[1]) + 0.3 * length)
    plane = Plane(layout, [e1, e2], [{}, {}], {"w1": (length, 0.0), "bend": bend}, xr)
    surface_spec = SurfaceSpec(dims=2, directions="plane", xrange=xr, yrange=yr, xnum=spec.plane_grid,
                               ynum=spec.plane_grid, bn=bn, name=f"{spec.result_name}-plane",
                               splits=("train", "test"))
    surface = compute_surface(loaded, surface_spec, plane=plane)
    t = np.linspace(0, 1, 101)
    coords = curve_coordinates(spec.curve, t)  # in (theta - w0, w1 - w0)
    curve_xy = np.stack([coords[:, 0] * bend[0] + coords[:, 1] * length, coords[:, 0] * bend[1]], 1)
    return {"surface": str(surface.path), "w0": [0.0, 0.0], "w1": [length, 0.0], "bend": list(bend),
            "curve_xy": curve_xy}
