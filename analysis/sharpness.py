"""Sharpness and flatness measures of a minimum, each as defined by its source.

All act on an :class:`landscape.objective.Objective` (the mean loss L over a data set as a function
of the flat parameter vector w; evaluation mode) and return plain floats or small dicts.

- :func:`keskar_sharpness` (Keskar et al. 2017, "On large-batch training ...", Sec. 2.2.2):
  phi = 100 (max_{y in C} f(w + A y) - f(w)) / (1 + f(w)), C the box |y_i| <= eps (|(A^+ w)_i| + 1),
  A = I (full space) or a random n x p Gaussian matrix; maximised with L-BFGS-B (their code: 10 iterations)
  from a seeded uniform point of the box.
- :func:`sam_sharpness` (Foret et al. 2021): max_{||d|| <= rho} L(w + d) - L(w), by one normalised
  gradient-ascent step d = rho g / ||g|| or by ``steps`` projected ascent steps; ``m``-sharpness
  averages the sharpness of m-sample chunks of the data, each maximised on its own chunk.
- :func:`adaptive_sharpness` (Kwon et al. 2021, ASAM; Andriushchenko et al. 2023): with T = |w| + eta
  elementwise, worst case max_{||d / T|| <= rho} L(w + d) - L(w) (one step: d = rho T^2 g / ||T g||, or
  projected ascent), and average case E_z L(w + rho T z) - L(w), z ~ N(0, I / n) (so E ||d / T||^2 = rho^2).
- :func:`hessian_measures`: lambda_max (Lanczos), trace (control variate / Hutch++), ||H||_F^2
  (Hutchinson), log|det(H + shift I)| = n E_v[sum_j tau_j^2 log|theta_j + shift|] by stochastic Lanczos
  quadrature (Ubaru, Chen & Saad 2017).
- :func:`pac_bayes_flatness` (Jiang et al. 2020, "Fantastic generalization measures", Sec. 5): the
  largest sigma with E_u L(w + u) - L(w) <= ``threshold`` (or the same on the error), u ~ N(0, sigma^2 I),
  or magnitude-aware u_i ~ N(0, sigma^2 w_i^2 + eps^2); bisection with seeded Monte Carlo. The
  measure Jiang et al. correlate is 1 / sigma^2.
- :func:`fisher_rao_norm` (Liang et al. 2019, as in Jiang et al.): E_n <w, grad_w l_n(w)>^2, from one
  forward-mode pass (the per-sample directional derivatives along w).
- :func:`local_entropy` (Chaudhari et al. 2017's local-entropy proxy, as in Jiang et al.):
  E_{u ~ N(0, sigma^2 I)} L(w + u) for several sigma (as one number: minus L(w), at one sigma).

:func:`measure_all` computes a list of them by name (``MEASURES``); it is what
``landscape analyze --sharpness`` and ``landscape study --measures`` call.
- :func:`dinh_rescale`: Dinh et al. 2017's reparameterisation of a ReLU network, layer l times alpha and
  layer l + 1 times 1 / alpha, which leaves the function unchanged.
"""

from __future__ import annotations

import copy
import math
from typing import Callable

import numpy as np
import torch
from scipy.optimize import minimize
from torch import nn
from torch.func import jvp

from landscape.errors import LandscapeError
from landscape.linalg import estimate_trace, hutchinson
from landscape.linalg.lanczos import lanczos
from landscape.linalg.operators import HessianOperator
from landscape.linalg.slq import slq
from landscape.losses import per_sample
from landscape.objective import Objective

MEASURES = ("keskar", "keskar-subspace", "sam", "sam-multistep", "adaptive-worst", "adaptive-average",
            "lambda-max", "trace", "frobenius", "logdet", "pac-bayes", "pac-bayes-magnitude", "fisher-rao",
            "local-entropy")


def measure_names(names) -> tuple[str, ...]:
    """The measures named in ``names`` (blank entries dropped; ``all`` alone: every measure); an unknown
    name is an error."""
    names = tuple(n.strip() for n in names if n.strip())
    if names == ("all",):
        return MEASURES
    unknown = [n for n in names if n not in MEASURES]
    if unknown:
        raise LandscapeError(f"unknown sharpness measure {unknown[0]!r}; choose from {', '.join(MEASURES)} or all")
    return names


