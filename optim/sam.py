"""Sharpness-aware minimisation around any first-order optimizer.

SAM (Foret, Kleiner, Mobahi & Neyshabur 2021): with the mini-batch gradient g at w,

    e = rho g / ||g||,     then the inner optimizer steps with the gradient taken at w + e.

ASAM (Kwon, Kim, Park & Choi 2021), ``adaptive=True``: with T = |w| + eta (element-wise),
e = rho T^2 g / ||T g||, a perturbation that is invariant to rescaling the weights.

m-sharpness (Foret et al. Sec. 4.1): with ``m`` set, the batch is cut into ceil(B / m) chunks; each
chunk gets its own perturbation from its own gradient, and the perturbed gradients are averaged
(weighted by chunk size). This needs a closure that accepts ``part=(index, count)`` and evaluates
only that chunk of ``torch.tensor_split(batch, count)``, and that carries the batch size as
``closure.batch_size``; the training loop's closures do. Each step costs two forward-backward
passes. The returned loss is the loss at w (before the perturbation).
"""

from __future__ import annotations

import math

import torch

from .wrapper import OptimizerWrapper


def chunk_sizes(batch_size: int, count: int) -> list[int]:
    """Sizes of ``torch.tensor_split`` of ``batch_size`` items into ``count`` pieces."""
    base, extra = divmod(batch_size, count)
    return [base + (1 if i < extra else 0) for i in range(count)]


class SAM(OptimizerWrapper):
    """Sharpness-aware minimisation around a first-order optimizer (Foret, Kleiner, Mobahi & Neyshabur 2021,
    "Sharpness-aware minimization for efficiently improving generalization"): the inner optimizer steps with
    the gradient at w + rho g / ||g||; ASAM (Kwon et al. 2021) with ``adaptive`` (module docstring).

    Args:
        inner: the optimizer that takes the step (its weight decay applies as it would alone).
        rho: perturbation radius. adaptive: ASAM's scaling by |w| + eta. eta: ASAM's offset.
        m: samples per perturbation (m-sharpness; needs a :class:`~landscape.optim.Closure`).
    """

    def __init__(self, inner: torch.optim.Optimizer, rho: float = 0.05, adaptive: bool = False, eta: float = 0.01,
                 m: int | None = None):
        if not rho >= 0:
            raise ValueError("rho must be >= 0")
        if m is not None and (int(m) != m or m < 1):
            raise ValueError("m must be a positive integer (samples per perturbation)")
        super().__init__(inner, rho=float(rho), adaptive=bool(adaptive), eta=float(eta))
        self.m = None if m is None else int(m)

    def _perturbation(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        pairs = []
        for group in self.param_groups:
            scale = [(p.abs() + group["eta"]) if group["adaptive"] else None for p in group["params"]]
            grads = [(p, p.grad if s is None else p.grad * s, s) for p, s in zip(group["params"], scale)
                     if p.grad is not None]
            norm = math.sqrt(sum(float(g.pow(2).sum()) for _, g, _ in grads))
            for p, g, s in grads:
                e = g * (group["rho"] / norm) if norm > 0 else torch.zeros_like(g)
                pairs.append((p, e if s is None else e * s))
        return pairs

    @torch.no_grad()
    def step(self, closure=None):
        if closure is None:
            raise RuntimeError("SAM needs a closure that re-evaluates the loss and its gradients")
        params = [p for g in self.param_groups for p in g["params"]]
        if self.m is None:
            parts, weights = [None], [1.0]
        else:
            batch = getattr(closure, "batch_size", None)
            if batch is None:
                raise RuntimeError("SAM with m needs a closure(part=(i, k)) with a batch_size attribute")
            count = max(1, math.ceil(batch / self.m))
            parts = [(i, count) for i in range(count)]
            weights = [n / batch for n in chunk_sizes(batch, count)]
        total = 0.0
        summed: list[torch.Tensor | None] = [None] * len(params)
        for part, weight in zip(parts, weights):
            self.zero_grad(set_to_none=True)
            with torch.enable_grad():
                loss = closure() if part is None else closure(part=part)
            total += weight * float(loss)
            pairs = self._perturbation()
            for p, e in pairs:
                p.add_(e)
            self.zero_grad(set_to_none=True)
            with torch.enable_grad():
                closure() if part is None else closure(part=part)
            for i, p in enumerate(params):
                if p.grad is not None:
                    summed[i] = p.grad * weight if summed[i] is None else summed[i].add_(p.grad, alpha=weight)
            for p, e in pairs:
                p.sub_(e)
        for s, p in zip(summed, params):
            p.grad = s
        self.inner.step()
        return torch.tensor(total)
