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

from landscape import distributed
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
    correlations: dict[str, Any] | None = None
    interpolation: str | None = None


@dataclass
class MeasureOptions:
    """Sharpness measures computed on every finished run's last checkpoint (see analysis.sharpness)."""
    names: tuple[str, ...] = ()
    samples: int | None = 1000       # fixed seeded subset of the training set
    eps: float = 1e-3
    rho: float = 0.05
    seed: int = 0


def run_measures(run_dir: Path, opts: MeasureOptions, compute: bool = True) -> dict[str, float]:
    """The measures of a run's last checkpoint, reusing a stored ``sharpness`` result with the same
    options; without ``compute`` only the stored ones (other shards' runs), NaN for the rest."""
    from landscape.objective import Objective
    from landscape.runs import load_result, result_path, update_result

    from .loading import load_checkpoint_model
    from .sharpness import measure_all

    run = Run.open(run_dir)
    step = run.resolve_checkpoint("last")
    attrs = {"samples": opts.samples, "seed": opts.seed, "eps": opts.eps, "rho": opts.rho}
    path = result_path(run, step, "sharpness")
    stored: dict[str, float] = {}
    if path.exists():
        try:
            result, options = load_result(path)
            if {k: options.get(k) for k in attrs} == attrs:
                stored = dict(result.get("measures", {}))
        except LandscapeError:
            stored = {}
    missing = [n for n in opts.names if n not in stored]
    if missing and not compute:
        return {n: float(stored.get(n, math.nan)) for n in opts.names}
    if missing:
        loaded = load_checkpoint_model(run, step, samples=opts.samples, seed=opts.seed)
        ds = loaded.dataset
        obj = Objective(loaded.model, ds.x_train, ds.y_train, loaded.loss)
        values, _ = measure_all(obj, missing, eps=opts.eps, rho=opts.rho, seed=opts.seed)
        stored.update(values)
        update_result(run, step, "sharpness", {"measures": stored}, **attrs)
    return {n: float(stored[n]) for n in opts.names}


def kendall_correlations(rows: list[dict[str, Any]], measures: list[str], keys: list[str],
                         target: str = "generalization_gap") -> dict[str, Any]:
    """Kendall's tau between every measure and ``target`` over the finished runs, and its granulated form
    (Jiang et al. 2020, Sec. 4): for each varied hyper-parameter, the mean tau over groups of runs that
    differ in that hyper-parameter only; Psi = the mean over hyper-parameters."""
    from scipy.stats import kendalltau

    def tau(group: list[dict], m: str) -> float | None:
        pairs = [(r[m], r[target]) for r in group if math.isfinite(r.get(m, math.nan))
                 and math.isfinite(r.get(target, math.nan))]
        if len(pairs) < 2:
            return None
        a, b = zip(*pairs)
        value = kendalltau(a, b).statistic
        return float(value) if value == value else None

    out: dict[str, Any] = {}
    for m in measures:
        entry: dict[str, Any] = {"overall": tau(rows, m), "granulated": {}}
        for k in keys:
            groups: dict[str, list[dict]] = {}
            for r in rows:
                groups.setdefault(json.dumps([r.get(o) for o in keys if o != k]), []).append(r)
            taus = [t for g in groups.values() if (t := tau(g, m)) is not None]
            entry["granulated"][k] = float(np.mean(taus)) if taus else None
        values = [v for v in entry["granulated"].values() if v is not None]
        entry["psi"] = float(np.mean(values)) if values else None
        out[m] = entry
    return out