# --- evaluation at perturbed points ---------------------------------------------------------------------------
def loss_at(obj: Objective, w: torch.Tensor) -> float:
    return obj.value(w)


def error_at(obj: Objective, w: torch.Tensor) -> float:
    theta = obj.layout.unflatten(w)
    wrong = 0
    with torch.no_grad():
        for x, y in obj.batches:
            wrong += int((obj.output(theta, x).argmax(-1) != y).sum())
    return obj.reduce_scalar(float(wrong)) / obj.num_samples


def loss_and_grad_at(obj: Objective, w: torch.Tensor) -> tuple[float, torch.Tensor]:
    return obj.value_and_gradient(w.detach())


# --- Keskar ---------------------------------------------------------------------------------------------------
def keskar_sharpness(obj: Objective, eps: float = 1e-3, subspace: int | None = None, max_iter: int = 10,
                     seed: int = 0) -> dict[str, float]:
    """phi_{w,f}(eps, A) in percent (see the module docstring); ``subspace`` p gives A random n x p."""
    w = obj.point().detach()
    f0 = loss_at(obj, w)
    if subspace is None:
        a = None
        center = w.double().cpu().numpy()
    else:
        gen = torch.Generator().manual_seed(seed)
        a = torch.randn(w.numel(), subspace, generator=gen, dtype=torch.float64).to(w.device)
        center = torch.linalg.lstsq(a, w.double()[:, None]).solution[:, 0].cpu().numpy()  # A^+ w
    radius = eps * (np.abs(center) + 1.0)
    dtype = w.dtype

    def perturbation(y: np.ndarray) -> torch.Tensor:
        y_t = torch.as_tensor(y, dtype=torch.float64, device=w.device)
        return (y_t if a is None else a @ y_t).to(dtype)

    def negative(y: np.ndarray) -> tuple[float, np.ndarray]:
        value, grad = loss_and_grad_at(obj, w + perturbation(y))
        g = grad.double()
        g = g if a is None else a.T @ g
        return -value, -g.cpu().numpy()

    # start at a seeded uniform point of the box: at a minimum the gradient vanishes and L-BFGS-B would stop
    y0 = np.random.default_rng(seed).uniform(-radius, radius)
    res = minimize(negative, y0, jac=True, method="L-BFGS-B", bounds=list(zip(-radius, radius)),
                   options={"maxiter": max_iter})
    fmax = max(-float(res.fun), f0)
    return {"sharpness": 100.0 * (fmax - f0) / (1.0 + f0), "max_loss": fmax, "loss": f0, "iterations": int(res.nit),
            "evaluations": int(res.nfev)}


# --- SAM and adaptive sharpness -------------------------------------------------------------------------------
def _ascent(obj: Objective, rho: float, steps: int, scale: torch.Tensor | None) -> tuple[float, float]:
    """max over ||d / scale|| <= rho of L(w + d) (approximately), returned with L(w)."""
    w = obj.point().detach()
    t = torch.ones_like(w) if scale is None else scale
    f0, g = loss_and_grad_at(obj, w)
    if steps <= 1:
        tg = t * g
        norm = tg.norm()
        if not norm > 0:
            return f0, f0
        return loss_at(obj, w + rho * t * tg / norm), f0
    u = torch.zeros_like(w)  # d = t * u with ||u|| <= rho
    best = f0
    step = 2.0 * rho / steps
    for _ in range(steps):
        value, grad = loss_and_grad_at(obj, w + t * u)
        best = max(best, value)
        gu = t * grad  # gradient with respect to u
        norm = gu.norm()
        if not norm > 0:
            break
        u = u + step * gu / norm
        if u.norm() > rho:
            u = u * (rho / u.norm())
    best = max(best, loss_at(obj, w + t * u))
    return best, f0


def _chunks(obj: Objective, m: int | None) -> list[Objective]:
    if m is None:
        return [obj]
    if obj.sharded:
        raise LandscapeError("m-sharpness does not run on data shared by several processes; run it as one process")
    if obj.num_samples < m:
        raise LandscapeError(f"m-sharpness needs at least m = {m} samples")
    return obj.groups(m)


