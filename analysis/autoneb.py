"""AutoNEB: a minimum-energy path between two minima (Draxler, Veschgini, Salmhofer & Hamprecht 2018,
"Essentially no barriers in neural network energy landscape"), nudged elastic band with automatic
pivot insertion.

The path is a chain of pivots p_0 = w0, p_1, ..., p_P = w1 (endpoints fixed), initially on the
straight line. Each NEB step moves every interior pivot by the force (Henkelman & Jonsson 2000,
improved tangent tau_i from the higher-energy neighbour)

    F_i = -(g_i - (g_i . tau_i) tau_i) + k (|p_{i+1} - p_i| - |p_i - p_{i-1}|) tau_i,

g_i the mini-batch gradient at p_i: the loss gradient perpendicular to the path relaxes the pivot
downhill, the spring keeps the pivots evenly spaced. SGD with momentum integrates it. After each
cycle of ``steps`` NEB steps, every segment is probed at ``probe_points`` interior points on a fixed
evaluation subset; a pivot is inserted at the highest probe of each segment whose probe rises above
both segment ends by more than ``insert_tolerance`` x (the loss range along the path), up to
``max_pivots``. The result is a piecewise-linear path; its saddle is the highest loss on it.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py

import torch

from landscape import distributed
from landscape.errors import LandscapeError
from landscape.objective import Objective

from .curves import PathProblem
from .job_state import load_state, save_state

STATE_FORMAT = "landscape.autoneb"


@dataclass
class NEBOptions:
    cycles: int = 4
    steps: int = 100
    lr: float = 0.01
    momentum: float = 0.9
    spring: float = 1.0
    batch_size: int = 256
    initial_pivots: int = 3
    probe_points: int = 9
    probe_samples: int = 1000
    insert_tolerance: float = 0.05
    max_pivots: int = 24
    seed: int = 0

    def validate(self) -> None:
        if self.cycles < 1 or self.steps < 0 or self.initial_pivots < 1 or self.max_pivots < self.initial_pivots:
            raise LandscapeError("AutoNEB needs cycles >= 1, steps >= 0 and 1 <= initial pivots <= max pivots")
        if not (self.lr > 0 and 0 <= self.momentum < 1 and self.spring >= 0):
            raise LandscapeError("AutoNEB needs lr > 0, 0 <= momentum < 1 and spring >= 0")


def _tangent(p: list[torch.Tensor], energy: list[float], i: int) -> torch.Tensor:
    fwd, bwd = p[i + 1] - p[i], p[i] - p[i - 1]
    e_prev, e, e_next = energy[i - 1], energy[i], energy[i + 1]
    if e_next > e > e_prev:
        tau = fwd
    elif e_next < e < e_prev:
        tau = bwd
    else:
        hi, lo = max(abs(e_next - e), abs(e_prev - e)), min(abs(e_next - e), abs(e_prev - e))
        tau = fwd * hi + bwd * lo if e_next > e_prev else fwd * lo + bwd * hi
    norm = tau.norm()
    return tau / norm if norm > 0 else tau


def autoneb(problem: PathProblem, options: NEBOptions | None = None, state_path: Path | None = None,
            progress=None) -> dict:
    """Pivots (P + 1, n) of the relaxed chain and the insertion history; see the module docstring.

    ``state_path`` makes it resumable: the chain is stored atomically after every cycle, then
    ``progress(cycle, cycles, pivots)`` is called. Under torchrun the ranks share the pivots (and the
    insertion probes) round-robin on the same mini-batch and all-reduce their losses and gradients, so
    every rank moves the chain exactly as one process would."""
    model, loss, layout, w0, w1, x, y = (problem.model, problem.loss, problem.layout, problem.w0, problem.w1,
                                         problem.x, problem.y)
    opts = options or NEBOptions()
    opts.validate()
    net = copy.deepcopy(model).train()  # BatchNorm on batch statistics, as for the endpoints

    def objective(xb: torch.Tensor, yb: torch.Tensor) -> Objective:
        return Objective.live(net, xb, yb, loss, params=layout.names)

    gen = torch.Generator().manual_seed(opts.seed)
    probe_idx = torch.randperm(x.shape[0], generator=gen)[:opts.probe_samples].to(x.device)
    probe = objective(x[probe_idx], y[probe_idx])

    pivots = [w0 + (w1 - w0) * (k / (opts.initial_pivots + 1)) for k in range(opts.initial_pivots + 2)]
    history: list[dict] = []
    first = 0
    options = {**asdict(opts), "w0": float(w0.double().sum()), "w1": float(w1.double().sum())}
    # rank 0 reads the state and hands it to the other ranks (their file system need not be shared)
    stored = _load_state(state_path, options) if state_path is not None and distributed.is_main() else None
    stored = distributed.broadcast(stored)
    if stored is not None:
        pivots = [p.to(w0) for p in stored["pivots"]]
        first, history = stored["cycle"], stored["history"]
        gen.set_state(stored["generator"])
    for cycle in range(first, opts.cycles):
        if cycle > 0:  # automatic insertion where the path rises between pivots
            probes = []
            ts = torch.linspace(0, 1, opts.probe_points + 2)[1:-1].tolist()
            points = [lambda p=p: p for p in pivots]
            points += [lambda i=i, t=t: pivots[i] + t * (pivots[i + 1] - pivots[i])
                       for i in range(len(pivots) - 1) for t in ts]
            values = _shared_values(probe, points, w0.device)
            ends = values[:len(pivots)]
            for i in range(len(pivots) - 1):
                vals = values[len(pivots) + i * len(ts):len(pivots) + (i + 1) * len(ts)]
                k = max(range(len(vals)), key=vals.__getitem__)
                probes.append((vals[k] - max(ends[i], ends[i + 1]), i, ts[k]))
            span = max(max(ends), max(r + max(ends[i], ends[i + 1]) for r, i, _ in probes)) - min(ends)
            room = opts.max_pivots + 2 - len(pivots)
            split = {i: t for r, i, t in sorted(probes, reverse=True)[:max(room, 0)]
                     if r > opts.insert_tolerance * max(span, 1e-12)}
            chain = [pivots[0]]
            for i in range(len(pivots) - 1):
                if i in split:
                    chain.append(pivots[i] + split[i] * (pivots[i + 1] - pivots[i]))
                chain.append(pivots[i + 1])
            pivots, inserted = chain, len(split)
            history.append({"cycle": cycle, "pivots": len(pivots), "inserted": inserted})
        velocity = [torch.zeros_like(p) for p in pivots]
        n = x.shape[0]
        for _ in range(opts.steps):
            idx = torch.randint(0, n, (min(opts.batch_size, n),), generator=gen).to(x.device)
            xb, yb = x[idx], y[idx]
            energy, grads = _energies_and_gradients(objective(xb, yb), pivots)
            new = list(pivots)
            for i in range(1, len(pivots) - 1):
                tau = _tangent(pivots, energy, i)
                g = grads[i]
                force = -(g - torch.dot(g, tau) * tau)
                force = force + opts.spring * ((pivots[i + 1] - pivots[i]).norm() - (pivots[i] - pivots[i - 1]).norm()) * tau
                velocity[i] = opts.momentum * velocity[i] + force
                new[i] = pivots[i] + opts.lr * velocity[i]
            pivots = new
        if state_path is not None and distributed.is_main():
            _save_state(state_path, options, pivots, cycle + 1, history, gen)
        if progress is not None:
            progress(cycle + 1, opts.cycles, len(pivots))
    return {"pivots": torch.stack(pivots), "history": history}


def _shared_values(objective: Objective, points: list, device: torch.device) -> list[float]:
    """Loss at every point (a callable making it); rank r evaluates points r, r + W, ... and the
    values are all-reduced (adding zeros is exact, so every rank gets the single-process numbers)."""
    size, me = distributed.world_size(), distributed.rank()
    vals = torch.zeros(len(points), dtype=torch.float64, device=device)
    for k in range(me, len(points), size):
        vals[k] = objective.value(points[k]())
    return distributed.all_reduce_sum(vals).tolist()


def _energies_and_gradients(objective: Objective, pivots: list[torch.Tensor]) -> tuple[list[float], list]:
    """Loss at every pivot and the gradient at the interior ones, shared out like _shared_values."""
    size, me = distributed.world_size(), distributed.rank()
    last, w0 = len(pivots) - 1, pivots[0]
    energy = torch.zeros(len(pivots), dtype=torch.float64, device=w0.device)
    grads = torch.zeros(len(pivots), w0.numel(), dtype=w0.dtype, device=w0.device)
    for i in range(me, len(pivots), size):
        if 0 < i < last:
            energy[i], grads[i] = objective.value_and_gradient(pivots[i].detach())
        else:
            energy[i] = objective.value(pivots[i])
    if size > 1:
        distributed.all_reduce_sum(energy)
        distributed.all_reduce_sum(grads)
    return energy.tolist(), [grads[i] if 0 < i < last else None for i in range(len(pivots))]


def _save_state(path: Path, options: dict, pivots: list[torch.Tensor], cycle: int, history: list[dict],
                gen: torch.Generator) -> None:
    def fill(fh: h5py.File) -> None:
        fh.attrs["cycle"] = cycle
        fh.attrs["history"] = json.dumps(history)
        fh.create_dataset("pivots", data=torch.stack(pivots).detach().cpu().numpy())
        fh.create_dataset("generator", data=gen.get_state().numpy())

    save_state(path, STATE_FORMAT, options, fill)


def _load_state(path: Path, options: dict) -> dict | None:
    return load_state(path, STATE_FORMAT, options, lambda fh: {
        "cycle": int(fh.attrs["cycle"]), "history": json.loads(fh.attrs["history"]),
        "pivots": torch.from_numpy(fh["pivots"][()]), "generator": torch.from_numpy(fh["generator"][()])})
