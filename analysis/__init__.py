"""Analyses of checkpoints: evaluation, curvature (eigenvalues, traces, densities), studies.

>>> from landscape.analysis import load_checkpoint_model, curvature_analysis, lanczos
>>> loaded = load_checkpoint_model("runs/demo", "last", samples=1000)
>>> result = curvature_analysis(loaded, top_k=5, trace=True, density=True)
>>> result["eigenvalues"], result["trace"]["estimate"], result["trace"]["stderr"]

The estimators are small functions over any operator with ``@`` (``landscape.operators``):
``lanczos``, ``power_iteration``, ``hutchinson``, ``hutchpp``, ``control_variate_trace``,
``estimate_trace``, ``exact_diagonal``, ``slq``.

Modules: ``directions``, ``grid_evaluation`` and ``surface`` (loss slices and surfaces),
``curves``, ``autoneb``, ``alignment`` and ``paths`` (mode connectivity), ``sharpness`` (flatness
measures), ``tracking`` (curvature during training), ``study`` (hyper-parameter studies)::

    from landscape.analysis.surface import SurfaceSpec, compute_surface
    from landscape.analysis.paths import ConnectSpec, connect
    from landscape.analysis.sharpness import measure_all
"""

from .curvature import CurvatureOptions, curvature_analysis
from .density import SpectralDensity, slq
from .evaluation import evaluate_checkpoint
from .lanczos import EigenResult, lanczos
from .loading import LoadedCheckpoint, load_checkpoint_model, resolve_steps
from .power import power_iteration
from .trace import TraceResult, control_variate_trace, estimate_trace, exact_diagonal, hutchinson, hutchpp

__all__ = ["CurvatureOptions", "curvature_analysis", "SpectralDensity", "slq", "evaluate_checkpoint",
           "EigenResult", "lanczos", "LoadedCheckpoint", "load_checkpoint_model", "resolve_steps",
           "power_iteration", "TraceResult", "control_variate_trace", "estimate_trace", "exact_diagonal",
           "hutchinson", "hutchpp"]
