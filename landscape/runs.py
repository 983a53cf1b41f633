"""Run storage: a folder of HDF5 files, crash-safe and readable with plain h5py (no pickle).

::

    runs/NAME/
      run.h5                  attrs format="landscape.run", schema, created, versions;
                              attr "config" (JSON); group /metrics with one 1-D dataset per column
      checkpoints/00001000.h5 attrs format="landscape.checkpoint", schema, step, epoch;
                              params/<name>, buffers/<name>, optimizer/ (tree), rng/ (tree)
      analysis/<checkpoint>/<result>.h5
      figures/

Every file is written under a temporary name, fsync'ed and renamed (:mod:`landscape.atomic`), so
a kill at any moment leaves all earlier files intact. ``run.h5`` is small and rewritten whole.
"""

from __future__ import annotations

import contextlib
import json
import math
import platform
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np
import torch

from . import distributed
from .atomic import atomic_path, remove_stale_temporaries
from .errors import LandscapeError
from .h5tree import read_tree, write_tree

RUN_FORMAT = "landscape.run"
CHECKPOINT_FORMAT = "landscape.checkpoint"
SCHEMA = 1
RUN_FILE = "run.h5"
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_RE = re.compile(r"^(\d{8,})\.h5$")


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        own = version("landscape-toolkit")
    except PackageNotFoundError:
        own = "unknown"
    return {"landscape": own, "torch": torch.__version__, "numpy": np.__version__, "h5py": h5py.__version__,
            "python": platform.python_version()}


