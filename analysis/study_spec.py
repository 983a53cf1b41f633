"""What a study varies: ``section.key`` names (and their aliases), ``--vary`` values, the combinations
and their configs, and :class:`StudySpec` (also read from a study TOML)."""

from __future__ import annotations

import itertools
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from landscape.errors import LandscapeError
from landscape.optim.config import SECTIONS, merge, parse_value

from .contract import require
from .sharpness_analysis import SharpnessSpec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


ALIASES = {
    "batch-size": "training.batch_size", "batch_size": "training.batch_size", "lr": "optimizer.lr",
    "optimizer": "optimizer.name", "weight-decay": "optimizer.weight_decay",
    "weight_decay": "optimizer.weight_decay", "seed": "training.seed", "epochs": "training.epochs",
    "steps": "training.steps", "model": "model.name", "data": "data.name", "samples": "data.samples",
    "schedule": "training.schedule", "momentum": "optimizer.momentum",
}


def canonical_key(key: str) -> str:
    key = key.strip()
    key = ALIASES.get(key, key)
    section, dot, name = key.partition(".")
    if not dot or section not in SECTIONS or not name:
        raise LandscapeError(f"cannot vary {key!r}: use section.key (e.g. training.batch_size) or one of "
                             f"{', '.join(sorted(ALIASES))}")
    return key


def split_top_level(text: str) -> list[str]:
    """Split on commas outside brackets: ``"[1,2],[3]" -> ["[1,2]", "[3]"]``."""
    parts, depth, current = [], 0, []
    for ch in text:
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def parse_vary(items: list[str]) -> dict[str, list[Any]]:
    """``["batch-size=32,128", "lr=0.1,0.01"]`` -> ``{"training.batch_size": [32, 128], ...}``."""
    vary: dict[str, list[Any]] = {}
    for item in items:
        if "=" not in item:
            raise LandscapeError(f"--vary expects key=v1,v2,..., got {item!r}")
        key, _, values = item.partition("=")
        parsed = [parse_value(v) for v in split_top_level(values)]
        if not parsed:
            raise LandscapeError(f"--vary {key.strip()} has no values")
        vary[canonical_key(key)] = parsed
    return vary


def combinations(vary: Mapping[str, list[Any]]) -> list[dict[str, Any]]:
    keys = list(vary)
    return [dict(zip(keys, values)) for values in itertools.product(*(vary[k] for k in keys))]


def combination_name(combo: Mapping[str, Any]) -> str:
    """A folder name such as ``batch_size=32,lr=0.1``."""
    parts = []
    for key, value in combo.items():
        text = json.dumps(value) if not isinstance(value, str) else value
        parts.append(f"{key.partition('.')[2]}={text}")
    name = ",".join(parts) or "base"
    return re.sub(r"[^A-Za-z0-9_.=,+\-]", "_", name)


def combination_config(base: Mapping[str, Any], combo: Mapping[str, Any]) -> dict[str, Any]:
    cfg = dict(base)
    for key, value in combo.items():
        section, _, name = key.partition(".")
        cfg = merge(cfg, {section: {name: value}})
    return cfg


@dataclass
class StudySpec:
    """A study: every combination of the values in ``vary`` (``section.key`` -> list; aliases such as
    ``batch-size`` or ``lr`` accepted) trained on top of the ``base`` config into ``out/runs/<combination>``;
    ``shard=(i, n)`` trains combinations i, i+n, ... (job arrays); ``measures`` (a :class:`SharpnessSpec`)
    measures every finished run's last checkpoint on ``measure_samples`` training samples (a fixed seeded
    subset; None: all) and correlates the measures with the generalization gap."""

    base: dict[str, Any] = field(default_factory=dict)
    vary: dict[str, list[Any]] = field(default_factory=dict)
    out: Path = Path("studies/study")
    shard: tuple[int, int] = (0, 1)
    measures: SharpnessSpec | None = None
    measure_samples: int | None = 1000

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        for key, values in list(self.vary.items()):
            require(isinstance(values, list) and bool(values), self, "vary", f"{key} must be a non-empty list")
        self.vary = {canonical_key(k): v for k, v in self.vary.items()}

    def validate(self) -> None:
        index, count = self.shard
        require(count >= 1 and 0 <= index < count, self, "shard", f"must be i/n with 0 <= i < n, got {index}/{count}")
        require(bool(self.vary), self, "vary", "is empty: a study needs at least one key = [values]")
        require(self.measure_samples is None or self.measure_samples > 0, self, "measure_samples",
                f"must be positive, got {self.measure_samples}")
        if self.measures is not None:
            self.measures.validate()

    @classmethod
    def from_toml(cls, path: str | Path, **overrides: Any) -> "StudySpec":
        """A study TOML: the usual [data]/[model]/[optimizer]/[training] tables plus ``[study]`` with
        ``vary = {"training.batch_size" = [32, 1024], ...}`` and optionally ``measures = ["keskar", ...]``
        (measured with the base config's training seed); ``out`` defaults to ``studies/<file stem>``."""
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise LandscapeError(f"study spec {path} not found") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise LandscapeError(f"study spec {path} is not valid TOML: {exc}") from None
        study = raw.pop("study", {})
        vary = study.get("vary", {})
        if not isinstance(vary, dict):
            raise LandscapeError(f"{path}: [study] vary must be a table of key = [values]")
        names = study.get("measures", [])
        if not isinstance(names, list) or not all(isinstance(m, str) for m in names):
            raise LandscapeError(f"{path}: [study] measures must be a list of measure names")
        base = merge({}, raw)
        measures = SharpnessSpec(measures=tuple(names), seed=training_seed(base)) if names else None
        return cls(**{"base": base, "vary": vary, "out": Path("studies") / path.stem, "measures": measures,
                      **overrides})


def training_seed(config: Mapping[str, Any]) -> int:
    return int(config.get("training", {}).get("seed", 0) or 0)
