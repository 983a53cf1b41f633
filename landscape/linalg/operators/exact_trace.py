"""Exact traces of sums of per-sample outer products, G = (1/N) sum_n J_n^T L_n L_n^T J_n.

With L_n L_n^T the Hessian of the per-sample loss in output space this is the GGN; with
L_n = d l_n / d f_n it is the empirical Fisher. tr(G) = (1/N) sum_n sum_c ||J_n^T L_n[:, c]||^2 is a
sum of squared per-sample gradient norms of the scalars s_nc = L_n[:, c] . f_n (L held constant),
which we get without materialising per-sample gradients of the whole model (as BackPACK's BatchL2Grad
does): one backward pass per column c gives each layer call's output gradients g_n, and

- Linear on (N, in) inputs: ||g_n a_n^T||^2 = ||a_n||^2 ||g_n||^2 (Goodfellow 2015), bias ||g_n||^2;
- Linear on inputs with extra axes and Conv1d/Conv2d: the per-sample weight gradient
  sum_p g_np a_np^T from the (unfolded) input, squared and summed, bias ||sum_p g_np||^2;
- BatchNorm in eval mode: weight sum_p g_np * xhat_np, bias sum_p g_np, per channel.

Parameters are matched to the modules that use them by identity, not by name, so one tensor held by
several modules (tied weights) or a module called several times is one parameter with several uses;
its per-sample gradient is the sum over the uses, materialised for that parameter alone before it is
squared. Two checks make sure that the uses seen by the hooks are all there is: the autograd graph
must reach each parameter through exactly as many edges as it has hooked uses (a functional
``x @ layer.weight`` elsewhere adds one), and every column's batch gradient rebuilt from the uses must
equal autograd's gradient of the parameter. Subclasses of the supported types count only when they keep
the base class's ``forward``.

Models with parameters in other module types, or failing a check, return ``None`` (callers then fall
back to stochastic estimates). Only the objective's selected parameters are counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ...objective import Objective

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


@dataclass
class _Holder:
    """A supported module and the selected parameters it holds: {role ("weight"/"bias"): layout name}."""
    module: nn.Module
    roles: dict[str, str] = field(default_factory=dict)


def _holders(model: nn.Module, names: set[str]) -> dict[str, _Holder] | None:
    """The supported modules holding selected parameters, keyed by module name; parameters are identified
    by the tensor, so a tied weight is found in every module that holds it. None if an unsupported module
    holds one."""
    layout_name = {id(p): n for n, p in model.named_parameters()}  # the first name of each tensor
    holders: dict[str, _Holder] = {}
    for mod_name, module in model.named_modules():
        roles = {role: layout_name[id(p)] for role, p in module.named_parameters(recurse=False, remove_duplicate=False)
                 if layout_name[id(p)] in names}
        if not roles:
            continue
        if not any(isinstance(module, t) and type(module).forward is t.forward for t in SUPPORTED):
            return None
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)) and not module.track_running_stats:
            return None
        if isinstance(module, (nn.Conv1d, nn.Conv2d)) and (module.groups != 1 or module.padding_mode != "zeros"):
            return None
        holders[mod_name] = _Holder(module, roles)
    return holders


def _unfold(module: nn.Module, a: torch.Tensor) -> torch.Tensor:
    """The convolution's input patches (N, in * kernel, P), in the order of weight.reshape(out, -1)."""
    if isinstance(module, nn.Conv1d):
        return F.unfold(a.unsqueeze(-1), (module.kernel_size[0], 1), dilation=(module.dilation[0], 1),
                        padding=(module.padding[0], 0), stride=(module.stride[0], 1))
    return F.unfold(a, module.kernel_size, dilation=module.dilation, padding=module.padding, stride=module.stride)


def _xhat(module: nn.Module, a: torch.Tensor) -> torch.Tensor:
    shape = (1, -1) + (1,) * (a.ndim - 2)
    return (a - module.running_mean.reshape(shape)) / torch.sqrt(module.running_var.reshape(shape) + module.eps)


