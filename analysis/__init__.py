"""Analyses of checkpoints: evaluation, curvature (eigenvalues, traces, densities), studies.

>>> from landscape.analysis import load_checkpoint_model, curvature_analysis
>>> loaded = load_checkpoint_model("runs/demo", "last", samples=1000)
>>> result = curvature_analysis(loaded, top_k=5, trace=True, density=True)
>>> result["eigenvalues"], result["trace"]["estimate"], result["trace"]["stderr"]

The operators and estimators the analyses use live in the core, :mod:`landscape.linalg`
(``lanczos``, ``power_iteration``, ``hutchinson``, ``hutchpp``, ``control_variate_trace``,
``estimate_trace``, ``exact_diagonal``, ``slq``), shared with the optimizers.

Modules: ``directions``, ``grid_evaluation`` and ``surface`` (loss slices and surfaces),
``curves``, ``autoneb``, ``alignment`` and ``paths`` (mode connectivity), ``sharpness`` (flatness
measures), ``study`` (hyper-parameter studies)::

    from landscape.analysis.surface import SurfaceSpec, compute_surface
    from landscape.analysis.paths import ConnectSpec, connect
    from landscape.analysis.sharpness import measure_all
"""

from .curvature import CurvatureOptions, curvature_analysis
from .evaluation import evaluate_checkpoint
from .loading import LoadedCheckpoint, load_checkpoint_model, resolve_steps

__all__ = ["CurvatureOptions", "curvature_analysis", "evaluate_checkpoint", "LoadedCheckpoint",
           "load_checkpoint_model", "resolve_steps"]
