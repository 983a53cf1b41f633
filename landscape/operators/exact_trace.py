"""Exact traces of sums of per-sample outer products, G = (1/N) sum_n J_n^T L_n L_n^T J_n.

With L_n L_n^T the Hessian of the per-sample loss in output space this is the GGN; with
L_n = d l_n / d f_n it is the empirical Fisher. tr(G) = (1/N) sum_n sum_c ||J_n^T L_n[:, c]||^2 is a
sum of squared per-sample gradient norms of the scalars s_nc = L_n[:, c] . f_n (L held constant),
which we get without materialising per-sample gradients (as BackPACK's BatchL2Grad does): one
backward pass per column c gives each layer's output gradients g_n, and

- Linear on (N, in) inputs: ||g_n a_n^T||^2 = ||a_n||^2 ||g_n||^2 (Goodfellow 2015), bias ||g_n||^2;
- Linear on inputs with extra axes and Conv1d/Conv2d: the per-sample weight gradient
  sum_p g_np a_np^T from the (unfolded) input, squared and summed, bias ||sum_p g_np||^2;
- BatchNorm in eval mode: weight sum_p g_np * xhat_np, bias sum_p g_np, per channel.

Models with parameters in other module types return ``None`` (callers then fall back to
stochastic estimates). Only the objective's selected parameters are counted.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..objective import Objective

SUPPORTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d)


def loss_hessian_factor(loss: str, output: torch.Tensor) -> torch.Tensor:
    """L_n (N, D, D) with L_n L_n^T the Hessian of the per-sample loss in the (flattened) outputs."""
    n = output.shape[0]
    z = output.detach().reshape(n, -1)
    d = z.shape[1]
    if loss == "cross_entropy":
        p = torch.softmax(z, dim=1)
        sp = p.sqrt()
        return torch.diag_embed(sp) - p[:, :, None] * sp[:, None, :]  # (diag(p) - p p^T) = L L^T
    scale = math.sqrt(2.0 / d) if loss == "mse" else math.sqrt(2.0)
    return scale * torch.eye(d, dtype=z.dtype, device=z.device).expand(n, d, d)


def _supported(model: nn.Module, names: set[str]) -> dict[str, nn.Module] | None:
    modules = {}
    for mod_name, module in model.named_modules():
        own = [f"{mod_name}.{p}" if mod_name else p for p, _ in module.named_parameters(recurse=False)]
        selected = [p for p in own if p in names]
        if not selected:
            continue
        if not isinstance(module, SUPPORTED):
            return None
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)) and not module.track_running_stats:
            return None
        modules[mod_name] = module
    return modules


def _norms(module: nn.Module, a: torch.Tensor, g: torch.Tensor, theta: dict, prefix: str) -> dict[str, torch.Tensor]:
    """Squared per-sample gradient norms (N,) of the module's parameters, from input a and output grad g."""
    n = a.shape[0]
    out: dict[str, torch.Tensor] = {}
    if isinstance(module, nn.Linear):
        if a.ndim == 2:
            out["weight"] = a.pow(2).sum(1) * g.pow(2).sum(1)
            out["bias"] = g.pow(2).sum(1)
        else:
            a3, g3 = a.reshape(n, -1, a.shape[-1]), g.reshape(n, -1, g.shape[-1])
            out["weight"] = torch.einsum("npo,npi->noi", g3, a3).pow(2).sum((1, 2))
            out["bias"] = g3.sum(1).pow(2).sum(1)
    elif isinstance(module, (nn.Conv1d, nn.Conv2d)):
        if isinstance(module, nn.Conv1d):
            cols = F.unfold(a.unsqueeze(-1), (module.kernel_size[0], 1), dilation=(module.dilation[0], 1),
                            padding=(module.padding[0], 0), stride=(module.stride[0], 1))
        else:
            cols = F.unfold(a, module.kernel_size, dilation=module.dilation, padding=module.padding,
                            stride=module.stride)
        if module.groups != 1:
            raise NotImplementedError
        g2 = g.reshape(n, g.shape[1], -1)                      # (N, out, P)
        out["weight"] = torch.einsum("nop,nip->noi", g2, cols).pow(2).sum((1, 2))
        out["bias"] = g2.sum(2).pow(2).sum(1)
    else:  # BatchNorm in eval mode
        shape = (1, -1) + (1,) * (a.ndim - 2)
        xhat = (a - module.running_mean.reshape(shape)) / torch.sqrt(module.running_var.reshape(shape) + module.eps)
        axes = tuple(range(2, a.ndim))
        out["weight"] = ((g * xhat).sum(axes) if axes else g * xhat).pow(2).sum(1)
        out["bias"] = (g.sum(axes) if axes else g).pow(2).sum(1)
    return {f"{prefix}.{k}" if prefix else k: v for k, v in out.items() if (f"{prefix}.{k}" if prefix else k) in theta}


