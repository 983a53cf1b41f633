"""Loss and accuracy at many points w + sum_i a_i d_i at once, on several data sets, and the plan of
the evaluation (points per chunk, samples per batch) that fits the memory and runs fastest.

The evaluation itself is :class:`landscape.objective_grid.ObjectiveGrid` (batched forward passes under
``vmap``, the affine-first-layer trick, BatchNorm in eval or recompute mode) on the model's
:class:`~landscape.objective.Objective`; :class:`GridEvaluator` holds one for the data sets of a surface
or a path.
"""

from __future__ import annotations

import copy
import math
import time

import numpy as np
import torch
from torch import nn

from landscape.objective import Batches, Objective, split_batches
from landscape.objective_grid import ObjectiveGrid, PointSums

__all__ = ["Batches", "GridEvaluator", "PointSums", "activation_bytes_per_sample", "candidate_plans",
           "fastest_plan", "plan_chunks", "split_batches"]


class GridEvaluator:
    """Evaluate loss (and accuracy for cross-entropy) of ``model`` at w + coords @ directions.

    ``center``: parameter dict w (trainable parameters, named_parameters order); ``directions``:
    list of dicts like ``center``; ``buffer_directions``: optional list of dicts of float-buffer
    differences moved along with the parameters (same length as ``directions``). The other arguments
    are :class:`~landscape.objective_grid.ObjectiveGrid`'s.
    """

    def __init__(self, model: nn.Module, loss: str, center: dict[str, torch.Tensor],
                 directions: list[dict[str, torch.Tensor]], buffer_directions: list[dict[str, torch.Tensor]] | None = None,
                 bn: str = "eval", affine_first_layer: bool = True, sample_input: torch.Tensor | None = None,
                 bf16: bool = False):
        objective = Objective.without_data(model, loss, params=list(center))
        flat = objective.layout.flatten
        self.grid = ObjectiveGrid(objective, [flat(d) for d in directions], flat(center), buffer_directions, bn=bn,
                                  affine_first_layer=affine_first_layer, sample_input=sample_input, bf16=bf16)
        self.loss = loss

    @property
    def first(self) -> str | None:
        """The affine first layer's name, or None."""
        return self.grid.first

    @property
    def bn(self) -> str:
        return self.grid.bn

    @torch.no_grad()
    def metrics(self, coords: torch.Tensor, batches: dict[str, Batches],
                train_batches: Batches | None = None) -> dict[str, np.ndarray]:
        """Mean loss ``<split>_loss`` (and accuracy ``<split>_acc`` for cross-entropy) at the K points for
        every data set of ``batches`` (split name -> its batches), as float64 arrays of length K."""
        out = {}
        for tag, (split, split_batches_) in enumerate(batches.items()):
            sums = self.sums(coords, split_batches_, tag=tag, train_batches=train_batches)
            out[f"{split}_loss"] = (sums.loss / sums.samples).cpu().numpy()
            if sums.correct is not None:
                out[f"{split}_acc"] = (sums.correct.double() / sums.samples).cpu().numpy()
        return out

    def sums(self, coords: torch.Tensor, batches: Batches, tag: int = 0,
             train_batches: Batches | None = None) -> PointSums:
        """Loss sums and correct counts over ``batches`` at the K points ``coords`` (K, m).

        ``tag`` distinguishes data sets in the first-layer cache; ``train_batches`` feed the BatchNorm
        re-estimation in ``bn="recompute"`` mode.
        """
        return self.grid.sums(coords, batches, tag=tag, train_batches=train_batches)

    @torch.no_grad()
    def mean_probabilities(self, coords: torch.Tensor, x: torch.Tensor, batch_size: int,
                           train_batches=None) -> torch.Tensor:
        """(N, C): softmax outputs on x averaged over the points (an ensemble of the points' models)."""
        coords = coords.reshape(coords.shape[0], -1)
        inputs = [x[j:j + batch_size] for j in range(0, x.shape[0], batch_size)]
        if self.bn == "recompute":
            total = None
            for model in self.grid.recomputed(coords, train_batches):
                probs = torch.cat([model(xb).softmax(-1) for xb in inputs])
                total = probs if total is None else total + probs
            return total / coords.shape[0]
        return torch.cat([out.softmax(-1).mean(0) for out in self.grid.outputs(coords, inputs, "probabilities")])


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