def sam_sharpness(obj: Objective, rho: float = 0.05, steps: int = 1, m: int | None = None) -> float:
    """SAM sharpness (module docstring); with ``m`` the mean over m-sample chunks (m-sharpness)."""
    values = []
    for part in _chunks(obj, m):
        top, f0 = _ascent(part, rho, steps, None)
        values.append(top - f0)
    return float(np.mean(values))


def adaptive_sharpness(obj: Objective, rho: float = 0.5, eta: float = 0.01, kind: str = "worst", steps: int = 1,
                       samples: int = 20, seed: int = 0) -> float:
    """ASAM-scaled sharpness, worst or average case (module docstring)."""
    w = obj.point().detach()
    t = w.abs() + eta
    if kind == "worst":
        top, f0 = _ascent(obj, rho, steps, t)
        return top - f0
    if kind != "average":
        raise LandscapeError(f"adaptive sharpness kind must be worst or average, got {kind!r}")
    return _noisy_mean(obj, w, rho * t / math.sqrt(w.numel()), samples, seed, loss_at) - loss_at(obj, w)


# --- Hessian measures -----------------------------------------------------------------------------------------
def hessian_measures(obj: Objective, which: tuple[str, ...] = ("lambda-max", "trace", "frobenius", "logdet"),
                     seed: int = 0, logdet_shift: float = 0.0, slq_runs: int = 10, slq_steps: int = 80) -> dict:
    op = HessianOperator(obj)
    out: dict[str, float] = {}
    if "lambda-max" in which:
        out["lambda_max"] = float(lanczos(op, k=1, which="LA", tol=1e-5, seed=seed).eigenvalues[0])
    if "trace" in which:
        out["trace"] = float(estimate_trace(op, rtol=1e-2, seed=seed).estimate)
    if "frobenius" in which:
        out["frobenius_squared"] = float(hutchinson(op, rtol=1e-2, seed=seed + 1, frobenius=True).frobenius.estimate)
    if "logdet" in which:
        density = slq(op, num_runs=slq_runs, num_steps=slq_steps, seed=seed + 2)
        logs = np.log(np.maximum(np.abs(density.nodes + logdet_shift), 1e-300))
        out["logdet"] = float(op.shape[0] * np.mean(np.sum(density.weights * logs, axis=1)))
    return out


# --- PAC-Bayes flatness and noise-based measures ------------------------------------------------------------
def _noisy_mean(obj: Objective, w: torch.Tensor, std: torch.Tensor, samples: int, seed: int,
                metric: Callable[[Objective, torch.Tensor], float]) -> float:
    gen = torch.Generator().manual_seed(seed)
    return float(np.mean([metric(obj, w + std * torch.randn(w.numel(), generator=gen, dtype=torch.float64).to(w))
                          for _ in range(samples)]))


def pac_bayes_flatness(obj: Objective, threshold: float = 0.1, magnitude_aware: bool = False, target: str = "loss",
                       samples: int = 20, seed: int = 0, max_sigma: float = 10.0, iterations: int = 20,
                       eps: float = 1e-3) -> dict[str, float]:
    """The largest sigma whose Gaussian perturbation raises the mean ``target`` (loss or error) by at most
    ``threshold``; bisection on [0, max_sigma] with the same seeded noise at every sigma."""
    if target not in ("loss", "error"):
        raise LandscapeError(f"PAC-Bayes target must be loss or error, got {target!r}")
    metric = loss_at if target == "loss" else error_at
    w = obj.point().detach()
    base = metric(obj, w)
    lo, hi = 0.0, max_sigma

    def std(sigma: float) -> torch.Tensor:
        if magnitude_aware:
            return torch.sqrt(sigma ** 2 * w.pow(2) + eps ** 2)
        return torch.full_like(w, sigma)

    if _noisy_mean(obj, w, std(hi), samples, seed, metric) - base <= threshold:
        return {"sigma": hi, "measure": 1.0 / hi ** 2, "saturated": True}
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        if _noisy_mean(obj, w, std(mid), samples, seed, metric) - base <= threshold:
            lo = mid
        else:
            hi = mid
    sigma = 0.5 * (lo + hi)
    return {"sigma": sigma, "measure": 1.0 / sigma ** 2 if sigma > 0 else math.inf, "saturated": False}


