"""Resolve user code given as ``package.module:function`` or ``path/to/file.py:function``.

This executes the user's own code (as ``python file.py`` would); it never unpickles anything.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Callable, Iterator

from .errors import LandscapeError


@contextlib.contextmanager
def _no_bytecode() -> Iterator[None]:
    """Import the user's code without writing ``__pycache__/`` beside it (or beside what it imports):
    reading a model or data file must leave the user's folders as they were."""
    before = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    try:
        yield
    finally:
        sys.dont_write_bytecode = before


def is_import_spec(name: str) -> bool:
    """True for ``module:function`` and ``file.py:function`` strings."""
    return isinstance(name, str) and ":" in name and not name.startswith(":") and not name.endswith(":")


def resolve_callable(spec: str, what: str = "function") -> Callable:
    """Import and return the callable named by ``spec``."""
    module_part, _, attr = spec.rpartition(":")
    if not module_part or not attr:
        raise LandscapeError(f"{what} {spec!r} must look like module:function or path/to/file.py:function")
    if module_part.endswith(".py") or "/" in module_part or "\\" in module_part:
        path = Path(module_part).expanduser()
        if not path.is_file():
            raise LandscapeError(f"{what} file {module_part!r} not found")
        digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
        mod_name = f"_landscape_user_{path.stem}_{digest}"
        module = sys.modules.get(mod_name)
        if module is None:
            loader_spec = importlib.util.spec_from_file_location(mod_name, path)
            if loader_spec is None or loader_spec.loader is None:
                raise LandscapeError(f"cannot import {what} file {module_part!r}")
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[mod_name] = module
            try:
                with _no_bytecode():
                    loader_spec.loader.exec_module(module)
            except Exception as exc:  # user code: report, do not crash
                del sys.modules[mod_name]
                raise LandscapeError(f"importing {module_part!r} failed: {type(exc).__name__}: {exc}") from exc
    else:
        try:
            with _no_bytecode():
                module = importlib.import_module(module_part)
        except ImportError as exc:
            raise LandscapeError(f"cannot import module {module_part!r} for {what} {spec!r}: {exc}") from exc
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        raise LandscapeError(f"{what} {spec!r}: {module_part!r} has no callable named {attr!r}")
    return fn
