"""An objective's loss and accuracy at many points w + sum_i a_i d_i at once.

A chunk of K grid points is evaluated in one batched forward pass: the K parameter sets are
stacked and the objective's model runs under ``torch.func.vmap`` over them, on data that stays on
the device. When the first parameterised layer the input meets is a Linear or Conv layer fed by the
input through parameter-free modules only, its pre-activation is affine in the coordinates,

    W(a) u + b(a) = (W u + b) + sum_i a_i (D_i u + e_i),

so ``W u + b`` and every ``D_i u + e_i`` are computed once per data batch and each grid point pays
an elementwise combination instead of that layer (Li et al.'s per-point method pays the whole
network at every point).

The model, its constants and buffers, the loss and its per-sample form come from an
:class:`~landscape.objective.Objective` (a private copy in eval mode). BatchNorm: ``bn="eval"`` uses
the stored running statistics (interpolated along the directions when those carry buffer
differences, e.g. the direction between two checkpoints); ``bn="recompute"`` re-estimates them at
every point from training batches (:func:`~landscape.objective.recompute_batchnorm`), then
evaluates; that mode runs point by point.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from .errors import LandscapeError
from .models import has_batchnorm
from .objective import Batches, Objective, recompute_batchnorm

AFFINE_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)


class _Injected(nn.Module):
    """Stands in for the first layer: returns the pre-activation set before the call."""

    def __init__(self):
        super().__init__()
        self.value: torch.Tensor | None = None

    def forward(self, *args, **kwargs):
        return self.value


class _Stop(Exception):
    pass


def first_affine_layer(model: nn.Module, x: torch.Tensor) -> str | None:
    """Name of the first parameterised module the input meets if it is Linear/Conv, called once,
    and every parameter of the model belongs to a leaf module (so nothing parameterised ran before it)."""
    for module in model.modules():
        own = list(module.parameters(recurse=False))
        if own and list(module.children()):
            return None
    order: list[str] = []
    handles = []
    for name, module in model.named_modules():
        if list(module.parameters(recurse=False)):
            handles.append(module.register_forward_pre_hook(lambda m, a, name=name: order.append(name)))
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for h in handles:
            h.remove()
    if not order or order.count(order[0]) != 1:
        return None
    first = model.get_submodule(order[0])
    if not isinstance(first, AFFINE_LAYERS) or not first.weight.requires_grad:
        return None
    if first.bias is not None and not first.bias.requires_grad:
        return None
    return order[0]


def _layer_input(model: nn.Module, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    captured = []

    def hook(module, args):
        captured.append(args[0])
        raise _Stop

    handle = layer.register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            model(x)
    except _Stop:
        pass
    finally:
        handle.remove()
    return captured[0]


def _apply_affine(layer: nn.Module, u: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    if isinstance(layer, nn.Linear):
        return F.linear(u, weight, bias)
    return layer._conv_forward(u, weight, bias)


@dataclass
class PointSums:
    """Sums over the samples of one data set for K points: loss sum (K,) and correct count (K,) or None."""
    loss: torch.Tensor
    correct: torch.Tensor | None
    samples: int


class ObjectiveGrid:
    """Loss sums (and correct counts for cross-entropy) of ``objective`` at center + coords @ directions.

    Args:
        objective: the function evaluated; its batches are the default data.
        directions: flat vectors in the objective's parameter layout.
        center: flat vector w (default: the objective's parameters).
        buffer_directions: optional dicts of float-buffer differences moved along with the parameters
            (one per direction).
        bn: ``eval`` (stored statistics) or ``recompute`` (re-estimated at every point; models with BatchNorm).
        affine_first_layer: use the affine first layer (module docstring) where the model has one.
        sample_input: a few inputs to find the first layer on (default: the objective's first batch).
        bf16: forward passes under bfloat16 autocast; losses summed in float64.
    """

    def __init__(self, objective: Objective, directions: Sequence[torch.Tensor], center: torch.Tensor | None = None,
                 buffer_directions: Sequence[dict[str, torch.Tensor]] | None = None, *, bn: str = "eval",
                 affine_first_layer: bool = True, sample_input: torch.Tensor | None = None, bf16: bool = False):
        if bn not in ("eval", "recompute"):
            raise LandscapeError(f"BatchNorm mode must be 'eval' or 'recompute', got {bn!r}")
        self.objective = objective
        self.model = objective.model
        layout = objective.layout
        self.center = layout.unflatten(center.detach()) if center is not None else dict(objective.theta)
        self.directions = [{n: t.detach().to(self.center[n]) for n, t in layout.unflatten(d).items()}
                           for d in directions]
        buffer_names = [n for n, _ in self.model.named_buffers()]
        self.buffers = {n: objective.frozen[n] for n in buffer_names}
        self.constants = {n: t for n, t in objective.frozen.items() if n not in self.buffers}
        self.buffer_directions = None
        if buffer_directions and any(buffer_directions):
            self.buffer_directions = [{n: bd[n].to(self.buffers[n]) for n in bd} for bd in buffer_directions]
        self.bn = bn if has_batchnorm(self.model) else "eval"
        self.bf16 = bf16
        if sample_input is None and objective.batches:
            sample_input = objective.batches[0][0][:2]
        self.first: str | None = None
        if affine_first_layer and sample_input is not None:
            self.first = first_affine_layer(self.model, sample_input)
            if self.first is not None and not all(n in self.center for n, _ in self._first_params()):
                self.first = None  # its parameters are constants of the objective
        if self.first is not None:
            self._layer = self.model.get_submodule(self.first)
            self._injected = _Injected()
            self._vmapped_names = [n for n in self.center if not n.startswith(self.first + ".")]
        else:
            self._vmapped_names = list(self.center)
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self._cached_bytes = 0
        self.cache_bytes = 256 * 2**20

    def _first_params(self) -> list[tuple[str, torch.Tensor]]:
        return list(self.model.get_submodule(self.first).named_parameters(prefix=self.first))

    # --- parameter sets ----------------------------------------------------------------------------
    def _stack(self, base: dict, dirs: list[dict], coords: torch.Tensor, names) -> dict[str, torch.Tensor]:
        out = {}
        for n in names:
            t = base[n].unsqueeze(0).expand(coords.shape[0], *base[n].shape)
            for i, d in enumerate(dirs):
                if n in d:
                    t = t + coords[:, i].to(t).view(-1, *([1] * base[n].ndim)) * d[n]
            out[n] = t
        return out

    def _point_sets(self, coords: torch.Tensor) -> tuple[dict, dict | None]:
        """The K stacked parameter sets (without the affine first layer's) and buffer sets (or None)."""
        params = self._stack(self.center, self.directions, coords, self._vmapped_names)
        buffers = (self._stack(self.buffers, self.buffer_directions, coords, self.buffers)
                   if self.buffer_directions else None)
        return params, buffers

    # --- first-layer structure ----------------------------------------------------------------------
    def _first_layer_terms(self, key: tuple, x: torch.Tensor) -> torch.Tensor:
        """(1 + m, *pre-activation shape): W u + b and the m terms D_i u + e_i, stacked."""
        if key in self._cache:
            return self._cache[key][1]
        u = _layer_input(self.model, self._layer, x)
        w, b = self.first + ".weight", self.first + ".bias"
        terms = torch.stack([_apply_affine(self._layer, u, self.center[w], self.center.get(b))]
                            + [_apply_affine(self._layer, u, d[w], d.get(b)) for d in self.directions])
        size = terms.numel() * terms.element_size()
        if self._cached_bytes + size <= self.cache_bytes:  # reused by every later chunk
            self._cache[key] = (x, terms)  # holding x keeps its address from being reused by other data
            self._cached_bytes += size
        return terms

    # --- evaluation -------------------------------------------------------------------------------
    def outputs(self, coords: torch.Tensor, inputs: Iterable[torch.Tensor], tag=0) -> Iterator[torch.Tensor]:
        """Model outputs (K, B, ...) at the K points ``coords`` (K, m) for every input batch (stored
        statistics: ``bn="eval"``); ``tag`` distinguishes data sets in the first-layer cache."""
        coords = coords.reshape(coords.shape[0], -1)
        params, buffers = self._point_sets(coords)
        for j, x in enumerate(inputs):
            key = (tag, j, x.data_ptr(), tuple(x.shape), x.dtype)
            if self.bf16:
                with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):
                    yield self._forward(coords, params, buffers, x, key).float()
            else:
                yield self._forward(coords, params, buffers, x, key)

    def _call(self, params: dict, buffers: dict | None, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.model, {**self.constants, **(self.buffers if buffers is None else buffers),
                                            **params}, (x,))

    def _forward(self, coords: torch.Tensor, params: dict, buffers: dict | None, x: torch.Tensor,
                 key: tuple) -> torch.Tensor:
        single = coords.shape[0] == 1  # one point: a plain forward pass (vmap only adds overhead)

        def batched(f, *args):
            return f(*(a if a is None else {n: t[0] for n, t in a.items()} if isinstance(a, dict) else a[0]
                       for a in args)).unsqueeze(0) if single else vmap(f)(*args)

        if self.first is None:
            if buffers is None:
                return batched(lambda p: self._call(p, None, x), params)
            return batched(lambda p, b: self._call(p, b, x), params, buffers)
        terms = self._first_layer_terms(key, x)
        weights = torch.cat([torch.ones_like(coords[:, :1]), coords], dim=1).to(terms)  # (K, 1 + m)
        pre = (weights @ terms.reshape(terms.shape[0], -1)).reshape(coords.shape[0], *terms.shape[1:])
        parent_name, _, child = self.first.rpartition(".")
        parent = self.model.get_submodule(parent_name) if parent_name else self.model
        injected = self._injected
        setattr(parent, child, injected)
        try:
            def f(p, b, z):
                injected.value = z
                return self._call(p, b, x)
            if buffers is None:
                return batched(lambda p, z: f(p, None, z), params, pre)
            return batched(f, params, buffers, pre)
        finally:
            setattr(parent, child, self._layer)
            injected.value = None

    @torch.no_grad()
    def sums(self, coords: torch.Tensor, batches: Batches | None = None, *, tag=0,
             train_batches: Batches | None = None) -> PointSums:
        """Loss sums and correct counts over ``batches`` (default: the objective's) at the K points
        ``coords`` (K, m); ``train_batches`` feed the BatchNorm re-estimation of ``bn="recompute"``."""
        batches = self.objective.batches if batches is None else batches
        coords = coords.reshape(coords.shape[0], -1)
        if self.bn == "recompute":
            return self._sums_recompute(coords, batches, train_batches)
        k = coords.shape[0]
        cross_entropy = self.objective.loss_name == "cross_entropy"
        loss = torch.zeros(k, dtype=torch.float64, device=self.objective.device)
        correct = torch.zeros(k, dtype=torch.int64, device=self.objective.device) if cross_entropy else None
        samples = 0
        for out, (x, y) in zip(self.outputs(coords, (x for x, _ in batches), tag), batches):
            loss += self.objective.stacked_per_sample(out, y).double().sum(dim=1)
            if cross_entropy:
                correct += (out.argmax(dim=-1) == y.unsqueeze(0)).sum(dim=1)
            samples += x.shape[0]
        return PointSums(loss, correct, samples)

    def recomputed(self, coords: torch.Tensor, train_batches: Batches | None) -> Iterator[nn.Module]:
        """For each point: a model (one copy, reused) holding its parameters with BatchNorm statistics
        re-estimated on ``train_batches``, in eval mode."""
        if not train_batches:
            raise LandscapeError("recomputing BatchNorm statistics needs training data")
        model = copy.deepcopy(self.model)
        names = list(self.center)
        for c in coords.reshape(coords.shape[0], -1):
            params = self._stack(self.center, self.directions, c[None], names)
            with torch.no_grad():
                for n, p in model.named_parameters():
                    if n in params:
                        p.copy_(params[n][0])
                recompute_batchnorm(model, train_batches)
            yield model

    def _sums_recompute(self, coords: torch.Tensor, batches: Batches, train_batches: Batches | None) -> PointSums:
        cross_entropy = self.objective.loss_name == "cross_entropy"
        losses, corrects, samples = [], [], 0
        for model in self.recomputed(coords, train_batches):
            total, correct, samples = 0.0, 0, 0
            with torch.no_grad():
                for x, y in batches:
                    out = model(x)
                    total += float(self.objective.batch_per_sample(out, y).double().sum())
                    if cross_entropy:
                        correct += int((out.argmax(dim=-1) == y).sum())
                    samples += x.shape[0]
            losses.append(total)
            corrects.append(correct)
        device = self.objective.device
        return PointSums(torch.tensor(losses, dtype=torch.float64, device=device),
                         torch.tensor(corrects, device=device) if cross_entropy else None, samples)