def local_entropy(obj: Objective, sigmas: tuple[float, ...] = (1e-3, 1e-2, 1e-1), samples: int = 20,
                  seed: int = 0) -> dict[str, float]:
    w = obj.point().detach()
    return {f"{s:g}": _noisy_mean(obj, w, torch.full_like(w, s), samples, seed, loss_at) for s in sigmas}


def fisher_rao_norm(obj: Objective) -> float:
    """E_n <w, grad l_n(w)>^2 (module docstring), one jvp per batch."""
    total = 0.0
    for x, y in obj.batches:
        def per(theta):
            return per_sample(obj.loss_name, obj.output(theta, x), y)

        with obj.transformable():
            _, directional = jvp(per, (obj.theta,), (obj.theta,))
        total += float(directional.double().pow(2).sum())
    return obj.reduce_scalar(total) / obj.num_samples


# --- Dinh et al. reparameterisation ----------------------------------------------------------------------------
def dinh_rescale(model: nn.Module, alpha: float, layer: int = 0) -> nn.Module:
    """A copy of a Sequential ReLU network with Linear/Conv layer ``layer`` (weight and bias) times alpha
    and the next one's weight times 1 / alpha: the same function (ReLU is positively homogeneous)."""
    if not alpha > 0:
        raise LandscapeError("the rescaling factor alpha must be positive")
    out = copy.deepcopy(model)
    layers = [m for m in out.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]
    if len(layers) < layer + 2:
        raise LandscapeError("Dinh rescaling needs two consecutive Linear/Conv layers")
    acts = [m for m in out.modules() if isinstance(m, (nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.ELU,
                                                       nn.modules.batchnorm._BatchNorm))]
    if acts:
        raise LandscapeError("Dinh rescaling leaves the function unchanged only for ReLU networks without BatchNorm")
    with torch.no_grad():
        layers[layer].weight.mul_(alpha)
        if layers[layer].bias is not None:
            layers[layer].bias.mul_(alpha)
        layers[layer + 1].weight.div_(alpha)
    return out



# --- all measures of a checkpoint -------------------------------------------------------------------------------
def measure_all(obj: Objective, names: list[str], *, eps: float = 1e-3, rho: float = 0.05, adaptive_rho: float = 0.5,
                subspace: int = 100, sigma: float = 0.01, threshold: float = 0.1, samples: int = 20,
                seed: int = 0, m: int | None = None) -> tuple[dict[str, float], dict[str, object]]:
    """(one number per measure, details) for the measures ``names`` (see MEASURES); ``m`` makes the SAM
    measures m-sharpness."""
    names = measure_names(names)
    values: dict[str, float] = {}
    details: dict[str, object] = {}
    hess = [n for n in names if n in ("lambda-max", "trace", "frobenius", "logdet")]
    if hess:
        h = hessian_measures(obj, tuple(hess), seed=seed)
        key = {"lambda-max": "lambda_max", "trace": "trace", "frobenius": "frobenius_squared", "logdet": "logdet"}
        values.update({n: h[key[n]] for n in hess})
    for name in names:
        if name in ("keskar", "keskar-subspace"):
            out = keskar_sharpness(obj, eps=eps, subspace=subspace if name == "keskar-subspace" else None, seed=seed)
            values[name], details[name] = out["sharpness"], out
        elif name == "sam":
            values[name] = sam_sharpness(obj, rho, m=m)
        elif name == "sam-multistep":
            values[name] = sam_sharpness(obj, rho, steps=10, m=m)
        elif name in ("adaptive-worst", "adaptive-average"):
            values[name] = adaptive_sharpness(obj, adaptive_rho, kind=name.split("-")[1], samples=samples, seed=seed)
        elif name in ("pac-bayes", "pac-bayes-magnitude"):
            out = pac_bayes_flatness(obj, threshold=threshold, magnitude_aware=name.endswith("magnitude"),
                                     samples=samples, seed=seed)
            values[name], details[name] = out["measure"], out
        elif name == "fisher-rao":
            values[name] = fisher_rao_norm(obj)
        elif name == "local-entropy":
            values[name] = local_entropy(obj, (sigma,), samples, seed)[f"{sigma:g}"] - loss_at(obj, obj.point())
    return values, details
