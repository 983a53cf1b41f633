"""Fisher products F v = (1/N) sum_n J_n^T s_n s_n^T J_n v.

s_n = d l_n / d f_n is the gradient of the per-sample loss with respect to the outputs:

- ``empirical``: at the data's own targets (the "empirical Fisher", Kunstner et al. 2019 discuss
  how it differs from the true Fisher);
- ``mc``: at targets sampled from the model's predictive distribution (``mc_samples`` per input,
  drawn once per operator from ``seed``, so the operator is a fixed matrix). Its expectation is
  the GGN for losses that are negative log-likelihoods (cross-entropy; squared error read as a
  Gaussian), see :func:`landscape.losses.sample_targets`.
"""

from __future__ import annotations

import torch

from ...losses import sample_targets
from ...objective import Objective
from .ggn import OutputSpaceOperator

KINDS = ("empirical", "mc")


class FisherOperator(OutputSpaceOperator):
    """The Fisher F = (1/N) sum_n J_n^T s_n s_n^T J_n as a linear operator (module docstring), with s_n the
    output gradient of the per-sample loss at the data's targets (``"empirical"``) or at targets sampled
    from the model (``"mc"``; Martens 2014, "New insights and perspectives on the natural gradient method").

    Args:
        objective: the :class:`~landscape.objective.Objective` whose parameters are the variables.
        kind: ``"mc"`` or ``"empirical"``.
        mc_samples: sampled targets per input (``"mc"``), averaged.
        seed: of the sampled targets, drawn once per operator (a fixed matrix), per global batch.
        cache: keep each batch's linearization across products.
    """

    products = "Fisher products"

    def __init__(self, objective: Objective, kind: str = "mc", mc_samples: int = 1, seed: int = 0,
                 cache: str | bool = "auto"):
        super().__init__(objective, cache)
        if kind not in KINDS:
            raise ValueError(f"Fisher kind must be one of {', '.join(KINDS)}")
        if mc_samples < 1:
            raise ValueError("mc_samples must be >= 1")
        self.kind, self.mc_samples, self.seed = kind, int(mc_samples), int(seed)
        self._scores: dict[int, torch.Tensor] = {}

    def _options(self) -> dict:
        return {"kind": self.kind, "mc_samples": self.mc_samples, "seed": self.seed, "cache": self.cache}

    def _score(self, b: int, out: torch.Tensor) -> torch.Tensor:
        """s of shape (S, n_b, *out): per-sample output gradients for S target draws."""
        if b not in self._scores:
            obj = self.objective
            _, y = obj.batches[b]
            if self.kind == "empirical":
                targets = [y]
            else:
                gen = torch.Generator().manual_seed(self.seed * 1_000_003 + obj.batch_ids[b])
                targets = [sample_targets(obj.loss_name, out, gen) for _ in range(self.mc_samples)]
            scores = []
            for t in targets:
                z = out.detach().requires_grad_()
                (s,) = torch.autograd.grad(obj.batch_per_sample(z, t).sum(), z)
                scores.append(s)
            self._scores[b] = torch.stack(scores)
        return self._scores[b]

    def output_product(self, b: int, out: torch.Tensor, jv: torch.Tensor) -> torch.Tensor:
        s = self._score(b, out)                              # (S, n, ...)
        n = out.shape[0]
        coeff = (s * jv).reshape(s.shape[0], n, -1).sum(-1)  # s_n . (J v)_n
        shape = (s.shape[0], n) + (1,) * (s.ndim - 2)
        return (coeff.reshape(shape) * s).mean(0) / n