def exact_outer_trace(objective: Objective, seeds: Callable[[int, torch.Tensor], torch.Tensor]
                      ) -> dict[str, float] | None:
    """Per-parameter traces of (1/N) sum_n J_n^T S_n S_n^T J_n, S_n = ``seeds(b, outputs)`` of shape (N_b, D, K).

    Returns ``{parameter name: trace}`` or ``None`` when the model has unsupported parameterised modules.
    """
    names = set(objective.layout.names)
    modules = _supported(objective.model, names)
    if modules is None:
        return None
    totals = {name: 0.0 for name in objective.layout.names}
    for b, (x, _) in enumerate(objective.batches):
        inputs: dict[str, torch.Tensor] = {}
        outputs: dict[str, torch.Tensor] = {}
        calls: dict[str, int] = {}

        def hook(mod_name):
            def fn(_module, args, result):
                inputs[mod_name] = args[0].detach()
                outputs[mod_name] = result
                calls[mod_name] = calls.get(mod_name, 0) + 1
            return fn

        handles = [m.register_forward_hook(hook(name)) for name, m in modules.items()]
        try:
            with torch.enable_grad():
                leaves = {k: v.detach().requires_grad_() for k, v in objective.theta.items()}
                z = objective.output(leaves, x)
        finally:
            for h in handles:
                h.remove()
        if set(calls) != set(modules) or any(c != 1 for c in calls.values()):
            return None  # a module unused or applied twice (weight sharing): per-sample norms do not add up
        tracked = [outputs[name] for name in modules]
        S = seeds(b, z.detach())                                   # (N_b, D, K)
        flat = z.reshape(z.shape[0], -1)
        for c in range(S.shape[2]):
            grads = torch.autograd.grad(flat, tracked, grad_outputs=S[:, :, c], retain_graph=True)
            for (name, module), a, g in zip(modules.items(), (inputs[n] for n in modules), grads):
                for pname, norms in _norms(module, a, g, objective.theta, name).items():
                    totals[pname] += float(norms.sum()) / objective.num_samples
    if objective.sharded:
        reduced = objective.all_reduce(torch.tensor(list(totals.values()), dtype=torch.float64,
                                                    device=objective.device))
        totals = dict(zip(totals, reduced.tolist()))
    return totals


def exact_ggn_trace(objective: Objective) -> dict[str, float] | None:
    """Per-parameter exact traces of the GGN (None for unsupported models)."""
    return exact_outer_trace(objective, lambda b, z: loss_hessian_factor(objective.loss_name, z))


def exact_fisher_trace(op) -> dict[str, float] | None:
    """Exact per-parameter traces of a :class:`FisherOperator` (its own fixed target draws)."""
    def seeds(b: int, z: torch.Tensor) -> torch.Tensor:
        s = op._score(b, z)                                   # (S, N, *out)
        s = s.reshape(s.shape[0], s.shape[1], -1).permute(1, 2, 0)
        return s / math.sqrt(s.shape[2])

    return exact_outer_trace(op.objective, seeds)
