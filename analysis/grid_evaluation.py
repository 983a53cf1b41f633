"""Loss and accuracy at many points w + sum_i a_i d_i at once.

A chunk of K grid points is evaluated in one batched forward pass: the K parameter sets are
stacked and the model runs under ``torch.func.vmap`` over them, on data that stays on the device.
When the first parameterised layer the input meets is a Linear or Conv layer fed by the input
through parameter-free modules only, its pre-activation is affine in the coordinates,

    W(a) u + b(a) = (W u + b) + sum_i a_i (D_i u + e_i),

so ``W u + b`` and every ``D_i u + e_i`` are computed once per data batch and each grid point pays
an elementwise combination instead of that layer (Li et al.'s per-point method pays the whole
network at every point).

BatchNorm: ``bn="eval"`` uses the stored running statistics (interpolated along the directions
when those carry buffer differences, e.g. the direction between two checkpoints); ``bn="recompute"``
re-estimates them at every point from the training data (train-mode passes with a cumulative
average, as ``torch.optim.swa_utils.update_bn``), then evaluates; that mode runs point by point.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from landscape.errors import LandscapeError
from landscape.losses import per_sample
from landscape.models import has_batchnorm

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


def _first_affine_layer(model: nn.Module, x: torch.Tensor) -> str | None:
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


class GridEvaluator:
    """Evaluate loss (and accuracy for cross-entropy) of ``model`` at w + coords @ directions.

    ``center``: parameter dict w (trainable parameters, named_parameters order); ``directions``:
    list of dicts like ``center``; ``buffer_directions``: optional list of dicts of float-buffer
    differences moved along with the parameters (same length as ``directions``).
    """

    def __init__(self, model: nn.Module, loss: str, center: dict[str, torch.Tensor],
                 directions: list[dict[str, torch.Tensor]], buffer_directions: list[dict[str, torch.Tensor]] | None = None,
                 bn: str = "eval", affine_first_layer: bool = True, sample_input: torch.Tensor | None = None,
                 bf16: bool = False):
        if bn not in ("eval", "recompute"):
            raise LandscapeError(f"BatchNorm mode must be 'eval' or 'recompute', got {bn!r}")
        self.model = copy.deepcopy(model).eval()
        self.loss = loss
        self.center = {n: t.detach() for n, t in center.items()}
        self.directions = [{n: d[n].detach().to(self.center[n]) for n in self.center} for d in directions]
        self.buffers = {n: b.detach() for n, b in self.model.named_buffers()}
        self.buffer_directions = None
        if buffer_directions and any(buffer_directions):
            self.buffer_directions = [{n: bd[n].to(self.buffers[n]) for n in bd} for bd in buffer_directions]
        self.bn = bn if has_batchnorm(self.model) else "eval"
        self.bf16 = bf16  # forward passes under bfloat16 autocast; losses summed in float64
        self.first: str | None = None
        if affine_first_layer and sample_input is not None:
            self.first = _first_affine_layer(self.model, sample_input)
        if self.first is not None:
            self._layer = self.model.get_submodule(self.first)
            self._injected = _Injected()
            self._vmapped_names = [n for n in self.center if not n.startswith(self.first + ".")]
        else:
            self._vmapped_names = list(self.center)
        self._cache: dict[tuple, tuple] = {}
        self._cached_bytes = 0
        self.cache_bytes = 256 * 2**20

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
            return self._cache[key]
        u = _layer_input(self.model, self._layer, x)
        w, b = self.first + ".weight", self.first + ".bias"
        terms = torch.stack([_apply_affine(self._layer, u, self.center[w], self.center.get(b))]
                            + [_apply_affine(self._layer, u, d[w], d.get(b)) for d in self.directions])
        size = terms.numel() * terms.element_size()
        if self._cached_bytes + size <= self.cache_bytes:  # reused by every later chunk
            self._cache[key] = terms
            self._cached_bytes += size
        return terms

    # --- evaluation -------------------------------------------------------------------------------
    def _outputs(self, coords: torch.Tensor, params: dict, buffers: dict | None, x: torch.Tensor,
                 key: tuple) -> torch.Tensor:
        """Model outputs (K, B, ...) at the K points (stacked ``params``/``buffers``) for the data batch x."""
        if self.bf16:
            with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):
                return self._forward(coords, params, buffers, x, key).float()
        return self._forward(coords, params, buffers, x, key)

    def _forward(self, coords: torch.Tensor, params: dict, buffers: dict | None, x: torch.Tensor,
                 key: tuple) -> torch.Tensor:
        single = coords.shape[0] == 1  # one point: a plain forward pass (vmap only adds overhead)

        def batched(f, *args):
            return f(*(a if a is None else {n: t[0] for n, t in a.items()} if isinstance(a, dict) else a[0]
                       for a in args)).unsqueeze(0) if single else vmap(f)(*args)

        if self.first is None:
            if buffers is None:
                return batched(lambda p: functional_call(self.model, {**self.buffers, **p}, (x,)), params)
            return batched(lambda p, b: functional_call(self.model, {**b, **p}, (x,)), params, buffers)
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
                return functional_call(self.model, {**(self.buffers if b is None else b), **p}, (x,))
            if buffers is None:
                return batched(lambda p, z: f(p, None, z), params, pre)
            return batched(f, params, buffers, pre)
        finally:
            setattr(parent, child, self._layer)
            injected.value = None

    @torch.no_grad()
    def metrics(self, coords: torch.Tensor, batches: dict[str, list[tuple[torch.Tensor, torch.Tensor]]],
                train_batches: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> dict[str, np.ndarray]:
        """Mean loss ``<split>_loss`` (and accuracy ``<split>_acc`` for cross-entropy) at the K points for
        every data set of ``batches`` (split name -> its batches), as float64 arrays of length K."""
        out = {}
        for tag, (split, split_batches) in enumerate(batches.items()):
            sums = self.sums(coords, split_batches, tag=tag, train_batches=train_batches)
            out[f"{split}_loss"] = (sums.loss / sums.samples).cpu().numpy()
            if sums.correct is not None:
                out[f"{split}_acc"] = (sums.correct.double() / sums.samples).cpu().numpy()
        return out

    def sums(self, coords: torch.Tensor, batches: list[tuple[torch.Tensor, torch.Tensor]], tag: int = 0,
             train_batches: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> PointSums:
        """Loss sums and correct counts over ``batches`` at the K points ``coords`` (K, m).

        ``tag`` distinguishes data sets in the first-layer cache; ``train_batches`` feed the BatchNorm
        re-estimation in ``bn="recompute"`` mode.
        """
        coords = coords.reshape(coords.shape[0], -1)
        if self.bn == "recompute":
            return self._sums_recompute(coords, batches, train_batches)
        k = coords.shape[0]
        device = next(iter(self.center.values())).device
        loss = torch.zeros(k, dtype=torch.float64, device=device)
        correct = torch.zeros(k, dtype=torch.int64, device=device) if self.loss == "cross_entropy" else None
        samples = 0
        params, buffers = self._point_sets(coords)
        for j, (x, y) in enumerate(batches):
            out = self._outputs(coords, params, buffers, x, key=(tag, j, x.data_ptr(), x.shape[0]))
            if self.loss == "cross_entropy":  # log-sum-exp minus the target logit: 4x faster than F.cross_entropy
                target = y.unsqueeze(0).expand(k, *y.shape).unsqueeze(-1)
                loss += (torch.logsumexp(out, dim=-1) - out.gather(-1, target).squeeze(-1)).double().sum(dim=1)
                correct += (out.argmax(dim=-1) == y.unsqueeze(0)).sum(dim=1)
            else:
                flat = out.reshape(k * out.shape[1], *out.shape[2:])
                target = y.unsqueeze(0).expand(k, *y.shape).reshape(k * y.shape[0], *y.shape[1:])
                loss += per_sample(self.loss, flat, target).reshape(k, -1).double().sum(dim=1)
            samples += x.shape[0]
        return PointSums(loss, correct, samples)

    def _recomputed(self, coords: torch.Tensor, train_batches):
        """For each point: a model holding its parameters with BatchNorm statistics re-estimated."""
        if not train_batches:
            raise LandscapeError("recomputing BatchNorm statistics needs training data")
        model = copy.deepcopy(self.model)
        bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        names = list(self.center)
        for c in coords:
            params = self._stack(self.center, self.directions, c[None], names)
            with torch.no_grad():
                for n, p in model.named_parameters():
                    if n in params:
                        p.copy_(params[n][0])
                recompute_batchnorm(model, bns, train_batches)
            yield model

    def _sums_recompute(self, coords, batches, train_batches) -> PointSums:
        losses, corrects, samples = [], [], 0
        for model in self._recomputed(coords, train_batches):
            total, correct, samples = 0.0, 0, 0
            with torch.no_grad():
                for x, y in batches:
                    out = model(x)
                    total += float(per_sample(self.loss, out, y).double().sum())
                    if self.loss == "cross_entropy":
                        correct += int((out.argmax(dim=-1) == y).sum())
                    samples += x.shape[0]
            losses.append(total)
            corrects.append(correct)
        device = next(iter(self.center.values())).device
        return PointSums(torch.tensor(losses, dtype=torch.float64, device=device),
                         torch.tensor(corrects, device=device) if self.loss == "cross_entropy" else None, samples)

    @torch.no_grad()
    def mean_probabilities(self, coords: torch.Tensor, x: torch.Tensor, batch_size: int,
                           train_batches=None) -> torch.Tensor:
        """(N, C): softmax outputs on x averaged over the points (an ensemble of the points' models)."""
        coords = coords.reshape(coords.shape[0], -1)
        total = None
        if self.bn == "recompute":
            for model in self._recomputed(coords, train_batches):
                probs = torch.cat([model(x[i:i + batch_size]).softmax(-1) for i in range(0, x.shape[0], batch_size)])
                total = probs if total is None else total + probs
            return total / coords.shape[0]
        params, buffers = self._point_sets(coords)
        parts = []
        for j in range(0, x.shape[0], batch_size):
            xb = x[j:j + batch_size]
            out = self._outputs(coords, params, buffers, xb, key=("probabilities", j, xb.data_ptr(), xb.shape[0]))
            parts.append(out.softmax(-1).mean(0))
        return torch.cat(parts)


def recompute_batchnorm(model: nn.Module, layers: list[nn.Module], batches) -> None:
    """Running statistics = cumulative average of the batch statistics over ``batches`` (train mode)."""
    momenta = {}
    for m in layers:
        m.reset_running_stats()
        momenta[m] = m.momentum
        m.momentum = None
    was = model.training
    model.train()
    try:
        with torch.no_grad():
            for x, _ in batches:
                model(x)
    finally:
        for m, mom in momenta.items():
            m.momentum = mom
        model.train(was)


def activation_bytes_per_sample(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes of all leaf-module outputs for one sample (an estimate of a forward pass's working set)."""
    total = [0]

    def hook(module, args, out):
        if isinstance(out, torch.Tensor):
            total[0] += out.numel() * out.element_size()

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model.eval()(x[:1])
    finally:
        for h in handles:
            h.remove()
    return max(total[0], 1)


def plan_chunks(model: nn.Module, x: torch.Tensor, num_points: int, num_samples: int, num_params: int,
                memory_bytes: int, batch_size: int | None = None,
                per_sample_bytes: int | None = None) -> tuple[int, int]:
    """(points per chunk K, samples per data batch B) with K * B * activation bytes plus the K stacked
    parameter sets within ``memory_bytes``; B defaults to all samples when they fit with K >= 16."""
    if per_sample_bytes is None:
        per_sample_bytes = activation_bytes_per_sample(copy.deepcopy(model), x)
    param_bytes = num_params * x.element_size() * 2
    if batch_size is None:
        batch_size = num_samples
        while batch_size > 64 and 16 * batch_size * per_sample_bytes > memory_bytes:
            batch_size = math.ceil(batch_size / 2)
    batch_size = max(1, min(batch_size, num_samples))
    k = int(memory_bytes // (batch_size * per_sample_bytes + param_bytes))
    return max(1, min(k, num_points)), batch_size


def candidate_plans(model: nn.Module, x: torch.Tensor, num_points: int, num_samples: int, num_params: int,
                    memory_bytes: int, batch_size: int | None = None) -> list[tuple[int, int]]:
    """Plans worth timing: one point at a time with the largest batch within ``memory_bytes`` (best for
    compute-bound models on the CPU, where ``vmap`` over convolutions costs more than it saves), and the
    batched chunk of :func:`plan_chunks` (best for small models and on GPUs)."""
    per_sample_bytes = activation_bytes_per_sample(copy.deepcopy(model), x)
    single = batch_size or num_samples
    while batch_size is None and single > 64 and single * per_sample_bytes > memory_bytes:
        single = math.ceil(single / 2)
    plans = [(1, max(1, min(single, num_samples)))]
    chunked = plan_chunks(model, x, num_points, num_samples, num_params, memory_bytes, batch_size, per_sample_bytes)
    if chunked[0] > 1:
        plans.append(chunked)
    return plans


def fastest_plan(evaluator: "GridEvaluator", plans: list[tuple[int, int]], x: torch.Tensor, y: torch.Tensor,
                 num_directions: int, repeats: int = 3) -> tuple[int, int]:
    """The plan (K, B) with the lowest measured time per point (best of ``repeats`` after a warm-up)."""
    if len(plans) == 1:
        return plans[0]
    best = (math.inf, plans[0])
    for k, b in plans:
        batches = split_batches(x, y, b)
        coords = torch.zeros(k, num_directions, dtype=x.dtype if x.is_floating_point() else torch.float32,
                             device=x.device)
        evaluator.sums(coords, batches)
        seconds = math.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            evaluator.sums(coords, batches)
            seconds = min(seconds, time.perf_counter() - t0)
        best = min(best, (seconds / k, (k, b)))
    return best[1]


Batches = list[tuple[torch.Tensor, torch.Tensor]]


def split_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int) -> Batches:
    return [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)]