def _per_sample_gradients(module: nn.Module, a: torch.Tensor, g: torch.Tensor) -> dict[str, torch.Tensor]:
    """{role: (N, numel)} per-sample gradients of one call's parameters, from its input a and output grad g."""
    n = a.shape[0]
    if isinstance(module, nn.Linear):
        a3, g3 = a.reshape(n, -1, a.shape[-1]), g.reshape(n, -1, g.shape[-1])
        return {"weight": torch.einsum("npo,npi->noi", g3, a3).reshape(n, -1), "bias": g3.sum(1)}
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        g2 = g.reshape(n, g.shape[1], -1)                      # (N, out, P)
        return {"weight": torch.einsum("nop,nip->noi", g2, _unfold(module, a)).reshape(n, -1), "bias": g2.sum(2)}
    axes = tuple(range(2, a.ndim))                             # BatchNorm in eval mode
    gx = g * _xhat(module, a)
    return {"weight": gx.sum(axes) if axes else gx, "bias": g.sum(axes) if axes else g}


def _squared_norms(module: nn.Module, a: torch.Tensor, g: torch.Tensor) -> dict[str, torch.Tensor]:
    """{role: (N,)} squared per-sample gradient norms of one call (cheaper than squaring the gradients
    for a Linear layer on (N, in) inputs)."""
    if isinstance(module, nn.Linear) and a.ndim == 2:
        return {"weight": a.pow(2).sum(1) * g.pow(2).sum(1), "bias": g.pow(2).sum(1)}
    return {role: grads.pow(2).sum(1) for role, grads in _per_sample_gradients(module, a, g).items()}


def _batch_gradient(module: nn.Module, a: torch.Tensor, g: torch.Tensor) -> dict[str, torch.Tensor]:
    """{role: flat gradient summed over the samples} of one call (for the consistency check)."""
    if isinstance(module, nn.Linear):
        a2, g2 = a.reshape(-1, a.shape[-1]), g.reshape(-1, g.shape[-1])
        return {"weight": (g2.T @ a2).reshape(-1), "bias": g2.sum(0)}
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        n = a.shape[0]
        g2 = g.reshape(n, g.shape[1], -1)
        return {"weight": torch.einsum("nop,nip->oi", g2, _unfold(module, a)).reshape(-1), "bias": g2.sum((0, 2))}
    axes = (0,) + tuple(range(2, a.ndim))
    return {"weight": (g * _xhat(module, a)).sum(axes), "bias": g.sum(axes)}


class _Calls:
    """Forward hooks recording every call of the holder modules: (module name, input, output) in order."""

    def __init__(self, holders: dict[str, _Holder]):
        self.holders = holders
        self.calls: list[tuple[str, torch.Tensor, torch.Tensor]] = []
        self.keyword_only = False
        self.handles: list = []

    def __enter__(self) -> "_Calls":
        def hook(mod_name):
            def fn(_module, args, result):
                if not args or not isinstance(result, torch.Tensor):
                    self.keyword_only = True
                    return
                self.calls.append((mod_name, args[0].detach(), result))
            return fn

        self.handles = [h.module.register_forward_hook(hook(name)) for name, h in self.holders.items()]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()


