"""Studies: train every combination of varied hyper-parameters and tabulate the outcomes.

A study folder holds ``runs/<combination>/`` (ordinary run folders) and ``study.h5`` with the table
(hyper-parameters, train/test loss and accuracy, generalization gap, status). Finished runs are
skipped, unfinished ones resumed, so a killed study continues where it stopped; ``shard=(i, n)``
trains only combinations i, i+n, i+2n, ... for job arrays.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import h5py
import numpy as np

from landscape.errors import LandscapeError, TrainingDiverged
from landscape.optim import train
from landscape.optim.config import SECTIONS, merge, parse_value
from landscape.runs import Run, atomic_h5

STUDY_FORMAT = "landscape.study"

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
class StudyResult:
    path: Path
    rows: list[dict[str, Any]]


def study_table(out: Path, vary: Mapping[str, list[Any]]) -> list[dict[str, Any]]:
    """One row per combination from what is on disk (runs not started yet are 'pending')."""
    rows = []
    for combo in combinations(vary):
        name = combination_name(combo)
        row: dict[str, Any] = {"run": name, **combo}
        run_dir = out / "runs" / name
        if Run.exists(run_dir):
            run = Run.open(run_dir)
            last = run.last_metrics()
            row["status"] = run.status
            for key in ("train_loss", "test_loss", "train_acc", "test_acc"):
                row[key] = float(last.get(key, math.nan))
            row["generalization_gap"] = row["train_acc"] - row["test_acc"]
            row["loss_gap"] = row["test_loss"] - row["train_loss"]
            row["step"] = int(last.get("step", 0))
        else:
            row["status"] = "pending"
        rows.append(row)
    return rows


def write_study(out: Path, base: Mapping[str, Any], vary: Mapping[str, list[Any]], rows: list[dict]) -> Path:
    path = out / "study.h5"
    with atomic_h5(path, STUDY_FORMAT) as fh:
        fh.attrs["base_config"] = json.dumps(base)
        fh.attrs["vary"] = json.dumps(vary)
        fh.attrs["rows"] = json.dumps(rows)
        numeric = ["train_loss", "test_loss", "train_acc", "test_acc", "generalization_gap", "loss_gap"]
        table = fh.create_group("table")
        table.create_dataset("run", data=np.array([r["run"] for r in rows], dtype=h5py.string_dtype()))
        table.create_dataset("status", data=np.array([r["status"] for r in rows], dtype=h5py.string_dtype()))
        for key in numeric:
            table.create_dataset(key, data=np.array([r.get(key, math.nan) for r in rows], dtype=np.float64))
    return path


def run_study(base: Mapping[str, Any], vary: Mapping[str, list[Any]], out: str | Path,
              shard: tuple[int, int] = (0, 1), progress: bool = False,
              log: Callable[[str], None] | None = None) -> StudyResult:
    """Train (or resume, or skip) every combination in this shard, then write the study table."""
    out = Path(out)
    index, count = shard
    if not (count >= 1 and 0 <= index < count):
        raise LandscapeError(f"--shard must be i/n with 0 <= i < n, got {index}/{count}")
    combos = combinations(vary)
    if not combos:
        raise LandscapeError("a study needs at least one --vary key=v1,v2,...")
    configs = [combination_config(base, c) for c in combos]
    say = log or (lambda _msg: None)
    for i, (combo, cfg) in enumerate(zip(combos, configs)):
        if i % count != index:
            continue
        name = combination_name(combo)
        run_dir = out / "runs" / name
        if Run.exists(run_dir):
            run = Run.open(run_dir)
            if run.status in ("finished", "diverged"):
                say(f"[{i + 1}/{len(combos)}] {name}: {run.status}, skipped")
                continue
            say(f"[{i + 1}/{len(combos)}] {name}: resuming")
            resume = True
        else:
            say(f"[{i + 1}/{len(combos)}] {name}: training")
            resume = False
        try:
            train({} if resume else cfg, run_dir, resume=resume, progress=progress)
        except TrainingDiverged as exc:
            say(f"[{i + 1}/{len(combos)}] {name}: {exc}")
    rows = study_table(out, vary)
    return StudyResult(write_study(out, dict(base), dict(vary), rows), rows)
