"""The contract every analysis kind follows: a ``Spec``, a ``run`` function, a typed ``Result``.

::

    loaded = load_checkpoint_model("runs/demo", "last", samples=1000)
    result = run_analysis(loaded, CurvatureSpec(top_k=5, trace=True))   # -> CurvatureResult
    result.save(loaded.run);  CurvatureResult.load("runs/demo", result.checkpoint)

* A **Spec** is a dataclass; choices are :class:`Choice` enums (plain strings are accepted and
  converted), and ``validate()`` raises :class:`SpecError` naming the *field* (``top_k``), never a
  command-line flag: the CLI maps fields to its flags.
* ``run(loaded, spec, progress=None)`` computes the analysis of one loaded checkpoint. ``progress``
  is one callback type for every kind: ``progress(done, total, message)`` (``total`` None when unknown).
* A **Result** is a dataclass with ``checkpoint``; ``to_tree()`` is its stored form (an HDF5 tree in
  ``RUN/analysis/<checkpoint>/<name>.h5`` through :mod:`landscape.results`, the one result store),
  ``to_json()`` the ``--json`` object, ``summary()`` the text the CLI prints; ``save`` / ``load`` go
  through the store, which checks the file format in one place.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import typing
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional, TypeVar

import numpy as np
import torch

from landscape.errors import LandscapeError
from landscape.results import load_result, result_path, save_result, update_result
from landscape.runs import Run

Progress = Callable[[int, Optional[int], str], None]
"""``progress(done, total, message)``: ``done`` of ``total`` units (``total`` None when unknown)."""

C = TypeVar("C", bound="Choice")
R = TypeVar("R", bound="Result")


class SpecError(LandscapeError):
    """An invalid field of an analysis spec: ``field`` is the spec's attribute; ``detail`` the rest of the
    message, where ``{name}`` stands for another field (rendered by :meth:`render`: field names here,
    flags in the CLI)."""

    def __init__(self, spec: str, field: str, detail: str):
        self.spec, self.field, self.detail = spec, field, detail
        super().__init__(self.render(lambda name: name, f"{spec}.{field}"))

    def render(self, name_of: Callable[[str], str], subject: str | None = None) -> str:
        """The message with fields named by ``name_of`` (e.g. a field's command-line flag)."""
        names = {key: name_of(key) for key in _placeholders(self.detail)}
        return f"{subject or name_of(self.field)} {self.detail.format(**names)}"


def _placeholders(text: str) -> list[str]:
    import string

    return [name for _, name, _, _ in string.Formatter().parse(text) if name]


class Choice(str, enum.Enum):
    """A closed set of names (a ``str``, so it compares, hashes and serializes as its value)."""

    def __str__(self) -> str:
        return self.value

    __hash__ = str.__hash__  # a choice and its value are the same dict key

    @classmethod
    def names(cls) -> list[str]:
        return [c.value for c in cls]

    @classmethod
    def parse(cls: type[C], value: Any, spec: str, field: str) -> C:
        try:
            return cls(value)
        except ValueError:
            raise SpecError(spec, field, f"must be one of {', '.join(cls.names())}, got {quote(value)}") from None


def quote(value: Any) -> str:
    """``repr(value)`` safe inside a :class:`SpecError` detail (braces escaped)."""
    return repr(value).replace("{", "{{").replace("}", "}}")


def parse_choices(spec: Any) -> None:
    """Convert every field of ``spec`` annotated with a :class:`Choice` type from str (in place)."""
    hints = typing.get_type_hints(type(spec))
    for f in dataclasses.fields(spec):
        kind = _choice_type(hints[f.name])
        value = getattr(spec, f.name)
        if kind is not None and value is not None and not isinstance(value, kind):
            object.__setattr__(spec, f.name, kind.parse(value, type(spec).__name__, f.name))


def require(condition: bool, spec: Any, field: str, detail: str) -> None:
    """Raise :class:`SpecError` for ``spec.field`` unless ``condition``."""
    if not condition:
        raise SpecError(type(spec).__name__, field, detail)


def _choice_type(hint: Any) -> type[Choice] | None:
    for t in (hint, *typing.get_args(hint)):
        if isinstance(t, type) and issubclass(t, Choice):
            return t
    return None


def _dataclass_type(hint: Any) -> type | None:
    for t in (hint, *typing.get_args(hint)):
        if dataclasses.is_dataclass(t) and isinstance(t, type):
            return t
    return None


def _mapped_dataclass(hint: Any) -> type | None:
    """X of a ``dict[str, X]`` annotation (optionally ``| None``) when X is a dataclass."""
    for t in (hint, *typing.get_args(hint)):
        if typing.get_origin(t) is dict:
            value_type = typing.get_args(t)[1]
            if dataclasses.is_dataclass(value_type):
                return value_type
    return None


def to_tree(obj: Any) -> Any:
    """A dataclass (recursively) as a dict of plain values; fields that are None are left out."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        skip = ("checkpoint",) if isinstance(obj, Result) else ()  # a result's checkpoint is a file attribute
        out = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if f.name not in skip and f.metadata.get("stored", True) and value is not None:
                out[f.metadata.get("key", f.name)] = to_tree(value)
        return out
    if isinstance(obj, Choice):
        return obj.value
    if isinstance(obj, dict):
        return {k: to_tree(v) for k, v in obj.items()}
    return obj


def from_tree(cls: type, tree: dict[str, Any], **extra: Any) -> Any:
    """Rebuild dataclass ``cls`` from :func:`to_tree`'s dict (nested dataclasses and choices too)."""
    hints = typing.get_type_hints(cls)
    values = dict(extra)
    for f in dataclasses.fields(cls):
        key = f.metadata.get("key", f.name)
        if key not in tree or f.name in values:
            continue
        value = tree[key]
        nested, choice = _dataclass_type(hints[f.name]), _choice_type(hints[f.name])
        mapped = _mapped_dataclass(hints[f.name])
        if nested is not None and isinstance(value, dict):
            value = from_tree(nested, value)
        elif mapped is not None and isinstance(value, dict):
            value = {k: from_tree(mapped, v) for k, v in value.items()}
        elif choice is not None:
            value = choice(value)
        values[f.name] = value
    return cls(**values)


def jsonable(value: Any) -> Any:
    """Plain JSON types: arrays and tensors as lists, non-finite floats as None."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.ndarray, torch.Tensor, np.generic)):
        return jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def open_run(run: Run | str | Path) -> Run:
    return run if isinstance(run, Run) else Run.open(run)


def attrs_field() -> Any:
    """The ``attrs`` field every result dataclass ends with (stored as the file's options, not in the tree)."""
    return dataclasses.field(default_factory=dict, repr=False, metadata={"stored": False})


class Result:
    """Base of the typed results (each a dataclass with a ``checkpoint`` field).

    ``name`` is the stored file's name under ``analysis/<checkpoint>/``; ``merge`` results (curvature,
    sharpness) keep the quantities of earlier invocations that this one did not recompute.
    """

    kind: ClassVar[str]
    merge: ClassVar[bool] = False
    stored_by_run: ClassVar[bool] = False  # True: the run function stores it itself (resumable computations)
    checkpoint: int
    attrs: dict[str, Any]  # how it was computed (samples, seed, ...): the stored file's options

    @property
    def name(self) -> str:
        return self.kind

    def to_tree(self) -> dict[str, Any]:
        """The stored form: fields as a tree of plain values (None fields and ``checkpoint`` left out)."""
        return to_tree(self)

    def to_json(self) -> dict[str, Any]:
        return jsonable({"checkpoint": self.checkpoint, **self.to_tree()})

    def summary(self) -> str:
        return f"checkpoint {self.checkpoint}: {self.kind}"

    def save(self, run: Run | str | Path) -> Path:
        """Store under ``RUN/analysis/<checkpoint>/<name>.h5`` (atomically); returns the path."""
        store = update_result if self.merge else save_result
        return store(open_run(run), self.checkpoint, self.name, self.to_tree(), **self.attrs)

    @classmethod
    def from_stored(cls: type[R], tree: dict[str, Any], checkpoint: int, attrs: dict[str, Any]) -> R:
        return from_tree(cls, tree, checkpoint=checkpoint, attrs=attrs)

    @classmethod
    def load(cls: type[R], run: Run | str | Path, checkpoint: str | int = "last", name: str | None = None) -> R:
        """The stored result of ``checkpoint`` (``last``, ``first`` or a step)."""
        run = open_run(run)
        step = run.resolve_checkpoint(checkpoint)
        path = result_path(run, step, name or cls.kind)
        if not path.exists():
            raise LandscapeError(f"no {name or cls.kind} result for checkpoint {step} of {run.path}")
        tree, attrs = load_result(path)
        return cls.from_stored(tree, step, attrs)
