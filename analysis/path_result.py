"""The connect analysis' spec and typed result: paths between two minima and their barriers.

Barriers of a path w(t), t in [0, 1], for a metric L (train/test loss, train/test error):

- ``barrier``          = max_t L(t) - ((1 - t) L(0) + t L(1))   (Frankle et al. 2020);
- ``barrier_midpoint`` = max_t L(t) - (L(0) + L(1)) / 2         (Ainsworth et al. 2023, git re-basin).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from landscape.errors import LandscapeError
from landscape.results import load_result, result_path

from .autoneb import NEBOptions
from .contract import Choice, Result, attrs_field, jsonable, open_run, parse_choices, require
from .curves import CurveTraining
from .surface import BatchNormMode

PATH_KEYS = ("t", "train_loss", "train_acc", "test_loss", "test_acc")


class Curve(Choice):
    LINEAR = "linear"        # the straight segment only
    BEZIER = "bezier"        # quadratic Bezier curve with a trained bend (Garipov et al. 2018)
    POLYCHAIN = "polychain"  # two segments through a trained bend (Garipov et al. 2018)
    AUTONEB = "autoneb"      # nudged-elastic-band minimum-energy path with insertions (Draxler et al. 2018)


@dataclass
class ConnectSpec:
    """Connect the checkpoint to ``other`` (a run folder, a checkpoint file or a step of this run) along
    ``curve``, evaluated at ``points`` values of t; ``align`` permutes the other's hidden units to match
    first (weight matching); ``bn`` (default: recompute for BatchNorm models) as in surfaces; the
    ensemble averages the predictions of ``ensemble_points`` points of the curve; ``plane_grid`` > 0 adds
    the loss on the plane through both minima and the bend."""

    other: str
    curve: Curve = Curve.LINEAR
    points: int = 41
    align: bool = False
    bn: BatchNormMode | None = None
    training: CurveTraining = field(default_factory=CurveTraining)
    neb: NEBOptions = field(default_factory=NEBOptions)
    ensemble_points: int = 10
    plane_grid: int = 0
    batch_size: int = 1000
    name: str | None = None

    def __post_init__(self) -> None:
        parse_choices(self)

    def validate(self) -> None:
        require(self.points >= 3, self, "points", f"must be >= 3, got {self.points}")
        require(self.ensemble_points >= 0, self, "ensemble_points", f"must be >= 0, got {self.ensemble_points}")
        require(self.plane_grid == 0 or self.plane_grid >= 2, self, "plane_grid",
                f"must be 0 or >= 2, got {self.plane_grid}")
        require(self.batch_size >= 1, self, "batch_size", f"must be positive, got {self.batch_size}")
        self.training.validate()
        self.neb.validate()

    @property
    def result_name(self) -> str:
        if self.name:
            return self.name
        other = Path(self.other.rstrip("/")).name.removesuffix(".h5") or "other"
        return f"path-{self.curve}{'-aligned' if self.align else ''}-{other}"


def barriers(t: np.ndarray, values: np.ndarray) -> dict[str, float]:
    """Both barrier definitions of the module docstring over the points with t in [0, 1]."""
    t = np.asarray(t, dtype=float)
    values = np.asarray(values, dtype=float)
    inside = (t >= -1e-12) & (t <= 1 + 1e-12)
    t, v = t[inside], values[inside]
    v0, v1 = v[np.argmin(np.abs(t))], v[np.argmin(np.abs(t - 1))]
    return {"barrier": float(np.max(v - ((1 - t) * v0 + t * v1))), "barrier_midpoint": float(np.max(v) - (v0 + v1) / 2),
            "max": float(np.max(v)), "argmax_t": float(t[int(np.argmax(v))])}


def path_barriers(t, metrics: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Barriers of every metric along a path (accuracies as errors, 1 - accuracy)."""
    out = {}
    for key, values in metrics.items():
        if key.endswith("_acc"):
            out[key.replace("_acc", "_error")] = barriers(t, 1.0 - values)
        else:
            out[key] = barriers(t, values)
    return out


