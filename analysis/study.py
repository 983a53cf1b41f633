"""Studies: train every combination of varied hyper-parameters and tabulate the outcomes.

A study folder holds ``runs/<combination>/`` (ordinary run folders) and ``study.h5`` with the table
(hyper-parameters, train/test loss and accuracy, generalization gap, status). Finished runs are
skipped, unfinished ones resumed, so a killed study continues where it stopped; ``shard=(i, n)``
trains only combinations i, i+n, i+2n, ... for job arrays.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping

import h5py
import numpy as np

from landscape import distributed
from landscape.errors import LandscapeError, TrainingDiverged
from landscape.optim import train
from landscape.runs import Run, atomic_h5, open_h5

from .contract import Progress
from .loading import load_checkpoint_model
from .sharpness_analysis import SharpnessResult, SharpnessSpec, run_sharpness
from .study_spec import StudySpec, combination_config, combination_name, combinations

STUDY_FORMAT = "landscape.study"

@dataclass
class StudyResult:
    """The study table (one row per combination: hyper-parameters, status, train/test loss and accuracy,
    generalization and loss gaps, measures), Kendall correlations, and the small- to large-batch line's
    surface file; stored as ``out/study.h5``."""

    path: Path
    vary: dict[str, list[Any]]
    rows: list[dict[str, Any]]
    measures: tuple[str, ...] = ()
    correlations: dict[str, Any] | None = None
    interpolation: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"study": str(self.path), "rows": self.rows, "correlations": self.correlations,
                "interpolation": self.interpolation}

    def summary(self) -> str:
        return study_summary(self)

    @classmethod
    def load(cls, folder: str | Path) -> "StudyResult":
        path = Path(folder) / "study.h5"
        if not path.exists():
            raise LandscapeError(f"{folder} is not a study folder (no study.h5)")
        fh = open_h5(path, STUDY_FORMAT, "study file")
        try:
            with fh:
                return cls(path, json.loads(fh.attrs["vary"]), json.loads(fh.attrs["rows"]),
                           tuple(json.loads(fh.attrs.get("measures", "[]"))),
                           json.loads(fh.attrs.get("correlations", "{}")), fh.attrs.get("interpolation", "") or None)
        except (OSError, KeyError, ValueError) as exc:
            raise LandscapeError(f"cannot read {path}: file is corrupt or incomplete ({exc})") from None


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.3f}"


def study_summary(result: StudyResult) -> str:
    """The table as text, then the Kendall correlations."""
    keys, names = list(result.vary), list(result.measures)
    header = [k.partition(".")[2] for k in keys] + ["status", "train acc", "test acc", "gap", "train loss",
                                                    "test loss", *names]
    lines = ["  ".join(f"{h:>12}" for h in header)]
    for row in result.rows:
        cells = [str(row[k]) for k in keys] + [row["status"]]
        for key, pct in (("train_acc", True), ("test_acc", True), ("generalization_gap", True),
                         ("train_loss", False), ("test_loss", False)):
            v = row.get(key, math.nan)
            cells.append("-" if v != v else (f"{100 * v:.2f}%" if pct else f"{v:.4g}"))
        cells += [f"{row.get(n, math.nan):.4g}" for n in names]
        lines.append("  ".join(f"{c:>12}" for c in cells))
    if result.correlations:
        lines += ["", "Kendall tau with the generalization gap: overall, per hyper-parameter, Psi (their mean)"]
        for n, c in result.correlations.items():
            per = ", ".join(f"{k.partition('.')[2]} {_signed(v)}" for k, v in c["granulated"].items())
            lines.append(f"  {n:20s} {_signed(c['overall'])}   [{per}]   Psi {_signed(c['psi'])}")
    return "\n".join(lines)


def run_measures(run_dir: Path, spec: SharpnessSpec, samples: int | None, compute: bool = True) -> dict[str, float]:
    """The measures of a run's last checkpoint, reusing a stored ``sharpness`` result with the same
    options; without ``compute`` only the stored ones (other shards' runs), NaN for the rest. Computed
    by this process alone (under torchrun each rank measures its own runs)."""
    run = Run.open(run_dir)
    step = run.resolve_checkpoint("last")
    attrs = {"samples": samples, "seed": spec.seed, "eps": spec.eps, "rho": spec.rho}
    stored: dict[str, float] = {}
    try:
        old = SharpnessResult.load(run, step)
        if {k: old.attrs.get(k) for k in attrs} == attrs:
            stored = dict(old.measures)
    except LandscapeError:
        stored = {}  # none yet, or unreadable: computed again
    missing = [n for n in spec.measures if n not in stored]
    if missing and not compute:
        return {n: float(stored.get(n, math.nan)) for n in spec.measures}
    if missing:
        loaded = load_checkpoint_model(run, step, samples=samples, seed=spec.seed)
        result = run_sharpness(loaded, replace(spec, measures=tuple(missing)), local=True)
        result.measures = {**stored, **result.measures}
        result.save(run)
        stored = result.measures
    return {n: float(stored[n]) for n in spec.measures}


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
    return str(result.path)


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


def write_study(spec: StudySpec, rows: list[dict], correlations: dict | None = None,
                interpolation: str | None = None) -> Path:
    path = spec.out / "study.h5"
    measures = spec.measures.measures if spec.measures else ()
    with atomic_h5(path, STUDY_FORMAT) as fh:
        fh.attrs["base_config"] = json.dumps(spec.base)
        fh.attrs["vary"] = json.dumps(spec.vary)
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


def _train_shard(spec: StudySpec, index: int, count: int, say: Callable[[int, str], None],
                 training_progress: bool) -> None:
    """Train (or resume, or skip) the combinations i with i % count == index."""
    combos = combinations(spec.vary)
    for i, combo in enumerate(combos):
        if i % count != index:
            continue
        name = combination_name(combo)
        run_dir = spec.out / "runs" / name
        resume = Run.exists(run_dir)
        if resume:
            status = Run.open(run_dir).status
            if status in ("finished", "diverged"):
                say(i, f"{name}: {status}, skipped")
                continue
        say(i, f"{name}: {'resuming' if resume else 'training'}")
        try:
            train({} if resume else combination_config(spec.base, combo), run_dir, resume=resume,
                  progress=training_progress, local=True)
        except TrainingDiverged as exc:
            say(i, f"{name}: {exc}")


def _measure(spec: StudySpec, rows: list[dict[str, Any]], index: int, count: int,
             say: Callable[[int, str], None]) -> None:
    """Every finished run's measures into its row: this rank computes (or finds stored) its own runs'."""
    for i, row in enumerate(rows):
        if row["status"] == "finished" and i % count == index:
            say(i, f"{row['run']}: measures")
            run_measures(spec.out / "runs" / row["run"], spec.measures, spec.measure_samples)
    distributed.barrier()  # every rank has stored its runs' measures
    for row in rows:
        if row["status"] == "finished":
            row.update(run_measures(spec.out / "runs" / row["run"], spec.measures, spec.measure_samples,
                                    compute=False))


def run_study(spec: StudySpec, progress: Progress | None = None, training_progress: bool = False) -> StudyResult:
    """Train (or resume, or skip) every combination in this shard, measure the finished ones, then
    write the study table (with Kendall correlations and the batch-size interpolation when measured).
    ``progress(i, combinations, message)`` reports each combination; ``training_progress`` draws
    each training's progress bar."""
    spec.validate()
    index, count = spec.shard
    # under torchrun the ranks share this shard's combinations: rank r of W takes every W-th of them
    rank, size = distributed.rank(), distributed.world_size()
    index, count = index + count * rank, count * size
    total = len(combinations(spec.vary))

    def say(i: int, message: str) -> None:
        if progress is not None:
            progress(i, total, f"[{i + 1}/{total}] {message}")

    _train_shard(spec, index, count, say, training_progress)
    distributed.barrier()  # every rank's runs are finished before the table is read
    rows = study_table(spec.out, spec.vary)
    correlations = interpolation = None
    if spec.measures is not None:
        _measure(spec, rows, index, count, say)
        correlations = kendall_correlations(rows, list(spec.measures.measures), list(spec.vary))
        if all(r["status"] == "finished" for r in rows):
            interpolation = batch_interpolation(spec.out, spec.vary, rows)  # every rank takes part (grid split)
    path = spec.out / "study.h5"
    if distributed.is_main():
        path = write_study(spec, rows, correlations, interpolation)
    distributed.barrier()
    return StudyResult(path, dict(spec.vary), rows, spec.measures.measures if spec.measures else (), correlations,
                       interpolation)
