"""Curvature operators on the flat parameter vector: Hessian, generalized Gauss-Newton, Fisher.

>>> from landscape.objective import Objective
>>> from landscape.linalg.operators import HessianOperator
>>> H = HessianOperator(Objective(model, x, y, "cross_entropy"))
>>> Hv = H @ v                      # v: flat vector of H.shape[0] entries
>>> eigsh(H.to_scipy(), k=3)        # SciPy interop
>>> H.blocks()["0"]                 # per-layer diagonal block
"""

from .base import CurvatureOperator, DenseOperator, LinearOperator, ShiftedOperator
from .fisher import FisherOperator
from .ggn import GGNOperator
from .hessian import HessianOperator

CURVATURES = {"hessian": HessianOperator, "ggn": GGNOperator, "fisher": FisherOperator}

__all__ = ["CURVATURES", "CurvatureOperator", "DenseOperator", "FisherOperator", "GGNOperator",
           "HessianOperator", "LinearOperator", "ShiftedOperator"]