@dataclass
class ConnectPath:
    """Train/test loss and accuracy at the path's ``t`` and their barriers; the bend's training loss
    per epoch and the bend (Bezier, PolyChain); pivots, their t, insertion history and length (AutoNEB)."""

    t: np.ndarray
    train_loss: np.ndarray
    test_loss: np.ndarray
    barrier: dict[str, dict[str, float]]
    train_acc: np.ndarray | None = None
    test_acc: np.ndarray | None = None
    training_loss: Any = None
    bend: np.ndarray | None = None
    pivots: int | None = None
    pivot_t: np.ndarray | None = None
    history: Any = None
    length: float | None = None

    def view(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in PATH_KEYS if getattr(self, k) is not None}
        out["barrier"] = self.barrier
        for key in ("pivots", "length", "training_loss"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return jsonable(out)


@dataclass
class ConnectResult(Result):
    """The linear path (and the fitted curve), their barriers, the ensembles' test accuracy, the plane's
    surface file; stored as ``RUN/analysis/<checkpoint>/<spec.result_name>.h5`` by :func:`connect`."""

    kind: ClassVar[str] = "connect"
    stored_by_run: ClassVar[bool] = True  # connect() stores it before it removes its resumable state
    checkpoint: int
    other: str
    curve: Curve = field(metadata={"key": "kind"})
    bn: str
    aligned: bool
    distance: float
    linear: ConnectPath
    ensemble: dict[str, float]
    permutations: dict[str, Any] | None = None
    fitted: ConnectPath | None = None
    plane: dict[str, Any] | None = None
    saddle_train_loss: float | None = None
    seconds: float = 0.0
    result_name: str = field(default="", metadata={"stored": False})
    path: Path | None = field(default=None, metadata={"stored": False})
    attrs: dict[str, Any] = attrs_field()

    @property
    def name(self) -> str:
        return self.result_name

    @property
    def main(self) -> ConnectPath:
        """The requested path: the fitted curve when there is one, else the linear path."""
        return self.fitted if self.fitted is not None else self.linear

    @classmethod
    def read(cls, path: Path, checkpoint: int) -> "ConnectResult":
        """The stored result in file ``path`` (of checkpoint ``checkpoint``)."""
        tree, attrs = load_result(path)
        result = cls.from_stored(tree, checkpoint, attrs)
        result.path, result.result_name = path, path.stem
        return result

    @classmethod
    def load(cls, run, checkpoint: str | int = "last", name: str | None = None) -> "ConnectResult":
        """The stored result ``name`` (a ``ConnectSpec.result_name``) of ``checkpoint``."""
        run = open_run(run)
        step = run.resolve_checkpoint(checkpoint)
        if name is None:
            raise LandscapeError("ConnectResult.load needs the result's name (ConnectSpec.result_name)")
        path = result_path(run, step, name)
        if not path.exists():
            raise LandscapeError(f"no {name} result for checkpoint {step} of {run.path}")
        return cls.read(path, step)

    def to_json(self) -> dict[str, Any]:
        """Top level: the requested path (t, losses, accuracies) and its train-loss barrier; then details."""
        main = self.main
        view: dict[str, Any] = {k: getattr(main, k) for k in PATH_KEYS if getattr(main, k) is not None}
        view["barrier"] = main.barrier["train_loss"]["barrier"]
        view["barrier_midpoint"] = main.barrier["train_loss"]["barrier_midpoint"]
        view.update(curve=self.curve.value, other=self.other, aligned=self.aligned, bn=self.bn,
                    distance=self.distance, linear=self.linear.view(), ensemble=self.ensemble,
                    result=str(self.path), seconds=self.seconds)
        if self.fitted is not None:
            view["fitted"] = self.fitted.view()
            view["barrier_ratio_curve_to_linear"] = self.barrier_ratio()
        if self.saddle_train_loss is not None:
            view["saddle_train_loss"] = self.saddle_train_loss
        if self.plane is not None:
            view["plane"] = {k: self.plane[k] for k in ("surface", "bend", "w1")}
        return jsonable({"checkpoint": self.checkpoint, **view})

    def barrier_ratio(self) -> float:
        return (self.fitted.barrier["train_loss"]["barrier"]
                / max(self.linear.barrier["train_loss"]["barrier"], 1e-12))

    def summary(self) -> str:
        lines = [f"checkpoint {self.checkpoint} -> {self.other}{' (aligned)' if self.aligned else ''}: "
                 f"distance {self.distance:.4g}, BatchNorm {self.bn}", _barrier_line("linear", self.linear)]
        if self.fitted is not None:
            lines.append(_barrier_line(self.curve.value, self.fitted))
            lines.append(f"  curve barrier / linear barrier = {self.barrier_ratio():.3g}")
        ens = self.ensemble
        if "endpoint_0_test_acc" in ens:
            text = (f"  test accuracy: endpoints {100 * ens['endpoint_0_test_acc']:.2f}% / "
                    f"{100 * ens['endpoint_1_test_acc']:.2f}%, their ensemble {100 * ens['endpoints_test_acc']:.2f}%")
            if "curve_test_acc" in ens:
                text += f", {ens['curve_points']} points of the curve {100 * ens['curve_test_acc']:.2f}%"
            lines.append(text)
        if self.plane is not None:
            lines.append(f"  plane: {self.plane['surface']}")
        lines.append(f"  saved {self.path} ({self.seconds:.1f} s)")
        return "\n".join(lines)


def _barrier_line(label: str, path: ConnectPath) -> str:
    b = path.barrier
    text = (f"  {label:8s} train loss max {b['train_loss']['max']:.4g} (barrier {b['train_loss']['barrier']:.4g}, "
            f"midpoint barrier {b['train_loss']['barrier_midpoint']:.4g})")
    if "test_error" in b:
        text += f", test error barrier {100 * b['test_error']['barrier']:.2f} points"
    return text
