"""Surface and connect analyses behind the analysis contract's interface (spec, run, result with
``save``/``to_json``/``summary``), for the CLI's checkpoint loop."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from landscape.analysis.autoneb import NEBOptions
from landscape.analysis.curves import CurveTraining
from landscape.analysis.paths import ConnectSpec, connect
from landscape.analysis.surface import SurfaceSpec, compute_surface, parse_range
from landscape.errors import LandscapeError

from .connect_output import connect_view, describe as describe_connect
from .surface_output import describe_surface, surface_view


@dataclass
class StoredView:
    """A computed surface or path: already stored by its computation (resumable), printed by the CLI."""

    checkpoint: int
    view: dict[str, Any]
    text: str

    def save(self, run: Any) -> Path:
        return Path(self.view.get("surface") or self.view["result"])

    def to_json(self) -> dict[str, Any]:
        return {"checkpoint": self.checkpoint, **self.view}

    def summary(self) -> str:
        return self.text


@dataclass
class SurfaceJob:
    spec: SurfaceSpec
    points_per_chunk: int | None
    batch_size: int | None
    save_every: float

    def validate(self) -> None:
        self.spec.validate()
        if self.points_per_chunk is not None and self.points_per_chunk <= 0:
            raise LandscapeError(f"--chunk-points must be positive, got {self.points_per_chunk}")
        if not self.save_every >= 0:
            raise LandscapeError(f"--save-every must be >= 0 seconds, got {self.save_every}")
        if self.batch_size is not None and self.batch_size <= 0:
            raise LandscapeError(f"--batch-size must be positive, got {self.batch_size}")


def surface_spec(f: dict[str, Any]) -> SurfaceJob:
    spec = SurfaceSpec(dims=int(f["slice_dims"][0]), directions=f["directions"], norm=f["norm"],
                       ignore_biasbn=not f["keep_biasbn"], xrange=parse_range(f["xrange"]) if f["xrange"] else None,
                       xnum=f["grid"], yrange=parse_range(f["y_range"]) if f["y_range"] else None,
                       ynum=f["y_grid"], between=f["between"], bn=f["bn"] or "eval", seed=f["seed"],
                       splits=tuple(s.strip() for s in f["metrics"].split(",") if s.strip()), name=f["name"],
                       bf16=f["bf16"])
    return SurfaceJob(spec, f["chunk_points"], f["batch_size"], f["save_every"])


def run_surface(loaded, job: SurfaceJob, progress) -> StoredView:
    bar = None if progress is None else (lambda done, total: progress(done, total, "surface"))
    result = compute_surface(loaded, job.spec, points_per_chunk=job.points_per_chunk, batch_size=job.batch_size,
                             save_every=job.save_every, progress=bar)
    return StoredView(loaded.step, surface_view(result), describe_surface(loaded.step, result))


def connect_spec(f: dict[str, Any]) -> ConnectSpec:
    return ConnectSpec(other=f["connect_to"], curve=f["curve"], points=f["points"], align=f["align"], bn=f["bn"],
                       training=CurveTraining(epochs=f["curve_epochs"], batch_size=f["curve_batch_size"],
                                              seed=f["seed"],
                                              optimizer={"name": f["curve_optimizer"], "lr": f["curve_lr"]}),
                       neb=NEBOptions(cycles=f["neb_cycles"], steps=f["neb_steps"], lr=f["neb_lr"], seed=f["seed"]),
                       ensemble_points=f["ensemble_points"], plane_grid=f["plane_grid"],
                       batch_size=f["batch_size"] or 1000, name=f["name"])


def run_connect(loaded, spec: ConnectSpec, progress) -> StoredView:
    say = None if progress is None else (lambda message: progress(0, None, message))
    result = connect(loaded, spec, progress=say)
    return StoredView(loaded.step, connect_view(result), describe_connect(loaded.step, result))
