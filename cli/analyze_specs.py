"""The analysis kinds as ``landscape analyze`` sees them: the flags that belong to each, how they become
its spec, which flag names each spec field (where the names differ), and how it runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from landscape.analysis.autoneb import NEBOptions
from landscape.analysis.contract import Progress, Result
from landscape.analysis.curvature import CurvatureSpec, run_curvature
from landscape.analysis.curves import CurveTraining
from landscape.analysis.evaluation import EvaluationSpec, evaluate_checkpoint
from landscape.analysis.path_result import ConnectSpec
from landscape.analysis.paths import connect
from landscape.analysis.sharpness_analysis import SharpnessSpec, run_sharpness
from landscape.analysis.surface import SurfaceSpec, compute_surface
from landscape.analysis.surface_job import EvaluationPlan
from landscape.errors import LandscapeError

from .common import parse_pair

Flags = dict[str, Any]


@dataclass(frozen=True)
class CliKind:
    flags: tuple[str, ...]                    # click parameter names that belong to the kind
    build: Callable[[Flags], Any]             # the spec from the flags
    fields: dict[str, str]                    # spec field -> click parameter, where the names differ
    run: Callable[[Any, Any, Progress | None, Flags], Result]


def parse_samples(value: str | None) -> int | None:
    if value is None or value.strip().lower() == "all":
        return None
    try:
        n = int(value)
    except ValueError:
        raise LandscapeError(f"--samples must be a positive integer or 'all', got {value!r}") from None
    if n <= 0:
        raise LandscapeError(f"--samples must be positive, got {n}")
    return n


def parse_range(text: str) -> tuple[float, float]:
    return parse_pair(text, ":", float, f"--range must be A:B with numbers A < B, got {text!r}")


def curvature_spec(f: Flags) -> CurvatureSpec:
    return CurvatureSpec(curvature=f["curvature"], fisher_type=f["fisher_type"], top_k=f["top_k"],
                         bottom_k=f["bottom_k"], trace=f["trace"], frobenius=f["frobenius"], diag=f["diag"],
                         density=f["density"], per_layer=f["per_layer"], seed=f["seed"], batch_size=f["batch_size"],
                         precision=f["precision"], product_method=f["product_method"], compile=f["compile_products"],
                         tol=f["tol"], trace_rtol=f["trace_rtol"], density_runs=f["density_runs"],
                         density_steps=f["density_steps"], backend=f["backend"])


def sharpness_spec(f: Flags) -> SharpnessSpec:
    return SharpnessSpec(measures=tuple(f["sharpness_names"].split(",")), eps=f["sharpness_eps"],
                         rho=f["sharpness_rho"], m=f["sharpness_m"], seed=f["seed"], batch_size=f["batch_size"])


def surface_plan(f: Flags) -> EvaluationPlan:
    return EvaluationPlan(points_per_chunk=f["chunk_points"], batch_size=f["batch_size"], save_every=f["save_every"])


def surface_spec(f: Flags) -> SurfaceSpec:
    surface_plan(f).validate()
    return SurfaceSpec(dims=int(f["slice_dims"][0]), directions=f["directions"], norm=f["norm"],
                       ignore_biasbn=not f["keep_biasbn"], xrange=parse_range(f["xrange"]) if f["xrange"] else None,
                       xnum=f["grid"], yrange=parse_range(f["y_range"]) if f["y_range"] else None, ynum=f["y_grid"],
                       between=f["between"], bn=f["bn"] or "eval", seed=f["seed"],
                       splits=tuple(s.strip() for s in f["metrics"].split(",") if s.strip()), name=f["name"],
                       bf16=f["bf16"])


def run_surface(loaded, spec: SurfaceSpec, progress: Progress | None, f: Flags) -> Result:
    return compute_surface(loaded, spec, plan=surface_plan(f), progress=progress)


def connect_spec(f: Flags) -> ConnectSpec:
    return ConnectSpec(other=f["connect_to"], curve=f["curve"], points=f["points"], align=f["align"], bn=f["bn"],
                       training=CurveTraining(epochs=f["curve_epochs"], batch_size=f["curve_batch_size"],
                                              seed=f["seed"], optimizer={"name": f["curve_optimizer"],
                                                                         "lr": f["curve_lr"]}),
                       neb=NEBOptions(cycles=f["neb_cycles"], steps=f["neb_steps"], lr=f["neb_lr"], seed=f["seed"]),
                       ensemble_points=f["ensemble_points"], plane_grid=f["plane_grid"],
                       batch_size=f["batch_size"] or 1000, name=f["name"])


def _library(run: Callable[[Any, Any, Progress | None], Result]) -> Callable[[Any, Any, Progress | None, Flags], Result]:
    return lambda loaded, spec, progress, flags: run(loaded, spec, progress)


KINDS: dict[str, CliKind] = {
    "evaluation": CliKind((), lambda f: EvaluationSpec(), {}, _library(evaluate_checkpoint)),
    "curvature": CliKind(
        ("curvature", "fisher_type", "top_k", "bottom_k", "trace", "frobenius", "diag", "density", "per_layer",
         "precision", "product_method", "compile_products", "tol", "trace_rtol", "density_runs", "density_steps",
         "backend"),
        curvature_spec, {"compile": "compile_products"}, _library(run_curvature)),
    "surface": CliKind(
        ("slice_dims", "directions", "norm", "keep_biasbn", "grid", "xrange", "y_range", "y_grid", "between", "bn",
         "metrics", "name", "chunk_points", "bf16", "save_every"),
        surface_spec, {"dims": "slice_dims", "xnum": "grid", "yrange": "y_range", "ynum": "y_grid",
                       "splits": "metrics", "ignore_biasbn": "keep_biasbn", "points_per_chunk": "chunk_points"},
        run_surface),
    "sharpness": CliKind(
        ("sharpness_names", "sharpness_eps", "sharpness_rho", "sharpness_m"), sharpness_spec,
        {"measures": "sharpness_names", "eps": "sharpness_eps", "rho": "sharpness_rho", "m": "sharpness_m"},
        _library(run_sharpness)),
    "connect": CliKind(
        ("connect_to", "curve", "align", "points", "curve_epochs", "curve_optimizer", "curve_lr", "curve_batch_size",
         "ensemble_points", "plane_grid", "neb_cycles", "neb_steps", "neb_lr", "bn", "name"),
        connect_spec, {"other": "connect_to"}, _library(connect)),
}
