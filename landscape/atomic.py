"""Crash-safe file writes: write to a temporary name in the same folder, flush, fsync, rename.

A kill at any moment leaves either the old file or the new one, never a partial file, because
``os.replace`` is atomic on POSIX within one file system. The folder is fsync'ed after the rename so
the new name survives a power loss too.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

TMP_PREFIX = ".tmp-"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_path(path: str | os.PathLike) -> None:
    """fsync a file or a directory by path (directories: best effort, not all systems allow it)."""
    flags = os.O_RDONLY
    if hasattr(os, "O_DIRECTORY") and Path(path).is_dir():
        flags |= os.O_DIRECTORY
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on clean exit it is fsync'ed and renamed onto ``path``.

    On an exception the temporary file is removed and ``path`` is left untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX + target.name + ".", dir=target.parent)
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp creates 0600 files; results should follow the umask
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        fsync_path(tmp_path)
        os.replace(tmp_path, target)
        fsync_path(target.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def remove_stale_temporaries(folder: str | os.PathLike) -> None:
    """Delete temporary files left by a killed writer (they are never valid results)."""
    folder = Path(folder)
    if folder.is_dir():
        for leftover in folder.glob(TMP_PREFIX + "*"):
            with contextlib.suppress(OSError):
                leftover.unlink()
