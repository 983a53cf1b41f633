"""Optimizers, their registry and the training loop.

>>> from landscape.optim import train
>>> result = train({"data": {"name": "mnist1d"}, "model": {"name": "mlp"},
...                 "optimizer": {"name": "adam", "lr": 1e-3}, "training": {"epochs": 5}}, "runs/demo")
"""

from .adahessian import AdaHessian
from .averaging import IterateAveraging
from .barzilai_borwein import BarzilaiBorwein
from .bfgs import BFGS
from .closure import Closure, DataParallelClosure
from .conjugate_gradient import NonlinearCG
from .curveball import CurveBall
from .delta_bar_delta import DeltaBarDelta
from .gauss_newton import GaussNewton, LevenbergMarquardt
from .hessian_free import HessianFree
from .kfac import KFAC
from .lbfgs import LBFGS
from .lookahead import Lookahead
from .newton import Newton, NewtonCG
from .parabola import ParabolaStep
from .registry import (OPTIMIZERS, WRAPPERS, available_optimizers, available_wrappers, build_optimizer,
                       register_optimizer, register_wrapper)
from .saddle_free import SaddleFreeNewton
from .sam import SAM
from .schedules import lr_factor
from .training import Experiment, TrainResult, build_experiment, epoch_order, make_closure, train

__all__ = ["OPTIMIZERS", "WRAPPERS", "available_optimizers", "available_wrappers", "build_optimizer",
           "register_optimizer", "register_wrapper", "lr_factor", "Experiment", "TrainResult", "build_experiment", "epoch_order",
           "train", "make_closure", "Closure", "DataParallelClosure", "AdaHessian", "BFGS", "CurveBall",
           "GaussNewton", "HessianFree", "KFAC", "LBFGS", "LevenbergMarquardt", "Newton", "NewtonCG",
           "SaddleFreeNewton", "BarzilaiBorwein", "DeltaBarDelta", "IterateAveraging", "Lookahead", "NonlinearCG",
           "ParabolaStep", "SAM"]
