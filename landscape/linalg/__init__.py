"""Linear algebra on the flat parameter vector, shared by the optimizers and the analyses.

Operators (:mod:`landscape.linalg.operators`): Hessian, GGN and Fisher products of an
:class:`~landscape.objective.Objective`, dense matrices, shifts ``A + sigma I``, restriction to a parameter
subset and per-layer blocks. Estimators, one per module, each named after its method:

===================  ================================================  =========================
module               estimates                                         result
===================  ================================================  =========================
``lanczos``          extreme eigenpairs (Lanczos, full reorth.)        :class:`EigenResult`
``power``            dominant eigenpairs (power iteration, deflation)  :class:`EigenResult`
``hutchinson``       tr(A), tr(A^2), diag(A) (Hutchinson)              :class:`TraceResult`
``hutchpp``          tr(A) (Hutch++)                                   :class:`TraceResult`
``control_variate``  tr(A) = tr(C) + E[v^T (A - C) v]                  :class:`TraceResult`
``trace``            the best available trace (exact or a pilot)       :class:`TraceResult`
``diagonal``         diag(A) exactly, from unit vectors                tensor
``slq``              spectral density (stochastic Lanczos quadrature)  :class:`SpectralDensity`
``cg``               A x = b (conjugate gradient)                      :class:`CGResult`
``line_search``      a strong-Wolfe step along a direction             :class:`LineSearchResult`
===================  ================================================  =========================

Probes come from seeded generators (:mod:`landscape.linalg.probes`), so every estimate is reproducible.
"""

from .cg import CGResult, conjugate_gradient
from .control_variate import control_variate_trace
from .diagonal import exact_diagonal
from .hutchinson import hutchinson
from .hutchpp import hutchpp
from .lanczos import EigenResult, LanczosProcess, lanczos
from .line_search import LineSearchResult, strong_wolfe
from .operators import (CURVATURES, CurvatureOperator, DenseOperator, FisherOperator, GGNOperator, HessianOperator,
                        LinearOperator, ShiftedOperator)
from .power import power_iteration
from .probes import generator, probes
from .slq import SpectralDensity, slq
from .trace import estimate_trace
from .trace_result import Estimate, TraceResult

__all__ = ["CGResult", "conjugate_gradient", "control_variate_trace", "exact_diagonal", "hutchinson", "hutchpp",
           "EigenResult", "LanczosProcess", "lanczos", "LineSearchResult", "strong_wolfe", "CURVATURES",
           "CurvatureOperator", "DenseOperator", "FisherOperator", "GGNOperator", "HessianOperator", "LinearOperator",
           "ShiftedOperator", "power_iteration", "generator", "probes", "SpectralDensity", "slq", "estimate_trace",
           "Estimate", "TraceResult"]
