"""Permutation alignment of two networks by weight matching (Ainsworth, Hayase & Srinivasa 2023,
"Git Re-Basin", Algorithm 1).

Hidden units (rows of a Linear layer, output channels of a convolution) can be permuted without
changing the function, if the next layer's inputs are permuted the same way. Weight matching looks
for the permutations P_l of model B's hidden layers maximising sum_l <W_l^A, P_l W_l^B P_{l-1}^T>
(biases included) by coordinate descent: each P_l in turn solves a linear assignment problem with
the others fixed, until no permutation changes.

Supported: ``nn.Sequential`` models whose parameterised layers are Linear / Conv1d / Conv2d joined by
parameter-free modules (activations, pooling, Flatten; a Flatten between a convolution and a Linear
layer permutes the Linear layer's input in blocks of the spatial size). BatchNorm models are refused
(their statistics would need permuting and recalibrating).
"""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from landscape.errors import LandscapeError

AFFINE = (nn.Linear, nn.Conv1d, nn.Conv2d)


def _layers(model: nn.Module) -> list[str]:
    if not isinstance(model, nn.Sequential):
        raise LandscapeError("--align supports nn.Sequential MLPs and CNNs (Linear/Conv layers) only")
    names = []
    for name, module in model.named_children():
        own = list(module.parameters())
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            raise LandscapeError("--align does not support BatchNorm models (their statistics would need "
                                 "permuting and recalibrating)")
        if own and not isinstance(module, AFFINE):
            raise LandscapeError(f"--align cannot permute layer {name!r} ({type(module).__name__})")
        if own:
            names.append(name)
    if len(names) < 2:
        raise LandscapeError("--align needs at least two Linear/Conv layers (one hidden layer)")
    return names


def _rows(w: torch.Tensor) -> torch.Tensor:
    return w.reshape(w.shape[0], -1)


def _permute_inputs(w: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Permute the input units of a layer's weight (columns; in blocks after a Flatten)."""
    units = perm.numel()
    if w.ndim == 2 and w.shape[1] != units:  # Linear after Flatten of (units, spatial...)
        block = w.shape[1] // units
        return w.reshape(w.shape[0], units, block)[:, perm].reshape(w.shape)
    return w[:, perm]


def weight_matching(model: nn.Module, params_a: dict[str, torch.Tensor], params_b: dict[str, torch.Tensor],
                    max_iter: int = 100, seed: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, list[int]]]:
    """Model B's parameters permuted to match model A's; returns (permuted params, permutation per layer)."""
    layers = _layers(model)
    hidden = layers[:-1]
    sizes = {name: params_a[f"{name}.weight"].shape[0] for name in hidden}
    perms = {name: torch.arange(sizes[name]) for name in hidden}
    gen = torch.Generator().manual_seed(seed)

    def similarity(i: int) -> torch.Tensor:
        name = layers[i]
        wa, wb = params_a[f"{name}.weight"].double(), params_b[f"{name}.weight"].double()
        if i > 0:  # inputs of this layer follow the previous layer's permutation
            wb = _permute_inputs(wb, perms[layers[i - 1]])
        s = _rows(wa) @ _rows(wb).T
        if f"{name}.bias" in params_a:
            s = s + torch.outer(params_a[f"{name}.bias"].double(), params_b[f"{name}.bias"].double())
        nxt = layers[i + 1]
        na, nb = params_a[f"{nxt}.weight"].double(), params_b[f"{nxt}.weight"].double()
        if i + 1 < len(layers) - 1:
            nb = nb[perms[nxt]]
        units = sizes[name]
        na_u = na.reshape(na.shape[0], units, -1).transpose(0, 1).reshape(units, -1)
        nb_u = nb.reshape(nb.shape[0], units, -1).transpose(0, 1).reshape(units, -1)
        return s + na_u @ nb_u.T

    for _ in range(max_iter):
        changed = False
        for i in torch.randperm(len(hidden), generator=gen).tolist():
            s = similarity(i)
            _, cols = linear_sum_assignment(s.numpy(), maximize=True)
            new = torch.as_tensor(cols)
            old_score = float(s[torch.arange(len(new)), perms[hidden[i]]].sum())
            new_score = float(s[torch.arange(len(new)), new].sum())
            if new_score > old_score + 1e-12 * max(1.0, abs(old_score)):
                perms[hidden[i]] = new
                changed = True
        if not changed:
            break
    out = dict(params_b)
    for i, name in enumerate(layers):
        w = params_b[f"{name}.weight"]
        if name in perms:
            w = w[perms[name]]
            if f"{name}.bias" in params_b:
                out[f"{name}.bias"] = params_b[f"{name}.bias"][perms[name]]
        if i > 0:
            w = _permute_inputs(w, perms[layers[i - 1]])
        out[f"{name}.weight"] = w
    return out, {name: p.tolist() for name, p in perms.items()}
