"""Flat parameter vectors: the layout (names, shapes, offsets) that maps a dict of tensors to one vector.

Curvature operators act on flat vectors of dimension n = sum of the selected parameters' sizes, in
the model's ``named_parameters()`` order. The functions at the end view a list of parameter tensors as one
vector, for optimizers whose updates use inner products over all parameters (conjugate gradient, BFGS,
Barzilai-Borwein, the parabola step, line searches).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import torch

from .errors import LandscapeError


@dataclass(frozen=True)
class ParamLayout:
    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, torch.Tensor]) -> "ParamLayout":
        return cls(tuple(tensors), tuple(tuple(t.shape) for t in tensors.values()))

    @property
    def numels(self) -> tuple[int, ...]:
        return tuple(math.prod(s) for s in self.shapes)

    @property
    def offsets(self) -> tuple[int, ...]:
        out, total = [], 0
        for n in self.numels:
            out.append(total)
            total += n
        return tuple(out)

    @property
    def dim(self) -> int:
        return sum(self.numels)

    def slice(self, name: str) -> slice:
        i = self.names.index(name)
        return slice(self.offsets[i], self.offsets[i] + self.numels[i])

    def flatten(self, tensors: Mapping[str, torch.Tensor] | Sequence[torch.Tensor]) -> torch.Tensor:
        """Concatenate tensors (dict in layout order, or a list) into one vector (or (K, n) if batched)."""
        items = [tensors[n] for n in self.names] if isinstance(tensors, Mapping) else list(tensors)
        lead = items[0].shape[: items[0].ndim - len(self.shapes[0])] if items else ()
        return torch.cat([t.reshape(*lead, -1) for t in items], dim=-1)

    def unflatten(self, vec: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split a vector (n,) or a batch (K, n) into parameter-shaped views."""
        lead = vec.shape[:-1]
        if vec.shape[-1] != self.dim:
            raise LandscapeError(f"vector has {vec.shape[-1]} entries, the parameters have {self.dim}")
        return {name: vec[..., off:off + n].reshape(*lead, *shape)
                for name, shape, off, n in zip(self.names, self.shapes, self.offsets, self.numels)}

    def subset(self, names: Iterable[str]) -> "ParamLayout":
        wanted = list(names)
        missing = [n for n in wanted if n not in self.names]
        if missing:
            raise LandscapeError(f"unknown parameter {missing[0]!r}")
        keep = [n for n in self.names if n in set(wanted)]
        return ParamLayout(tuple(keep), tuple(self.shapes[self.names.index(n)] for n in keep))

    def groups(self) -> dict[str, list[str]]:
        """Parameters grouped by the module that owns them (``layer1.0.conv1.weight`` -> ``layer1.0.conv1``)."""
        out: dict[str, list[str]] = {}
        for name in self.names:
            out.setdefault(name.rpartition(".")[0] or name, []).append(name)
        return out


def flatten(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate ``tensors`` into one 1-D vector (a copy)."""
    return torch.cat([t.reshape(-1) for t in tensors])


def flat_grad(params: Sequence[torch.Tensor]) -> torch.Tensor:
    """The gradients of ``params`` as one vector; parameters without a gradient contribute zeros."""
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])


def assign_(params: Sequence[torch.Tensor], vector: torch.Tensor) -> None:
    """Copy the consecutive pieces of ``vector`` into ``params`` (in place, no autograd)."""
    offset = 0
    with torch.no_grad():
        for p in params:
            n = p.numel()
            p.copy_(vector[offset:offset + n].view_as(p))
            offset += n


def add_(params: Sequence[torch.Tensor], vector: torch.Tensor, alpha: float = 1.0) -> None:
    """``params += alpha * vector`` piece by piece (in place, no autograd)."""
    offset = 0
    with torch.no_grad():
        for p in params:
            n = p.numel()
            p.add_(vector[offset:offset + n].view_as(p), alpha=alpha)
            offset += n

