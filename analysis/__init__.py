"""Analyses of checkpoints. The curvature engine, surfaces, paths and sharpness measures build on
:func:`load_checkpoint_model`.

>>> from landscape.analysis import load_checkpoint_model, evaluate_checkpoint
>>> loaded = load_checkpoint_model("runs/demo", "last")
>>> evaluate_checkpoint(loaded)["test_acc"]
"""

from .evaluation import evaluate_checkpoint
from .loading import LoadedCheckpoint, load_checkpoint_model, resolve_steps

__all__ = ["evaluate_checkpoint", "LoadedCheckpoint", "load_checkpoint_model", "resolve_steps"]
