"""State files of resumable jobs (curve training, AutoNEB): HDF5 written atomically, stamped with the
job's format and options; a file for other options, or an unreadable one, is ignored (the job starts
afresh)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import h5py

from landscape.runs import atomic_h5


def save_state(path: Path, file_format: str, options: dict, fill: Callable[[h5py.File], None]) -> None:
    with atomic_h5(path, file_format) as fh:
        fh.attrs["options"] = json.dumps(options)
        fill(fh)


def load_state(path: Path, file_format: str, options: dict, read: Callable[[h5py.File], dict[str, Any]]
               ) -> dict[str, Any] | None:
    try:
        with h5py.File(path, "r") as fh:
            if fh.attrs.get("format") != file_format or json.loads(fh.attrs["options"]) != options:
                return None
            return read(fh)
    except (OSError, KeyError, ValueError):
        return None