@contextlib.contextmanager
def atomic_h5(path: Path, file_format: str) -> Iterator[h5py.File]:
    """Write an HDF5 file atomically (temp name, fsync, rename), stamped with its format and schema."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as fh:
        fh.attrs["format"] = file_format
        fh.attrs["schema"] = SCHEMA
        yield fh


def open_h5(path: Path, expected_format: str, what: str) -> h5py.File:
    """Open an HDF5 file for reading, checking its format tag and schema; errors are one line."""
    if not path.exists():
        raise LandscapeError(f"{what} {path} not found")
    try:
        fh = h5py.File(path, "r")
    except OSError:
        raise LandscapeError(f"cannot read {path}: not an HDF5 file, or corrupt or truncated") from None
    fmt = fh.attrs.get("format")
    if isinstance(fmt, bytes):
        fmt = fmt.decode()
    if fmt != expected_format:
        fh.close()
        raise LandscapeError(f"{path} is not a {what} (format {fmt!r}, expected {expected_format!r})")
    schema = fh.attrs.get("schema")
    if schema != SCHEMA:
        fh.close()
        raise LandscapeError(f"{path} has schema {schema}; this version of landscape reads schema {SCHEMA}")
    return fh


@dataclass
class Checkpoint:
    """Everything needed to evaluate a model or resume training exactly."""

    step: int
    epoch: int
    params: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor] = field(default_factory=dict)
    optimizer: Any = None
    rng: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_model(cls, step: int, epoch: int, model: torch.nn.Module, optimizer=None, rng=None,
                   **extra: Any) -> "Checkpoint":
        return cls(step=step, epoch=epoch,
                   params={n: p.detach().cpu().clone() for n, p in model.named_parameters()},
                   buffers={n: b.detach().cpu().clone() for n, b in model.named_buffers()},
                   optimizer=optimizer.state_dict() if optimizer is not None else None,
                   rng=rng, extra=dict(extra))

    def load_into(self, model: torch.nn.Module) -> None:
        """Copy parameters and buffers into ``model``; names and shapes must match exactly."""
        own = dict(model.named_parameters())
        own_buffers = dict(model.named_buffers())
        for kind, stored, target in (("parameter", self.params, own), ("buffer", self.buffers, own_buffers)):
            missing = sorted(set(target) - set(stored))
            unexpected = sorted(set(stored) - set(target))
            if missing or unexpected:
                name = (missing or unexpected)[0]
                raise LandscapeError(f"checkpoint does not match the model: {kind} {name!r} is "
                                     f"{'missing from the checkpoint' if missing else 'not in the model'}")
            for name, tensor in stored.items():
                if tuple(tensor.shape) != tuple(target[name].shape):
                    raise LandscapeError(f"checkpoint does not match the model: {kind} {name!r} has shape "
                                         f"{tuple(tensor.shape)}, model has {tuple(target[name].shape)}")
        with torch.no_grad():
            for name, tensor in self.params.items():
                own[name].copy_(tensor)
            for name, tensor in self.buffers.items():
                own_buffers[name].copy_(tensor)


def _write_tensor_group(fh: h5py.File, group: str, tensors: dict[str, torch.Tensor]) -> None:
    grp = fh.create_group(group)
    grp.attrs["order"] = json.dumps(list(tensors))
    for name, tensor in tensors.items():
        write_tree(grp, name, tensor)


def _read_tensor_group(fh: h5py.File, group: str) -> dict[str, torch.Tensor]:
    grp = fh[group]
    return {name: read_tree(grp[name]) for name in json.loads(grp.attrs["order"])}


def write_checkpoint(path: Path, ckpt: Checkpoint) -> None:
    """Write ``ckpt`` atomically to ``path``."""
    with atomic_h5(path, CHECKPOINT_FORMAT) as fh:
        fh.attrs["step"] = int(ckpt.step)
        fh.attrs["epoch"] = int(ckpt.epoch)
        fh.attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        fh.attrs["extra"] = json.dumps(ckpt.extra)
        _write_tensor_group(fh, "params", ckpt.params)
        _write_tensor_group(fh, "buffers", ckpt.buffers)
        if ckpt.optimizer is not None:
            write_tree(fh, "optimizer", ckpt.optimizer)
        if ckpt.rng is not None:
            write_tree(fh, "rng", ckpt.rng)


def read_checkpoint(path: Path, *, weights_only: bool = False) -> Checkpoint:
    """Read a checkpoint file; ``weights_only`` skips optimizer and RNG state."""
    fh = open_h5(path, CHECKPOINT_FORMAT, "checkpoint")
    try:
        with fh:
            return Checkpoint(
                step=int(fh.attrs["step"]), epoch=int(fh.attrs["epoch"]),
                params=_read_tensor_group(fh, "params"), buffers=_read_tensor_group(fh, "buffers"),
                optimizer=read_tree(fh["optimizer"]) if ("optimizer" in fh and not weights_only) else None,
                rng=read_tree(fh["rng"]) if ("rng" in fh and not weights_only) else None,
                extra=json.loads(fh.attrs.get("extra", "{}")))
    except (KeyError, ValueError, OSError, TypeError) as exc:
        raise LandscapeError(f"cannot read {path}: file is corrupt or incomplete ({exc})") from None


class Run:
    """A run folder. Create with :meth:`create`, open with :meth:`open`."""

    STATUSES = ("running", "finished", "diverged")

    def __init__(self, path: str | Path, config: dict[str, Any], metrics: dict[str, list] | None = None,
                 created: str | None = None, status: str = "running", total_steps: int | None = None,
                 message: str = ""):
        self.path = Path(path)
        self.config = config
        self.metrics: dict[str, list] = metrics or {}
        self.created = created or time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.status = status            # running (or killed), finished, diverged
        self.total_steps = total_steps  # planned length of training
        self.message = message          # e.g. the divergence error
        self.writable = distributed.is_main()  # under torchrun only rank 0 writes the run folder

    # --- files -----------------------------------------------------------------------------------
    @property
    def run_file(self) -> Path:
        return self.path / RUN_FILE

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / CHECKPOINT_DIR

    @property
    def analysis_dir(self) -> Path:
        return self.path / "analysis"

    @property
    def figures_dir(self) -> Path:
        return self.path / "figures"

    @staticmethod
    def exists(path: str | Path) -> bool:
        return (Path(path) / RUN_FILE).exists()

    @classmethod
    def create(cls, path: str | Path, config: dict[str, Any], writable: bool | None = None) -> "Run":
        """Start a new run folder; refuses to touch an existing run. ``writable`` overrides the
        rank-0-only default under torchrun."""
        path = Path(path)
        if cls.exists(path):
            raise LandscapeError(f"run {path} already exists; use --resume to continue it or choose another --out")
        if path.exists() and not path.is_dir():
            raise LandscapeError(f"--out {path} exists and is not a folder")
        run = cls(path, config)
        if writable is not None:
            run.writable = writable
        run.write()
        return run

    @classmethod
    def open(cls, path: str | Path) -> "Run":
        path = Path(path)
        if not path.is_dir():
            raise LandscapeError(f"run folder {path} not found")
        fh = open_h5(path / RUN_FILE, RUN_FORMAT, "run file")
        try:
            with fh:
                config = json.loads(fh.attrs["config"])
                metrics = {}
                if "metrics" in fh:
                    for name in json.loads(fh["metrics"].attrs["columns"]):
                        metrics[name] = fh["metrics"][name][()].tolist()
                created = fh.attrs.get("created", "")
                status = fh.attrs.get("status", "running")
                total_steps = int(fh.attrs["total_steps"]) if "total_steps" in fh.attrs else None
                message = fh.attrs.get("message", "")
        except (KeyError, ValueError, OSError) as exc:
            raise LandscapeError(f"cannot read {path / RUN_FILE}: file is corrupt or incomplete ({exc})") from None
        if distributed.is_main():
            remove_stale_temporaries(path)
            remove_stale_temporaries(path / CHECKPOINT_DIR)
        return cls(path, config, metrics, created, status, total_steps, message)

    def write(self) -> None:
        """Rewrite ``run.h5`` atomically with the current config and metrics (rank 0 only)."""
        if not self.writable:
            return
        with atomic_h5(self.run_file, RUN_FORMAT) as fh:
            fh.attrs["created"] = self.created
            fh.attrs["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            fh.attrs["versions"] = json.dumps(versions())
            fh.attrs["config"] = json.dumps(self.config)
            fh.attrs["status"] = self.status
            fh.attrs["message"] = self.message
            if self.total_steps is not None:
                fh.attrs["total_steps"] = int(self.total_steps)
            grp = fh.create_group("metrics")
            grp.attrs["columns"] = json.dumps(list(self.metrics))
            for name, values in self.metrics.items():
                dtype = np.int64 if name in ("step", "epoch") else np.float64
                grp.create_dataset(name, data=np.asarray(values, dtype=dtype))

    @property
    def finished(self) -> bool:
        return self.status == "finished"

    # --- metrics ---------------------------------------------------------------------------------
    def append_metrics(self, row: dict[str, float]) -> None:
        """Add one row; columns missing from earlier rows are back-filled with NaN."""
        n = len(self.metrics.get("step", []))
        for key in row:
            if key not in self.metrics:
                self.metrics[key] = [math.nan] * n
        for key, column in self.metrics.items():
            column.append(row.get(key, math.nan))

    def truncate_metrics(self, max_step: int) -> None:
        """Drop rows recorded after ``max_step`` (used when resuming from a checkpoint)."""
        steps = self.metrics.get("step", [])
        keep = [i for i, s in enumerate(steps) if s <= max_step]
        for key in self.metrics:
            self.metrics[key] = [self.metrics[key][i] for i in keep]

    def last_metrics(self) -> dict[str, float]:
        if not self.metrics.get("step"):
            return {}
        return {k: v[-1] for k, v in self.metrics.items()}

    # --- checkpoints -----------------------------------------------------------------------------
    def checkpoint_steps(self) -> list[int]:
        if not self.checkpoint_dir.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.checkpoint_dir.iterdir()
                      if (m := CHECKPOINT_RE.match(p.name)))

    def checkpoint_path(self, step: int) -> Path:
        return self.checkpoint_dir / f"{int(step):08d}.h5"

    def resolve_checkpoint(self, ref: str | int = "last") -> int:
        """``last``, ``first`` or a step number -> an existing checkpoint step."""
        steps = self.checkpoint_steps()
        if not steps:
            raise LandscapeError(f"run {self.path} has no checkpoints")
        if isinstance(ref, str):
            ref = ref.strip().lower()
            if ref == "last":
                return steps[-1]
            if ref == "first":
                return steps[0]
            try:
                ref = int(ref)
            except ValueError:
                raise LandscapeError(f"--checkpoint must be last, first, all or a step number, got {ref!r}") from None
        if ref not in steps:
            raise LandscapeError(f"run {self.path} has no checkpoint at step {ref} "
                                 f"(available: {_summarize_steps(steps)})")
        return int(ref)

    def save_checkpoint(self, ckpt: Checkpoint) -> Path:
        path = self.checkpoint_path(ckpt.step)
        if self.writable:
            write_checkpoint(path, ckpt)
        return path

    def load_checkpoint(self, ref: str | int = "last", *, weights_only: bool = False) -> Checkpoint:
        return read_checkpoint(self.checkpoint_path(self.resolve_checkpoint(ref)), weights_only=weights_only)



def _summarize_steps(steps: list[int]) -> str:
    if len(steps) <= 6:
        return ", ".join(map(str, steps))
    return ", ".join(map(str, steps[:3])) + ", ..., " + ", ".join(map(str, steps[-2:]))