def _accumulate(holders: dict[str, _Holder], calls: list, output_grads: list, leaf_grads: dict[str, torch.Tensor],
                totals: dict[str, float], num_samples: int) -> bool:
    """Add one column's squared per-sample gradient norms to ``totals``; False if a parameter's gradient is not
    the sum of its uses' gradients (it reaches the loss some other way)."""
    uses: dict[str, list[tuple[nn.Module, str, torch.Tensor, torch.Tensor]]] = {name: [] for name in totals}
    for (mod_name, a, _), g in zip(calls, output_grads):
        holder = holders[mod_name]
        for role, name in holder.roles.items():
            uses[name].append((holder.module, role, a, g))
    for name, found in uses.items():
        leaf = leaf_grads[name].reshape(-1)
        if not found:
            if leaf.abs().max() > 0:
                return False
            continue
        rebuilt = sum(_batch_gradient(module, a, g)[role] for module, role, a, g in found)
        if len(found) == 1:
            module, role, a, g = found[0]
            squares = _squared_norms(module, a, g)[role]
        else:  # one tensor, several uses: the per-sample gradient is their sum
            squares = sum(_per_sample_gradients(module, a, g)[role] for module, role, a, g in found).pow(2).sum(1)
        # the formulas' batch gradient against autograd's; sum_n ||grad_n|| sets the scale of the rounding
        scale = float(squares.sqrt().sum()) + float(leaf.norm())
        if float((rebuilt - leaf).norm()) > math.sqrt(torch.finfo(leaf.dtype).eps) * scale:
            return False
        totals[name] += float(squares.sum()) / num_samples
    return True


def _graph_edges(root: torch.Tensor) -> dict[int, int]:
    """{id(leaf): number of autograd edges into it} over the graph of ``root``: one per direct use in an op."""
    edges: dict[int, int] = {}
    seen, stack = set(), [root.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        for child, _ in node.next_functions:
            if child is None:
                continue
            variable = getattr(child, "variable", None)
            if variable is not None:
                edges[id(variable)] = edges.get(id(variable), 0) + 1
            else:
                stack.append(child)
    return edges


def _uses_match_graph(holders: dict[str, _Holder], calls: list, leaves: dict[str, torch.Tensor],
                      output: torch.Tensor) -> bool:
    """True if every selected parameter reaches ``output`` only through the hooked calls of its holders."""
    expected = {name: 0 for name in leaves}
    for mod_name, _, _ in calls:
        for name in holders[mod_name].roles.values():
            expected[name] += 1
    edges = _graph_edges(output)
    return all(edges.get(id(leaf), 0) == expected[name] for name, leaf in leaves.items())


def exact_outer_trace(objective: Objective, seeds: Callable[[int, torch.Tensor], torch.Tensor]
                      ) -> dict[str, float] | None:
    """Per-parameter traces of (1/N) sum_n J_n^T S_n S_n^T J_n, S_n = ``seeds(b, outputs)`` of shape (N_b, D, K).

    Returns ``{parameter name: trace}`` or ``None`` when the model has unsupported parameterised modules or a
    parameter that enters the loss outside the modules holding it.
    """
    names = list(objective.layout.names)
    holders = _holders(objective.model, set(names))
    if holders is None:
        return None
    totals = {name: 0.0 for name in names}
    refused = False
    for b, (x, _) in enumerate(objective.batches):
        with _Calls(holders) as recorder, torch.enable_grad():
            leaves = {k: v.detach().requires_grad_() for k, v in objective.theta.items()}
            z = objective.output(leaves, x)
        if recorder.keyword_only or not _uses_match_graph(holders, recorder.calls, leaves, z):
            refused = True
            break
        S = seeds(b, z.detach())                                   # (N_b, D, K)
        flat = z.reshape(z.shape[0], -1)
        tracked = [out for _, _, out in recorder.calls]
        for c in range(S.shape[2]):
            grads = torch.autograd.grad(flat, tracked + list(leaves.values()), grad_outputs=S[:, :, c],
                                        retain_graph=True, allow_unused=True, materialize_grads=True)
            leaf_grads = dict(zip(leaves, grads[len(tracked):]))
            if not _accumulate(holders, recorder.calls, grads[:len(tracked)], leaf_grads, totals, objective.num_samples):
                refused = True
                break
        if refused:
            break
    if objective.sharded:  # every process takes the same way out
        refused = bool(objective.all_reduce(torch.tensor(float(refused), device=objective.device)) > 0)
    if refused:
        return None
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
