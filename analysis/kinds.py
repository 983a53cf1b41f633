"""The registry of analysis kinds: each a spec type, a run function and a result type.

``run_analysis(checkpoint, spec)`` picks the kind by the spec's type; the CLI iterates ``ANALYSES``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from landscape.errors import LandscapeError
from landscape.runs import Run

from .contract import Progress, Result
from .curvature import CurvatureResult, CurvatureSpec, run_curvature
from .evaluation import EvaluationResult, EvaluationSpec, evaluate_checkpoint
from .loading import LoadedCheckpoint, load_checkpoint_model
from .path_result import ConnectResult, ConnectSpec
from .paths import connect
from .sharpness_analysis import SharpnessResult, SharpnessSpec, run_sharpness
from .surface import SurfaceResult, SurfaceSpec, compute_surface


@dataclass(frozen=True)
class AnalysisKind:
    name: str
    spec: type
    result: type
    run: Callable[[LoadedCheckpoint, Any, Progress | None], Result]
    summary: str


ANALYSES: dict[str, AnalysisKind] = {kind.name: kind for kind in (
    AnalysisKind("evaluation", EvaluationSpec, EvaluationResult, evaluate_checkpoint,
                 "train/test loss and accuracy, generalization gap"),
    AnalysisKind("curvature", CurvatureSpec, CurvatureResult, run_curvature,
                 "eigenvalues, trace, tr(H^2), diagonal, spectral density of the Hessian, GGN or Fisher"),
    AnalysisKind("sharpness", SharpnessSpec, SharpnessResult, run_sharpness,
                 "flatness and sharpness measures with the generalization gap"),
    AnalysisKind("surface", SurfaceSpec, SurfaceResult, compute_surface,
                 "1-D loss slices and 2-D loss surfaces (resumable, loss-landscape's file layout)"),
    AnalysisKind("connect", ConnectSpec, ConnectResult, connect,
                 "mode connectivity: linear path, Bezier/PolyChain curves, AutoNEB, barriers, ensembles"),
)}


def kind_of(spec: Any) -> AnalysisKind:
    for kind in ANALYSES.values():
        if isinstance(spec, kind.spec):
            return kind
    raise LandscapeError(f"{type(spec).__name__} is not an analysis spec; use one of "
                         + ", ".join(k.spec.__name__ for k in ANALYSES.values()))


def run_analysis(checkpoint: LoadedCheckpoint | Run | str | Path, spec: Any,
                 progress: Progress | None = None) -> Result:
    """Run the analysis ``spec`` describes on a loaded checkpoint (or the last checkpoint of a run folder)."""
    kind = kind_of(spec)
    loaded = checkpoint if isinstance(checkpoint, LoadedCheckpoint) else load_checkpoint_model(checkpoint)
    return kind.run(loaded, spec, progress)