def batch_interpolation(out: Path, vary: Mapping[str, list[Any]], rows: list[dict[str, Any]]) -> str | None:
    """Keskar et al.'s Fig. 3: the 1-D line from the smallest- to the largest-batch solution (other
    varied values: those of the first combination); returns the stored slice's path, if any."""
    from .loading import load_checkpoint_model
    from .surface import SurfaceSpec, compute_surface

    key = "training.batch_size"
    if key not in vary or len(set(vary[key])) < 2:
        return None
    first = rows[0]
    same = [r for r in rows if r["status"] == "finished"
            and all(r.get(k) == first.get(k) for k in vary if k != key)]
    if len(same) < 2:
        return None
    small = min(same, key=lambda r: r[key])
    large = max(same, key=lambda r: r[key])
    loaded = load_checkpoint_model(out / "runs" / small["run"])
    result = compute_surface(loaded, SurfaceSpec(dims=1, between=str(out / "runs" / large["run"]), xnum=41,
                                                 name=f"surface-1d-batch-{small[key]}-to-{large[key]}"))
    return result["path"]


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


def write_study(out: Path, base: Mapping[str, Any], vary: Mapping[str, list[Any]], rows: list[dict],
                measures: tuple[str, ...] = (), correlations: dict | None = None,
                interpolation: str | None = None) -> Path:
    path = out / "study.h5"
    with atomic_h5(path, STUDY_FORMAT) as fh:
        fh.attrs["base_config"] = json.dumps(base)
        fh.attrs["vary"] = json.dumps(vary)
        fh.attrs["rows"] = json.dumps(rows)
        fh.attrs["measures"] = json.dumps(list(measures))
        fh.attrs["correlations"] = json.dumps(correlations or {})
        fh.attrs["interpolation"] = interpolation or ""
        numeric = ["train_loss", "test_loss", "train_acc", "test_acc", "generalization_gap", "loss_gap",
                   *measures]
        table = fh.create_group("table")
        table.create_dataset("run", data=np.array([r["run"] for r in rows], dtype=h5py.string_dtype()))
        table.create_dataset("status", data=np.array([r["status"] for r in rows], dtype=h5py.string_dtype()))
        for key in numeric:
            table.create_dataset(key, data=np.array([r.get(key, math.nan) for r in rows], dtype=np.float64))
    return path


def run_study(base: Mapping[str, Any], vary: Mapping[str, list[Any]], out: str | Path,
              shard: tuple[int, int] = (0, 1), progress: bool = False,
              log: Callable[[str], None] | None = None, measures: MeasureOptions | None = None) -> StudyResult:
    """Train (or resume, or skip) every combination in this shard, measure the finished ones, then
    write the study table (with Kendall correlations and the batch-size interpolation when measured)."""
    out = Path(out)
    index, count = shard
    if not (count >= 1 and 0 <= index < count):
        raise LandscapeError(f"--shard must be i/n with 0 <= i < n, got {index}/{count}")
    # under torchrun the ranks share this shard's combinations: rank r of W takes every W-th of them
    rank, size = distributed.rank(), distributed.world_size()
    index, count = index + count * rank, count * size
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
            train({} if resume else cfg, run_dir, resume=resume, progress=progress, local=True)
        except TrainingDiverged as exc:
            say(f"[{i + 1}/{len(combos)}] {name}: {exc}")
    distributed.barrier()  # every rank's runs are finished before the table is read
    rows = study_table(out, vary)
    names = tuple(measures.names) if measures else ()
    correlations = interpolation = None
    if names:
        for i, row in enumerate(rows):  # this rank measures (or finds stored) its own finished runs
            if row["status"] == "finished" and i % count == index:
                say(f"[{i + 1}/{len(combos)}] {row['run']}: measures")
                run_measures(out / "runs" / row["run"], measures)
        distributed.barrier()  # every rank has stored its runs' measures
        for row in rows:
            if row["status"] == "finished":
                row.update(run_measures(out / "runs" / row["run"], measures, compute=False))
        correlations = kendall_correlations(rows, list(names), list(vary))
        if all(r["status"] == "finished" for r in rows):
            interpolation = batch_interpolation(out, vary, rows)  # every rank takes part (grid split)
    path = out / "study.h5"
    if distributed.is_main():
        path = write_study(out, dict(base), dict(vary), rows, names, correlations, interpolation)
    distributed.barrier()
    return StudyResult(path, rows, correlations, interpolation)
