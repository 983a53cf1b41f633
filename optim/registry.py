"""Optimizer registry: ``--optimizer NAME`` to a ``torch.optim.Optimizer`` factory.

Each entry's factory takes ``(params, lr, weight_decay, **options)``; options are checked against
its signature, so ``--set optimizer.momentum=0.95`` works where meaningful and a typo is a clear
error. ``native_weight_decay=False`` marks optimizers without a weight-decay option (L-BFGS):
the training loop then adds the L2 penalty (weight_decay / 2) ||w||^2 to the loss, whose gradient
equals the coupled decay term weight_decay * w of SGD.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import torch

from landscape.errors import LandscapeError
from landscape.options import call_with_options


@dataclass(frozen=True)
class OptimizerEntry:
    name: str
    factory: Callable[..., torch.optim.Optimizer]
    default_lr: float
    summary: str
    native_weight_decay: bool = True


OPTIMIZERS: dict[str, OptimizerEntry] = {}


def register_optimizer(name: str, default_lr: float, summary: str, native_weight_decay: bool = True):
    """Decorator adding a factory ``fn(params, lr, weight_decay, **options)`` to the registry."""

    def wrap(fn: Callable[..., torch.optim.Optimizer]) -> Callable[..., torch.optim.Optimizer]:
        OPTIMIZERS[name] = OptimizerEntry(name, fn, default_lr, summary, native_weight_decay)
        return fn

    return wrap


@register_optimizer("sgd", 0.1, "plain SGD: w <- w - lr g")
def _sgd(params, lr, weight_decay):
    return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)


@register_optimizer("momentum", 0.02, "heavy-ball momentum (Polyak 1964): b <- mu b + g; w <- w - lr b")
def _momentum(params, lr, weight_decay, momentum: float = 0.9, dampening: float = 0.0):
    return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, momentum=momentum, dampening=dampening)


@register_optimizer("nesterov", 0.02, "Nesterov momentum (Sutskever et al. 2013 form): w <- w - lr (g + mu b)")
def _nesterov(params, lr, weight_decay, momentum: float = 0.9):
    return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=True)


@register_optimizer("adagrad", 0.01, "Adagrad (Duchi et al. 2011): G <- G + g^2; w <- w - lr g / (sqrt(G) + eps)")
def _adagrad(params, lr, weight_decay, eps: float = 1e-10, initial_accumulator_value: float = 0.0):
    return torch.optim.Adagrad(params, lr=lr, weight_decay=weight_decay, eps=eps,
                               initial_accumulator_value=initial_accumulator_value)


@register_optimizer("rmsprop", 1e-3, "RMSProp (Tieleman & Hinton 2012): v <- a v + (1-a) g^2; w <- w - lr g / (sqrt(v) + eps)")
def _rmsprop(params, lr, weight_decay, alpha: float = 0.99, eps: float = 1e-8, momentum: float = 0.0,
             centered: bool = False):
    return torch.optim.RMSprop(params, lr=lr, weight_decay=weight_decay, alpha=alpha, eps=eps,
                               momentum=momentum, centered=centered)


@register_optimizer("adam", 1e-3, "Adam (Kingma & Ba 2015) with bias-corrected moments")
def _adam(params, lr, weight_decay, betas: Iterable[float] = (0.9, 0.999), eps: float = 1e-8,
          amsgrad: bool = False):
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, betas=tuple(betas), eps=eps, amsgrad=amsgrad)


@register_optimizer("adamw", 1e-3, "AdamW (Loshchilov & Hutter 2019): Adam with decoupled weight decay")
def _adamw(params, lr, weight_decay, betas: Iterable[float] = (0.9, 0.999), eps: float = 1e-8,
           amsgrad: bool = False):
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=tuple(betas), eps=eps,
                             amsgrad=amsgrad)


@register_optimizer("lbfgs", 1.0, "L-BFGS (Nocedal 1980) with strong-Wolfe line search (torch.optim.LBFGS)",
                    native_weight_decay=False)
def _lbfgs(params, lr, weight_decay, max_iter: int = 20, history_size: int = 10,
           tolerance_grad: float = 1e-7, tolerance_change: float = 1e-9,
           line_search_fn: str | None = "strong_wolfe"):
    del weight_decay  # applied as an L2 term in the loss by the training loop
    return torch.optim.LBFGS(params, lr=lr, max_iter=max_iter, history_size=history_size,
                             tolerance_grad=tolerance_grad, tolerance_change=tolerance_change,
                             line_search_fn=line_search_fn)


def available_optimizers() -> list[str]:
    return sorted(OPTIMIZERS)


def get_entry(name: str) -> OptimizerEntry:
    try:
        return OPTIMIZERS[name]
    except KeyError:
        raise LandscapeError(f"unknown optimizer {name!r}; choose from {', '.join(available_optimizers())}") from None


def build_optimizer(spec: Mapping[str, Any], params) -> torch.optim.Optimizer:
    """``{"name": "adam", "lr": 1e-3, "weight_decay": 0, **options}`` -> optimizer over ``params``."""
    options = dict(spec)
    entry = get_entry(options.pop("name"))
    lr = options.pop("lr", None)
    lr = entry.default_lr if lr is None else lr
    weight_decay = options.pop("weight_decay", 0.0) or 0.0
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not lr > 0 or lr != lr or lr == float("inf"):
        raise LandscapeError(f"learning rate must be a positive number, got {lr!r}")
    if not isinstance(weight_decay, (int, float)) or weight_decay < 0:
        raise LandscapeError(f"weight decay must be a non-negative number, got {weight_decay!r}")
    return call_with_options(entry.factory, f"optimizer {entry.name!r}", options, params=params, lr=float(lr),
                             weight_decay=float(weight_decay))
