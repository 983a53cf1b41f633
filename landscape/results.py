"""The result store: ``RUN/analysis/<checkpoint>/<name>.h5``, one HDF5 file per analysis result.

Each file has attrs ``format="landscape.result"``, ``schema``, ``name``, ``checkpoint``, ``created``
and ``options`` (JSON), and the result tree under ``/result`` (:mod:`landscape.h5tree`). Files are
written atomically; reading checks the format tag and schema (:func:`landscape.runs.open_h5`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from .errors import LandscapeError
from .h5tree import read_tree, write_tree
from .runs import Run, atomic_h5, open_h5

RESULT_FORMAT = "landscape.result"


def result_path(run: Run, step: int, name: str) -> Path:
    """``analysis/<checkpoint>/<name>.h5`` of a run."""
    return run.analysis_dir / f"{int(step):08d}" / f"{name}.h5"


def save_result(run: Run, step: int, name: str, result: dict[str, Any], **attrs: Any) -> Path:
    """Store an analysis result (a tree of arrays and numbers) atomically; returns its path."""
    path = result_path(run, step, name)
    with atomic_h5(path, RESULT_FORMAT) as fh:
        fh.attrs["name"] = name
        fh.attrs["checkpoint"] = int(step)
        fh.attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        fh.attrs["options"] = json.dumps(attrs)
        write_tree(fh, "result", result)
    return path


def update_result(run: Run, step: int, name: str, updates: dict[str, Any], **attrs: Any) -> Path:
    """Merge ``updates`` into the stored result ``name`` of checkpoint ``step`` (created if absent).

    Quantities computed by earlier invocations (say, eigenvalues) survive a later one that adds
    others (say, the trace); a quantity computed again replaces the old value.
    """
    path = result_path(run, step, name)
    merged: dict[str, Any] = {}
    if path.exists():
        try:
            merged, _ = load_result(path)
        except LandscapeError:
            merged = {}  # an unreadable old result is replaced, never half-merged
    merged.update(updates)
    return save_result(run, step, name, merged, **attrs)


def load_result(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(result tree, options) of a stored analysis result."""
    fh = open_h5(path, RESULT_FORMAT, "result file")
    try:
        with fh:
            return read_tree(fh["result"]), json.loads(fh.attrs.get("options", "{}"))
    except (KeyError, ValueError, OSError) as exc:
        raise LandscapeError(f"cannot read {path}: file is corrupt or incomplete ({exc})") from None


def list_results(run: Run) -> list[Path]:
    if not run.analysis_dir.is_dir():
        return []
    return sorted(run.analysis_dir.glob("*/*.h5"))
