"""Optimizers, their registry and the training loop.

>>> from landscape.optim import train
>>> result = train({"data": {"name": "mnist1d"}, "model": {"name": "mlp"},
...                 "optimizer": {"name": "adam", "lr": 1e-3}, "training": {"epochs": 5}}, "runs/demo")
"""

from .registry import OPTIMIZERS, available_optimizers, build_optimizer, register_optimizer
from .schedules import lr_factor
from .training import Experiment, TrainResult, build_experiment, train

__all__ = ["OPTIMIZERS", "available_optimizers", "build_optimizer", "register_optimizer", "lr_factor",
           "Experiment", "TrainResult", "build_experiment", "train"]
