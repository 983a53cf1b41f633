"""Parametric curves between two minima w0 and w1 and the training of their bend (Garipov, Izmailov,
Podoprikhin, Vetrov & Wilson 2018, "Loss surfaces, mode connectivity, and fast ensembling of DNNs").

With one bend theta:

- ``linear``:    phi(t) = (1 - t) w0 + t w1;
- ``bezier``:    phi(t) = (1 - t)^2 w0 + 2 t (1 - t) theta + t^2 w1          (quadratic Bezier curve);
- ``polychain``: phi(t) = (1 - 2t) w0 + 2t theta on [0, 1/2], (2 - 2t) theta + (2t - 1) w1 on [1/2, 1].

All three lie in the plane w0 + span(theta - w0, w1 - w0), at the coordinates
:func:`curve_coordinates` returns, so a whole curve is evaluated as one batch of grid points.

The bend is trained to minimise the expected loss along the curve, E_{t ~ U(0, 1)} L(phi(t)): each
step draws one t, evaluates the mini-batch loss at phi(t) (BatchNorm in training mode, as for the
endpoints) and moves theta with any first-order optimizer of the registry; its gradient is
c_theta(t) grad L(phi(t)). Training is resumable: the bend, the optimizer state and the random state
are stored atomically after every epoch.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np
import torch

from landscape import distributed
from landscape.errors import LandscapeError
from landscape.h5tree import read_tree, write_tree
from landscape.objective import Objective
from landscape.optim import build_optimizer
from landscape.optim.registry import get_entry
from landscape.optim.training import epoch_order
from landscape.params import ParamLayout

from .job_state import load_state, save_state

CURVES = ("linear", "bezier", "polychain")
STATE_FORMAT = "landscape.curve-training"


def curve_weights(kind: str, t: float) -> tuple[float, float, float]:
    """(c0, c_theta, c1) with phi(t) = c0 w0 + c_theta theta + c1 w1 (they sum to 1)."""
    if kind == "linear":
        return 1.0 - t, 0.0, t
    if kind == "bezier":
        return (1.0 - t) ** 2, 2.0 * t * (1.0 - t), t * t
    if kind == "polychain":
        return (1.0 - 2.0 * t, 2.0 * t, 0.0) if t <= 0.5 else (0.0, 2.0 - 2.0 * t, 2.0 * t - 1.0)
    raise LandscapeError(f"unknown curve {kind!r}; choose one of {', '.join(CURVES)}")


def curve_coordinates(kind: str, ts) -> np.ndarray:
    """(len(ts), 2): phi(t) = w0 + a (theta - w0) + b (w1 - w0)."""
    rows = []
    for t in np.asarray(ts, dtype=float):
        _, c_theta, c1 = curve_weights(kind, float(t))
        rows.append((c_theta, c1))
    return np.array(rows, dtype=float).reshape(-1, 2)


@dataclass
class CurveTraining:
    """How the bend is trained (Garipov et al. train it like the endpoints: same optimizer family)."""
    epochs: int = 50
    batch_size: int = 128
    optimizer: dict[str, Any] = field(default_factory=lambda: {"name": "adam", "lr": 1e-3})
    seed: int = 0

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise LandscapeError("curve training needs epochs >= 1 and batch size >= 1")


def _save_state(path: Path, options: dict, theta: torch.Tensor, optimizer, generator: torch.Generator,
                epoch: int, history: list[float]) -> None:
    def fill(fh: h5py.File) -> None:
        fh.attrs["epoch"] = epoch
        fh.create_dataset("theta", data=theta.detach().cpu().numpy())
        fh.create_dataset("history", data=np.asarray(history, dtype=float))
        write_tree(fh, "optimizer", optimizer.state_dict())
        fh.create_dataset("generator", data=generator.get_state().numpy())

    save_state(path, STATE_FORMAT, options, fill)


def _load_state(path: Path, options: dict) -> dict | None:
    return load_state(path, STATE_FORMAT, options, lambda fh: {
        "epoch": int(fh.attrs["epoch"]), "theta": torch.from_numpy(fh["theta"][()]),
        "history": fh["history"][()].tolist(), "optimizer": read_tree(fh["optimizer"]),
        "generator": torch.from_numpy(fh["generator"][()])})


@dataclass
class PathProblem:
    """Two minima ``w0``, ``w1`` (flat, in ``layout``) of one model, the loss and the training data that
    the paths between them are fitted on (bend training, AutoNEB)."""

    model: torch.nn.Module
    loss: str
    layout: ParamLayout
    w0: torch.Tensor
    w1: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor


def train_bend(problem: PathProblem, kind: str, training: CurveTraining, state_path: Path | None = None,
               progress: Callable[[int, int, float], None] | None = None) -> tuple[torch.Tensor, list[float]]:
    """Train the bend theta of a ``bezier`` or ``polychain`` curve; returns (theta, mean loss per epoch).

    ``state_path`` makes the training resumable (the state is saved after every epoch). Under torchrun
    the ranks split every mini-batch into contiguous blocks and all-reduce the gradient (the same t on
    every rank), so they take the single-process steps; BatchNorm layers see per-rank batch statistics.
    """
    model, loss, layout, w0, w1, x, y = (problem.model, problem.loss, problem.layout, problem.w0, problem.w1,
                                         problem.x, problem.y)
    if kind not in ("bezier", "polychain"):
        raise LandscapeError(f"only bezier and polychain curves have a bend to train, not {kind!r}")
    training.validate()
    spec = dict(training.optimizer)
    entry = get_entry(spec.get("name", ""))
    if entry.needs_model or entry.needs_closure:
        raise LandscapeError(f"the curve's bend is trained with a first-order optimizer; {spec['name']!r} needs "
                             "the model or a closure")
    options = {"kind": kind, **asdict(training), "w0": float(w0.double().sum()), "w1": float(w1.double().sum())}
    net = copy.deepcopy(model).train()  # BatchNorm on batch statistics, as for the endpoints
    theta = torch.nn.Parameter(0.5 * (w0 + w1).detach().clone())
    optimizer = build_optimizer(spec, [theta])
    generator = torch.Generator().manual_seed(training.seed)
    start, history = 0, []
    # rank 0 reads the state and hands it to the other ranks (their file system need not be shared)
    state = _load_state(state_path, options) if state_path is not None and distributed.is_main() else None
    state = distributed.broadcast(state)
    if state is not None:
        with torch.no_grad():
            theta.copy_(state["theta"].to(theta))
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        start, history = state["epoch"], state["history"]
    n = x.shape[0]
    sharded = distributed.world_size() > 1
    for epoch in range(start, training.epochs):
        order = epoch_order(training.seed, epoch, n, x.device)
        total, count = 0.0, 0
        for i in range(0, n, training.batch_size):
            batch = order[i:i + training.batch_size]
            t = float(torch.rand((), generator=generator))
            c0, ct, c1 = curve_weights(kind, t)
            point = c0 * w0 + ct * theta + c1 * w1
            optimizer.zero_grad(set_to_none=False)
            lo, hi = distributed.block(batch.shape[0])
            idx = batch[lo:hi]
            if idx.shape[0]:
                objective = Objective.live(net, x[idx], y[idx], loss, params=layout.names)
                value = objective.differentiable_value(point) * (idx.shape[0] / batch.shape[0])  # this rank's share
                value.backward()
            else:
                value = torch.zeros((), dtype=theta.dtype, device=theta.device)
            if theta.grad is None:
                theta.grad = torch.zeros_like(theta)
            if sharded:  # the mini-batch gradient is the sum of the ranks' shares (one all-reduce)
                both = distributed.all_reduce_sum(torch.cat([theta.grad, value.detach().reshape(1)]))
                theta.grad.copy_(both[:-1])
                value = both[-1]
            optimizer.step()
            total += float(value.detach()) * batch.shape[0]
            count += batch.shape[0]
        history.append(total / count)
        if not np.isfinite(history[-1]):
            raise LandscapeError(f"curve training diverged in epoch {epoch + 1} (loss {history[-1]}); lower the "
                                 "bend's learning rate")
        if state_path is not None and distributed.is_main():
            _save_state(state_path, options, theta, optimizer, generator, epoch + 1, history)
        if progress is not None:
            progress(epoch + 1, training.epochs, history[-1])
    return theta.detach(), history
