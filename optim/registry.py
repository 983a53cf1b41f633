"""Optimizer registry: ``--optimizer NAME`` to a ``torch.optim.Optimizer``, built by one factory.

``build_optimizer(spec, params, model=model, loss=loss)`` builds every entry: its factory is called with
``params``, ``model``, ``loss``, ``lr``, ``weight_decay`` and ``decoupled_weight_decay``, each passed where
the factory names it (first-order methods take no model), and the spec's other options, checked against
its signature, so ``--set optimizer.momentum=0.95`` works where meaningful and a typo is a clear error.
Every optimizer is then stepped with the mini-batch's :class:`~landscape.optim.Closure`.

Weight decay has two names, meaning the same wherever they are accepted:

- ``weight_decay``: coupled L2, the term (weight_decay / 2) ||w||^2 of the loss; its gradient
  weight_decay * w is added to the gradient (torch's SGD, Adam, ... ``weight_decay``), line searches see
  its value (L-BFGS, BFGS, CG) and curvature methods its curvature weight_decay * I. Every optimizer but
  AdamW accepts it.
- ``decoupled_weight_decay``: decoupled_weight_decay * w added to the step after the preconditioner,
  unseen by the gradient statistics and the curvature (Loshchilov & Hutter 2019): adamw (torch's AdamW
  ``weight_decay``), adahessian, kfac. Before this name existed those three called it ``weight_decay``;
  stored runs are read with the old meaning (:func:`landscape.optim.config.resume_config`).

Optimizer classes whose constructor takes (params[, model, loss], lr, ..., weight_decay) are registered
as they are: their signature is the option list. Wrappers compose by name: ``lookahead:adam``, ``polyak:sgd``,
``sam:momentum``, even ``lookahead:sam:sgd``. Options are flat: those the wrapper accepts (k, alpha, rho, ...)
go to it, the rest to the inner optimizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import torch

from landscape.errors import LandscapeError
from landscape.options import accepted_options, call_with_options

from .adahessian import AdaHessian
from .averaging import IterateAveraging
from .barzilai_borwein import BarzilaiBorwein
from .bfgs import BFGS
from .conjugate_gradient import NonlinearCG
from .curveball import CurveBall
from .delta_bar_delta import DeltaBarDelta
from .gauss_newton import GaussNewton, LevenbergMarquardt
from .hessian_free import HessianFree
from .kfac import KFAC
from .lbfgs import LBFGS
from .lookahead import Lookahead
from .newton import Newton, NewtonCG
from .parabola import ParabolaStep
from .saddle_free import SaddleFreeNewton
from .sam import SAM


@dataclass(frozen=True)
class OptimizerEntry:
    """A registered optimizer: its ``factory`` (called by :func:`build_optimizer`), default learning rate,
    one-line summary (the update rule and its source), and whether it re-evaluates the loss inside ``step``
    (``needs_closure``: line searches, curvature methods) or evaluates the model itself (``needs_model``:
    curvature methods, which cannot run under torchrun or bf16)."""

    name: str
    factory: Callable[..., torch.optim.Optimizer]
    default_lr: float
    summary: str
    needs_closure: bool = False
    needs_model: bool = False


@dataclass(frozen=True)
class WrapperEntry:
    """A registered wrapper, used as ``NAME:INNER``: ``factory(inner, **options)``; ``first_order_inner``:
    the wrapper computes the gradients itself (SAM) and wraps first-order optimizers only."""

    name: str
    factory: Callable[..., torch.optim.Optimizer]  # fn(inner, **options)
    summary: str
    first_order_inner: bool = False


OPTIMIZERS: dict[str, OptimizerEntry] = {}
WRAPPERS: dict[str, WrapperEntry] = {}


def register_optimizer(name: str, default_lr: float, summary: str, needs_closure: bool = False,
                       needs_model: bool = False):
    """Decorator adding a factory ``fn(params, [model, loss,] lr, weight_decay, **options)`` to the registry
    (module docstring)."""

    def wrap(fn: Callable[..., torch.optim.Optimizer]) -> Callable[..., torch.optim.Optimizer]:
        OPTIMIZERS[name] = OptimizerEntry(name, fn, default_lr, summary, needs_closure, needs_model)
        return fn

    return wrap


def register_wrapper(name: str, summary: str, first_order_inner: bool = False):
    """Decorator adding a wrapper factory ``fn(inner, **options)``, used as ``NAME:INNER``."""

    def wrap(fn: Callable[..., torch.optim.Optimizer]) -> Callable[..., torch.optim.Optimizer]:
        WRAPPERS[name] = WrapperEntry(name, fn, summary, first_order_inner)
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


@register_optimizer("adamw", 1e-3, "AdamW (Loshchilov & Hutter 2019): Adam with decoupled_weight_decay")
def _adamw(params, lr, weight_decay, decoupled_weight_decay, betas: Iterable[float] = (0.9, 0.999),
           eps: float = 1e-8, amsgrad: bool = False):
    if weight_decay:
        raise LandscapeError("adamw's decay is decoupled_weight_decay (--set optimizer.decoupled_weight_decay=...); "
                             "weight_decay, the coupled L2 term, is adam's")
    return torch.optim.AdamW(params, lr=lr, weight_decay=decoupled_weight_decay, betas=tuple(betas), eps=eps,
                             amsgrad=amsgrad)


register_optimizer("delta-bar-delta", 0.01, "delta-bar-delta (Jacobs 1988): per-weight gains, +kappa on sign "
                    "agreement with the averaged gradient, x(1-phi) on disagreement")(DeltaBarDelta)


register_optimizer("bb", 0.01, "SGD with a Barzilai-Borwein step per epoch (Tan et al. 2016; lr = tau_0)")(BarzilaiBorwein)


register_optimizer("parabola", 0.01,
                   "momentum with the step along it from an online parabola model (Duda 2019)")(ParabolaStep)


@register_optimizer("cg-fr", 1.0, "nonlinear conjugate gradient, Fletcher-Reeves, strong-Wolfe line search",
                    needs_closure=True)
def _cg_fr(params, lr, weight_decay, c1: float = 1e-4, c2: float = 0.1, restart_every: int | None = None,
           max_evaluations: int = 25):
    return NonlinearCG(params, lr=lr, variant="fr", c1=c1, c2=c2, restart_every=restart_every,
                       max_evaluations=max_evaluations, weight_decay=weight_decay)


@register_optimizer("cg-pr", 1.0, "nonlinear conjugate gradient, Polak-Ribiere+ (variant='pr' for plain PR)",
                    needs_closure=True)
def _cg_pr(params, lr, weight_decay, variant: str = "pr+", c1: float = 1e-4, c2: float = 0.1,
           restart_every: int | None = None, max_evaluations: int = 25):
    if variant not in ("pr", "pr+"):
        raise ValueError("cg-pr variant must be 'pr' or 'pr+'")
    return NonlinearCG(params, lr=lr, variant=variant, c1=c1, c2=c2, restart_every=restart_every,
                       max_evaluations=max_evaluations, weight_decay=weight_decay)


register_optimizer("bfgs", 1.0, "BFGS, dense inverse Hessian, strong-Wolfe line search (small models)",
                   needs_closure=True)(BFGS)


@register_optimizer("lbfgs", 1.0, "L-BFGS (Nocedal 1980) with strong-Wolfe line search (torch.optim.LBFGS)",
                    needs_closure=True)
def _lbfgs(params, lr, weight_decay, max_iter: int = 20, max_eval: int | None = None, history_size: int = 10,
           tolerance_grad: float = 1e-7, tolerance_change: float = 1e-9,
           line_search_fn: str | None = "strong_wolfe"):
    """``max_eval`` defaults to torch's max_iter * 5 // 4, except for max_iter < 4, where that leaves the
    line search no evaluation at all (torch then never moves); there it is max_iter + 25."""
    if max_eval is None and max_iter < 4:
        max_eval = max_iter + 25
    return LBFGS(params, lr=lr, max_iter=max_iter, max_eval=max_eval, history_size=history_size,
                 tolerance_grad=tolerance_grad, tolerance_change=tolerance_change, line_search_fn=line_search_fn,
                 weight_decay=weight_decay)


register_optimizer("curveball", 1.0, "CurveBall (Henriques et al. 2019): z <- rho z - beta ((G + lambda I) z + g), "
                    "w <- w + z, automatic rho, beta, lambda", needs_closure=True, needs_model=True)(CurveBall)


register_optimizer("adahessian", 0.15, "AdaHessian (Yao et al. 2021): Adam on a Rademacher-Hutchinson Hessian "
                    "diagonal, spatially averaged; the paper's decay is decoupled_weight_decay", needs_closure=True, needs_model=True)(AdaHessian)


register_optimizer("newton", 1.0, "Newton with the dense Hessian made positive definite (eigenvalue or Cholesky "
                    "modification) and a strong-Wolfe line search (small models)", needs_closure=True, needs_model=True)(Newton)


register_optimizer("newton-cg", 1.0, "line-search Newton-CG on the exact Hessian, stopped at negative curvature",
                    needs_closure=True, needs_model=True)(NewtonCG)


register_optimizer("hessian-free", 1.0, "Hessian-free (Martens 2010): truncated CG on the damped Gauss-Newton "
                    "matrix, warm starts, CG backtracking, Levenberg-Marquardt damping", needs_closure=True,
                    needs_model=True)(HessianFree)


register_optimizer("gauss-newton", 1.0, "Gauss-Newton step -(G + eps I)^-1 g with backtracking",
                    needs_closure=True, needs_model=True)(GaussNewton)


register_optimizer("levenberg-marquardt", 1.0, "Levenberg-Marquardt on the Gauss-Newton matrix, damping from the "
                    "reduction ratio (identity or diag(G) scaling)", needs_closure=True, needs_model=True)(LevenbergMarquardt)


register_optimizer("saddle-free-newton", 1.0, "saddle-free Newton (Dauphin et al. 2014): |H|^-1 g in a Lanczos "
                    "Krylov subspace", needs_closure=True, needs_model=True)(SaddleFreeNewton)


register_optimizer("kfac", 0.01, "K-FAC (Martens & Grosse 2015; KFC for convolutions): Kronecker-factored Fisher "
                    "with factored Tikhonov damping, momentum; decoupled_weight_decay added to the preconditioned step", needs_closure=True, needs_model=True)(KFAC)


register_wrapper("lookahead", "Lookahead (Zhang et al. 2019): every k steps, slow += alpha (fast - slow)")(Lookahead)


register_wrapper("polyak", "iterate averaging: uniform Polyak-Ruppert (decay unset) or EMA (decay), "
                  "swapped in for evaluation")(IterateAveraging)


@register_wrapper("sam", "SAM (Foret et al. 2021): gradient at w + rho g/||g||; m-sharpness with m",
                  first_order_inner=True)
def _sam(inner, rho: float = 0.05, m: int | None = None):
    return SAM(inner, rho=rho, m=m)


@register_wrapper("asam", "adaptive SAM (Kwon et al. 2021): perturbation scaled by |w| + eta",
                  first_order_inner=True)
def _asam(inner, rho: float = 0.5, eta: float = 0.01, m: int | None = None):
    return SAM(inner, rho=rho, adaptive=True, eta=eta, m=m)


def available_optimizers() -> list[str]:
    return sorted(OPTIMIZERS)


def available_wrappers() -> list[str]:
    return sorted(WRAPPERS)


def _unknown(name: str) -> LandscapeError:
    wrappers = ", ".join(f"{w}:INNER" for w in available_wrappers())
    return LandscapeError(f"unknown optimizer {name!r}; choose from {', '.join(available_optimizers())}, "
                          f"or wrap one: {wrappers}")


def get_entry(name: str) -> OptimizerEntry:
    """The entry of a base optimizer, or of a wrapped one (``lookahead:adam``: the inner entry's
    learning-rate default and closure needs)."""
    if not isinstance(name, str):
        raise _unknown(repr(name))
    head, colon, rest = name.partition(":")
    if not colon:
        if name not in OPTIMIZERS:
            raise _unknown(name)
        return OPTIMIZERS[name]
    if head not in WRAPPERS:
        raise _unknown(name)
    inner = get_entry(rest)
    if WRAPPERS[head].first_order_inner and inner.needs_closure:
        raise LandscapeError(f"{head} computes the gradients itself and wraps first-order optimizers; "
                             f"{rest!r} runs its own line search")
    return OptimizerEntry(name, inner.factory, inner.default_lr, f"{head} around {rest}", inner.needs_closure,
                          inner.needs_model)


def has_decoupled_weight_decay(name: str) -> bool:
    """Whether optimizer ``name`` (or the one a wrapper wraps) offers ``decoupled_weight_decay``."""
    return "decoupled_weight_decay" in (accepted_options(get_entry(name).factory) or ())


def _decay(options: dict[str, Any], key: str) -> float:
    value = options.pop(key, 0.0) or 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or value == float("inf"):
        raise LandscapeError(f"{key.replace('_', ' ')} must be a non-negative number, got {value!r}")
    return float(value)


def build_optimizer(spec: Mapping[str, Any], params, *, model: torch.nn.Module | None = None,
                    loss: str | None = None) -> torch.optim.Optimizer:
    """``{"name": "adam", "lr": 1e-3, "weight_decay": 0, **options}`` -> the optimizer of ``params``.

    The one factory of every registry optimizer (module docstring): curvature methods (CurveBall, Newton,
    ...) also need the ``model`` the parameters belong to and the ``loss`` name, and optimize ``params``
    only (a subset of the model's parameters is honoured: the others are held fixed). For
    ``WRAPPER:INNER`` names the options the wrapper's factory accepts go to the wrapper, the others to
    the inner optimizer.
    """
    options = dict(spec)
    name = options.pop("name")
    entry = get_entry(name)
    lr = options.pop("lr", None)
    lr = entry.default_lr if lr is None else lr
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not lr > 0 or lr != lr or lr == float("inf"):
        raise LandscapeError(f"learning rate must be a positive number, got {lr!r}")
    decay = {"weight_decay": _decay(options, "weight_decay"),
             "decoupled_weight_decay": _decay(options, "decoupled_weight_decay")}
    if decay["decoupled_weight_decay"] and not has_decoupled_weight_decay(name):
        offered = ", ".join(n for n in available_optimizers() if has_decoupled_weight_decay(n))
        raise LandscapeError(f"optimizer {name!r} has no decoupled_weight_decay (its weight_decay is the coupled "
                             f"L2 term); optimizers with one: {offered}")
    if entry.needs_model and (model is None or loss is None):
        raise LandscapeError(f"optimizer {name!r} uses the loss as a function of the parameters: "
                             "build it with build_optimizer(spec, params, model=model, loss=loss_name)")
    fixed = {"model": model, "loss": loss, "lr": float(lr), **decay}
    return _build(name, options, list(params), fixed)


def _build(name: str, options: dict[str, Any], params: list, fixed: dict[str, Any]) -> torch.optim.Optimizer:
    head, colon, rest = name.partition(":")
    if not colon:
        entry = OPTIMIZERS[name]
        return call_with_options(entry.factory, f"optimizer {name!r}", options, params=params, **fixed)
    wrapper = WRAPPERS[head]
    own = set(accepted_options(wrapper.factory, ("inner",)) or ())
    inner = _build(rest, {k: v for k, v in options.items() if k not in own}, params, fixed)
    return call_with_options(wrapper.factory, f"optimizer wrapper {head!r}",
                             {k: v for k, v in options.items() if k in own}, inner=inner)
