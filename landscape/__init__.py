"""landscape: link optimizer choice to loss geometry and generalization.

Core package: run storage (:mod:`landscape.runs`), models (:mod:`landscape.models`), losses,
errors. Sub-packages: :mod:`landscape.data`, :mod:`landscape.optim`, :mod:`landscape.analysis`,
:mod:`landscape.cli`.
"""

from .errors import LandscapeError, TrainingDiverged

__all__ = ["LandscapeError", "TrainingDiverged"]
