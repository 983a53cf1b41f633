"""The sharpness analysis of a checkpoint: the measures of :mod:`landscape.analysis.sharpness` by name,
with the checkpoint's evaluation (to relate them to its generalization gap)::

    loaded = load_checkpoint_model("runs/mlp", "last", samples=1000)
    result = run_sharpness(loaded, SharpnessSpec(measures=("keskar", "sam", "lambda-max")))
    result.measures["sam"], result.evaluation.generalization_gap; result.save(loaded.run)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from landscape.objective import Objective

from .contract import Progress, Result, SpecError, attrs_field, quote, require
from .evaluation import EvaluationResult, evaluate_checkpoint
from .loading import LoadedCheckpoint
from .sharpness import MEASURES, measure_all, measure_names


@dataclass
class SharpnessSpec:
    """Measures by name (``MEASURES``, or ``("all",)``); ``eps``: Keskar's box size; ``rho``: SAM's radius;
    ``m``: m-sharpness (the SAM measures averaged over groups of m samples); ``seed`` of the random ones."""

    measures: tuple[str, ...] = ()
    eps: float = 1e-3
    rho: float = 0.05
    m: int | None = None
    seed: int = 0
    batch_size: int | None = None

    def __post_init__(self) -> None:
        names = (self.measures,) if isinstance(self.measures, str) else tuple(self.measures)
        unknown = [n for n in names if n.strip() and n.strip() not in (*MEASURES, "all")]
        if unknown:
            raise SpecError("SharpnessSpec", "measures", f"names the unknown sharpness measure {quote(unknown[0])}; choose from "
                            f"{', '.join(MEASURES)} or all")
        self.measures = measure_names(names)

    def validate(self) -> None:
        require(bool(self.measures), self, "measures", f"is empty; choose from {', '.join(MEASURES)} or all")
        require(self.eps > 0, self, "eps", f"must be positive, got {self.eps}")
        require(self.rho > 0, self, "rho", f"must be positive, got {self.rho}")
        require(self.m is None or self.m >= 1, self, "m", f"must be >= 1, got {self.m}")
        require(self.batch_size is None or self.batch_size > 0, self, "batch_size",
                f"must be positive, got {self.batch_size}")

    def attrs(self) -> dict[str, Any]:
        return {"eps": self.eps, "rho": self.rho, "m": self.m}


@dataclass
class SharpnessResult(Result):
    """One number per measure (``measures``), their details (Keskar's optimizer state, PAC-Bayes' sigma),
    the checkpoint's evaluation; stored as ``sharpness.h5``."""

    kind: ClassVar[str] = "sharpness"
    merge: ClassVar[bool] = True
    checkpoint: int
    measures: dict[str, float]
    details: dict[str, Any] = field(default_factory=dict)
    evaluation: EvaluationResult | None = None
    seconds: float = 0.0
    attrs: dict[str, Any] = attrs_field()

    @classmethod
    def from_stored(cls, tree: dict[str, Any], checkpoint: int, attrs: dict[str, Any]) -> "SharpnessResult":
        evaluation = tree.get("evaluation")
        evaluation = EvaluationResult.from_stored(evaluation, checkpoint, {}) if evaluation else None
        return cls(checkpoint=checkpoint, measures=dict(tree.get("measures", {})),
                   details=dict(tree.get("details", {})), evaluation=evaluation,
                   seconds=float(tree.get("seconds", 0.0)), attrs=attrs)

    def summary(self) -> str:
        lines = [f"checkpoint {self.checkpoint}:"]
        ev = self.evaluation
        if ev is not None:
            lines[0] += f" train loss {ev.train_loss:.4g}, test loss {ev.test_loss:.4g}" + (
                f", gap {100 * ev.generalization_gap:.2f} points" if ev.generalization_gap is not None else "")
        lines += [f"  {name:20s} {value:.6g}" for name, value in self.measures.items()]
        return "\n".join(lines)


def run_sharpness(loaded: LoadedCheckpoint, spec: SharpnessSpec, progress: Progress | None = None, *,
                  local: bool = False) -> SharpnessResult:
    """The measures of a loaded checkpoint on its (possibly subset) training set, and its evaluation.
    Under torchrun the ranks share the data (sums all-reduced) unless ``local``: this process alone."""
    spec.validate()
    ds = loaded.dataset
    obj = Objective(loaded.model, ds.x_train, ds.y_train, loaded.loss, batch_size=spec.batch_size, shard=not local)
    t0 = time.perf_counter()
    if progress is not None:
        progress(0, len(spec.measures), "sharpness measures")
    values, details = measure_all(obj, list(spec.measures), eps=spec.eps, rho=spec.rho, seed=spec.seed, m=spec.m)
    evaluation = evaluate_checkpoint(loaded, local=local)
    return SharpnessResult(checkpoint=loaded.step, measures=values, details=details, evaluation=evaluation,
                           seconds=time.perf_counter() - t0, attrs={**loaded.subset, **spec.attrs()})
