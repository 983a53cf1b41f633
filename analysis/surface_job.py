"""The resumable computation of one surface: its files, its evaluation plan, its rounds of chunks.

``NAME.h5.partial/spec.h5`` fixes the directions, coordinates, chunking and options when the
computation starts; ``part-NNNNNN.h5`` files hold the chunks finished since the previous part. A rerun
with the same options evaluates only the missing chunks (so it equals an uninterrupted run bit for
bit); the finished file is written atomically and the partial folder removed. Under torchrun rank 0
reads and writes the files and decides, the other ranks get its decisions and evaluate their share.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from landscape import distributed
from landscape.atomic import remove_stale_temporaries
from landscape.errors import LandscapeError
from landscape.runs import SCHEMA, atomic_h5, open_h5

from . import directions as dirs
from .contract import Progress, require
from .grid_evaluation import GridEvaluator, candidate_plans, fastest_plan, plan_chunks, split_batches
from .loading import LoadedCheckpoint
from .surface_plane import Plane, build_plane, read_directions, write_directions

SURFACE_FORMAT = "landscape.surface"
ROUND_SECONDS = 1.0  # several processes: the length of a round of chunks between two gathers on rank 0
DEFAULT_MEMORY = {"cpu": 16 * 2**20, "cuda": 2 * 2**30}  # CPU: stay near the caches


@dataclass
class EvaluationPlan:
    """How a surface is evaluated (not part of its options: any plan gives the same values).

    ``points_per_chunk`` grid points per batched forward pass and ``batch_size`` samples per batch
    (default: the fastest measured plan within ``memory_bytes``); ``affine_first_layer`` computes the
    first Linear/Conv layer once per batch; ``save_every`` seconds between stored parts (0: every chunk).
    """

    points_per_chunk: int | None = None
    batch_size: int | None = None
    memory_bytes: int | None = None
    affine_first_layer: bool = True
    save_every: float = 10.0

    def validate(self) -> None:
        require(self.points_per_chunk is None or self.points_per_chunk > 0, self, "points_per_chunk",
                f"must be positive, got {self.points_per_chunk}")
        require(self.batch_size is None or self.batch_size > 0, self, "batch_size",
                f"must be positive, got {self.batch_size}")
        require(self.save_every >= 0, self, "save_every", f"must be >= 0 seconds, got {self.save_every}")


@dataclass
class Setup:
    """What rank 0 decided before the evaluation (broadcast to the other ranks)."""

    xs: np.ndarray
    ys: np.ndarray | None
    chunk: int
    batch: int
    info: dict[str, Any]
    trajectory: dict[str, np.ndarray] | None
    vectors: list[torch.Tensor]
    buffer_vectors: list[dict[str, torch.Tensor]]
    missing: list[int]       # chunks still to evaluate
    serial: int              # number of the next part file

    @property
    def grid(self) -> np.ndarray:
        if self.ys is None:
            return self.xs[:, None]
        return np.stack(np.meshgrid(self.xs, self.ys, indexing="ij"), -1).reshape(-1, 2)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.xs),) if self.ys is None else (len(self.xs), len(self.ys))

    @property
    def points(self) -> int:
        return math.prod(self.shape)


class SurfaceJob:
    """One surface of a loaded checkpoint: ``path``, its partial folder, the data splits and metrics,
    and the values of the finished chunks (rank 0)."""

    def __init__(self, loaded: LoadedCheckpoint, spec, options: dict[str, Any], path: Path, plan: EvaluationPlan,
                 plane: Plane | None):
        self.loaded, self.spec, self.options, self.path, self.plan, self.plane = loaded, spec, options, path, plan, plane
        self.partial = path.with_name(path.name + ".partial")
        self.spec_file = self.partial / "spec.h5"
        param = next(loaded.model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.layout, self.center = dirs.flat_parameters(loaded.model)
        ds = loaded.dataset
        data = {"train": (ds.x_train, ds.y_train), "test": (ds.x_test, ds.y_test)}
        self.data = {s: data[s] for s in spec.splits}
        measures = ("loss", "acc") if loaded.loss == "cross_entropy" else ("loss",)
        self.metrics = [f"{s}_{m}" for s in self.data for m in measures]
        self.values: dict[str, np.ndarray] = {}

    def evaluator(self, vectors: list[torch.Tensor], buffer_vectors: list[dict], bf16: bool | None = None
                  ) -> GridEvaluator:
        return GridEvaluator(self.loaded.model, self.loaded.loss, self.layout.unflatten(self.center),
                             [self.layout.unflatten(v) for v in vectors], buffer_vectors, bn=self.spec.bn,
                             affine_first_layer=self.plan.affine_first_layer,
                             sample_input=next(iter(self.data.values()))[0][:2],
                             bf16=self.spec.bf16 if bf16 is None else bf16)

    # --- rank 0: the finished result, or the setup of the evaluation ------------------------------------
    def finished(self) -> bool:
        """Whether the surface file exists, complete, with these options."""
        if not self.path.exists() or self.partial.exists():
            return False
        try:
            with open_h5(self.path, SURFACE_FORMAT, "surface file") as fh:
                stored = json.loads(fh.attrs.get("options", "{}"))
        except LandscapeError:
            return False
        return stored == json.loads(json.dumps(self.options))

    def prepare(self) -> Setup:
        """Resume from the partial folder, or start it: directions, grid, plan; then the stored values."""
        remove_stale_temporaries(self.partial)
        setup = self._resume() if self.spec_file.exists() else self._start()
        self._load_parts(setup)
        return setup

    def _resume(self) -> Setup:
        with open_h5(self.spec_file, SURFACE_FORMAT, "partial surface") as fh:
            if json.loads(fh.attrs["options"]) != json.loads(json.dumps(self.options)):
                raise LandscapeError(f"an unfinished surface {self.path.stem!r} with other options is in "
                                     f"{self.partial}; rerun with the same options to resume it, or delete that folder")
            vectors, buffer_vectors = read_directions(fh, self.layout, self.device, self.dtype)
            return Setup(xs=fh["xcoordinates"][()], ys=fh["ycoordinates"][()] if "ycoordinates" in fh else None,
                         chunk=int(fh.attrs["points_per_chunk"]), batch=int(fh.attrs["batch_size"]),
                         info=json.loads(fh.attrs["info"]),
                         trajectory={k: fh[k][()] for k in ("proj_xcoord", "proj_ycoord", "proj_steps") if k in fh},
                         vectors=vectors, buffer_vectors=buffer_vectors, missing=[], serial=0)

    def _start(self) -> Setup:
        plane = self.plane if self.plane is not None else build_plane(self.loaded, self.spec)
        xs, ys = self.spec.coordinates(plane.default_range)
        setup = Setup(xs=xs, ys=ys, chunk=0, batch=0, info=plane.info, trajectory=plane.trajectory,
                      vectors=plane.vectors, buffer_vectors=plane.buffer_vectors, missing=[], serial=0)
        setup.chunk, setup.batch = self._chunking(setup)
        if self.spec.bf16:
            setup.info["bf16_max_relative_error"] = self._bf16_error(setup)
        self.partial.mkdir(parents=True, exist_ok=True)
        with atomic_h5(self.spec_file, SURFACE_FORMAT) as fh:
            fh.attrs["options"] = json.dumps(self.options)
            fh.attrs["points_per_chunk"] = setup.chunk
            fh.attrs["batch_size"] = setup.batch
            fh.attrs["info"] = json.dumps(setup.info)
            fh.create_dataset("xcoordinates", data=xs)
            if ys is not None:
                fh.create_dataset("ycoordinates", data=ys)
            for k, v in (setup.trajectory or {}).items():
                fh.create_dataset(k, data=v)
            write_directions(fh, plane)
        return setup

    def _any_split(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.data["train"] if "train" in self.data else self.data["test"]

    def _chunking(self, setup: Setup) -> tuple[int, int]:
        """(points per chunk, samples per batch): the plan's, else the fastest measured within memory."""
        x, y = self._any_split()
        memory = self.plan.memory_bytes or DEFAULT_MEMORY.get(self.device.type, DEFAULT_MEMORY["cpu"])
        sizes = (self.loaded.model, x, setup.points, x.shape[0], self.layout.dim, memory, self.plan.batch_size)
        if self.plan.points_per_chunk:
            _, batch = plan_chunks(*sizes)
            return min(self.plan.points_per_chunk, setup.points), batch
        plans = candidate_plans(*sizes)
        evaluator = self.evaluator(setup.vectors, setup.buffer_vectors)
        if evaluator.bn == "recompute":
            return plans[0]
        return fastest_plan(evaluator, plans, x, y, len(setup.vectors))

    def _bf16_error(self, setup: Setup) -> float:
        """The accuracy check of ``bf16``: the largest relative difference of the loss between bfloat16
        autocast and full precision at the grid's corners and centre."""
        xs, ys = setup.xs, setup.ys
        corners = [(xs[0], ys[0] if ys is not None else None), (xs[-1], ys[-1] if ys is not None else None),
                   (xs[len(xs) // 2], ys[len(ys) // 2] if ys is not None else None)]
        coords = torch.tensor([[a] if b is None else [a, b] for a, b in corners], dtype=self.dtype, device=self.device)
        batches = split_batches(*self._any_split(), setup.batch)
        low = self.evaluator(setup.vectors, setup.buffer_vectors, True).sums(coords, batches)
        full = self.evaluator(setup.vectors, setup.buffer_vectors, False).sums(coords, batches)
        return float(((low.loss - full.loss).abs() / full.loss.abs().clamp_min(1e-12)).max())

    def _load_parts(self, setup: Setup) -> None:
        """The values of the stored parts; which chunks are missing; the next part's number."""
        self.values = {m: np.full(setup.points, np.nan) for m in self.metrics}
        done = np.zeros(setup.points, dtype=bool)
        parts = sorted(self.partial.glob("part-*.h5"))
        for f in parts:
            try:
                with h5py.File(f, "r") as fh:
                    idx = fh["indices"][()]
                    for m in self.metrics:
                        self.values[m][idx] = fh[m][()]
                    done[idx] = True
            except (OSError, KeyError):
                continue
        chunk = setup.chunk
        setup.missing = [c for c in range(math.ceil(setup.points / chunk)) if not done[c * chunk:(c + 1) * chunk].all()]
        setup.serial = len(parts)

    # --- every rank: the rounds of chunks -------------------------------------------------------------
    def evaluate(self, setup: Setup, progress: Progress | None) -> tuple[int, int]:
        """Evaluate the missing chunks; returns (points computed now, points resumed from parts).

        Rounds: every rank evaluates per_rank chunks (round-robin within the round), rank 0 gathers and
        stores them. Several processes start at one chunk per rank and then size the rounds to about
        ROUND_SECONDS (rank 0's measurement, broadcast), so the ranks synchronise rarely; one process
        takes one chunk per round (progress after every chunk, no collective to amortise)."""
        chunk, npoints = setup.chunk, setup.points
        resumed = npoints - sum(min(chunk, npoints - c * chunk) for c in setup.missing)
        evaluator = self.evaluator(setup.vectors, setup.buffer_vectors)
        batches = {s: split_batches(x, y, setup.batch) for s, (x, y) in self.data.items()}
        ds = self.loaded.dataset
        train_batches = split_batches(ds.x_train, ds.y_train, setup.batch) if self.spec.bn == "recompute" else None
        coords_all = torch.as_tensor(setup.grid, dtype=self.dtype, device=self.device)
        size, me = distributed.world_size(), distributed.rank()
        position, per_rank, done_new, pending, last_save = 0, 1, 0, [], time.monotonic()
        while position < len(setup.missing):
            round_chunks = setup.missing[position:position + per_rank * size]
            position += len(round_chunks)
            started = time.monotonic()
            gathered = distributed.gather([(c, evaluator.metrics(coords_all[c * chunk:(c + 1) * chunk], batches,
                                                                  train_batches)) for c in round_chunks[me::size]])
            if size > 1:
                elapsed = time.monotonic() - started
                per_rank = distributed.broadcast(min(1024, max(1, round(per_rank * ROUND_SECONDS
                                                                        / max(elapsed, 1e-3)))))
            if not distributed.is_main():
                continue
            for c, out in (pair for rank_results in gathered for pair in rank_results):
                for m in self.metrics:
                    self.values[m][c * chunk:(c + 1) * chunk] = out[m]
                pending.append(np.arange(c * chunk, min((c + 1) * chunk, npoints)))
                done_new += len(out[self.metrics[0]])
            if time.monotonic() - last_save >= self.plan.save_every:
                self._store_part(setup, pending)
                last_save = time.monotonic()
            if progress is not None:
                progress(resumed + done_new, npoints, "surface")
        return done_new, resumed

    def _store_part(self, setup: Setup, pending: list[np.ndarray]) -> None:
        idx = np.concatenate(pending)
        with atomic_h5(self.partial / f"part-{setup.serial:06d}.h5", SURFACE_FORMAT) as fh:
            fh.create_dataset("indices", data=idx)
            for m in self.metrics:
                fh.create_dataset(m, data=self.values[m][idx])
        setup.serial += 1
        pending.clear()

    def write(self, setup: Setup) -> None:
        """The finished file (atomically), then the partial folder goes (rank 0)."""
        info = {**setup.info, "points_per_chunk": setup.chunk, "batch_size": setup.batch}  # the plan, for the record
        with atomic_h5(self.path, SURFACE_FORMAT) as fh:
            fh.attrs["checkpoint"] = int(self.loaded.step)
            fh.attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            fh.attrs["options"] = json.dumps(self.options)
            fh.attrs["info"] = json.dumps(info)
            fh.attrs["axis_order"] = ("train_loss[i] = L(xcoordinates[i])" if setup.ys is None else
                                      "train_loss[i, j] = L(xcoordinates[i], ycoordinates[j])")
            fh.attrs["schema"] = SCHEMA
            fh.create_dataset("xcoordinates", data=setup.xs)
            if setup.ys is not None:
                fh.create_dataset("ycoordinates", data=setup.ys)
            for m in self.metrics:
                fh.create_dataset(m, data=self.values[m].reshape(setup.shape))
            for k, v in (setup.trajectory or {}).items():
                fh.create_dataset(k, data=v)
            for k in ("explained_variance_ratio_", "singular_values_", "eigenvalues"):
                if k in info:
                    fh.create_dataset(k, data=np.asarray(info[k]))
            with h5py.File(self.spec_file, "r") as src:
                for axis in ("xdirection", "ydirection", "xbuffers", "ybuffers"):
                    if axis in src:
                        src.copy(src[axis], fh, axis)
        shutil.rmtree(self.partial, ignore_errors=True)
