"""Analyses of checkpoints, one contract for every kind (:mod:`.contract`): a spec, ``run``, a typed result.

>>> from landscape.analysis import CurvatureSpec, load_checkpoint_model, run_analysis
>>> loaded = load_checkpoint_model("runs/demo", "last", samples=1000)
>>> result = run_analysis(loaded, CurvatureSpec(top_k=5, trace=True, density=True))
>>> result.eigenvalues, result.trace.estimate, result.trace.stderr
>>> result.save(loaded.run)          # RUN/analysis/<checkpoint>/hessian.h5; CurvatureResult.load(RUN)

Kinds (``ANALYSES``): evaluation (``EvaluationSpec``), curvature (``CurvatureSpec``), sharpness
(``SharpnessSpec``), surface (``SurfaceSpec``), connect (``ConnectSpec``); studies train runs first
(:mod:`.study_spec`: ``StudySpec``; :mod:`.study`: ``run_study``). The operators and estimators live in
the core, :mod:`landscape.linalg` (``lanczos``, ``power_iteration``, ``hutchinson``, ``hutchpp``,
``control_variate_trace``, ``estimate_trace``, ``exact_diagonal``, ``slq``), shared with the optimizers.

Modules: ``directions``, ``surface_plane``, ``grid_evaluation``, ``surface_job`` and ``surface`` (loss
slices and surfaces), ``curves``, ``autoneb``, ``alignment``, ``path_result`` and ``paths`` (mode
connectivity), ``sharpness`` (the flatness measures) and ``sharpness_analysis``, ``study_spec`` and
``study`` (hyper-parameter studies); figures in ``*_plots``.
"""

from .contract import Choice, Result, SpecError
from .curvature import CurvatureResult, CurvatureSpec, run_curvature
from .evaluation import EvaluationResult, EvaluationSpec, evaluate_checkpoint
from .kinds import ANALYSES, run_analysis
from .loading import LoadedCheckpoint, load_checkpoint_model, resolve_steps
from .path_result import ConnectResult, ConnectSpec
from .paths import connect
from .sharpness_analysis import SharpnessResult, SharpnessSpec, run_sharpness
from .study_spec import StudySpec
from .surface import SurfaceResult, SurfaceSpec, compute_surface

__all__ = ["ANALYSES", "Choice", "ConnectResult", "ConnectSpec", "CurvatureResult", "CurvatureSpec",
           "EvaluationResult", "EvaluationSpec", "LoadedCheckpoint", "Result", "SharpnessResult", "SharpnessSpec",
           "SpecError", "StudySpec", "SurfaceResult", "SurfaceSpec", "compute_surface", "connect", "evaluate_checkpoint",
           "load_checkpoint_model", "resolve_steps", "run_analysis", "run_curvature", "run_sharpness"]
