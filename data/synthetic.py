"""Synthetic problems with known answers.

Each returns a :class:`Dataset` whose ``meta`` records the facts tests and benchmarks check against
(minimiser, spectrum, generating matrix) and a ``default_model`` spec that fits the problem.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .dataset import Dataset


def _orthogonal(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """A ``rows x cols`` matrix with orthonormal columns (Haar-distributed, QR with sign fix)."""
    q, r = np.linalg.qr(rng.standard_normal((rows, cols)))
    return q * np.sign(np.diag(r))


def _t(array: np.ndarray, dtype=torch.float32) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).to(dtype)


def load_rosenbrock(noise: tuple[float, float] | list[float] = (1.0, 1.0), train_samples: int = 10000,
                    seed: int = 0) -> Dataset:
    """Stochastic Rosenbrock function (Yang & Deb 2010; CurveBall paper eq. 19).

    R(u, v) = (1 - u)^2 + 100 eps (v - u^2)^2 with eps ~ U[a, b] drawn per evaluation;
    ``noise=(1, 1)`` is the deterministic function. Each training "sample" is one noise draw eps_i,
    so a batch of size 1 sees a fresh draw every step. The ``rosenbrock`` model maps eps to the
    residuals r = (1 - u, 10 sqrt(eps) (v - u^2)) and the ``sum_squares`` loss gives R exactly.
    The test split is the single deterministic point eps = 1. Minimum R = 0 at (1, 1).
    """
    a, b = (float(v) for v in noise)
    if not (0.0 <= a <= b):
        raise ValueError(f"noise must be [a, b] with 0 <= a <= b, got {list(noise)}")
    rng = np.random.default_rng(seed)
    eps = rng.uniform(a, b, size=(int(train_samples), 1)) if b > a else np.full((int(train_samples), 1), a)
    return Dataset("rosenbrock", _t(eps), torch.zeros(int(train_samples), 2), torch.ones(1, 1), torch.zeros(1, 2),
                   task="regression", loss="sum_squares",
                   meta={"noise": [a, b], "minimizer": [1.0, 1.0], "minimum": 0.0,
                         "default_model": {"name": "rosenbrock"}})


def load_beale(noise: tuple[float, float] | list[float] = (1.0, 1.0), train_samples: int = 10000,
               seed: int = 0) -> Dataset:
    """Noisy Beale function: B(x, y) = sum_i eps_i (c_i - x + x y^i)^2, i = 1..3, with
    (c_1, c_2, c_3) = (1.5, 2.25, 2.625) and eps_i ~ U[a, b] drawn per evaluation and term.

    ``noise=(1, 1)`` is Beale's deterministic function (minimum 0 at (3, 0.5)); any noise keeps that
    minimiser since every term vanishes there. As for ``rosenbrock``, each training sample is one
    draw (eps_1, eps_2, eps_3), the ``beale`` model returns the residuals sqrt(eps_i) (c_i - x + x y^i)
    and the ``sum_squares`` loss gives B; the test split is the deterministic point eps = (1, 1, 1).
    """
    a, b = (float(v) for v in noise)
    if not (0.0 <= a <= b):
        raise ValueError(f"noise must be [a, b] with 0 <= a <= b, got {list(noise)}")
    rng = np.random.default_rng(seed)
    n = int(train_samples)
    eps = rng.uniform(a, b, size=(n, 3)) if b > a else np.full((n, 3), a)
    return Dataset("beale", _t(eps), torch.zeros(n, 3), torch.ones(1, 3), torch.zeros(1, 3),
                   task="regression", loss="sum_squares",
                   meta={"noise": [a, b], "minimizer": [3.0, 0.5], "minimum": 0.0,
                         "default_model": {"name": "beale"}})


def load_rahimi_recht(dim: int = 6, condition: float = 1e5, train_samples: int = 1000, test_samples: int = 200,
                      seed: int = 0) -> Dataset:
    """Rahimi & Recht (2017) ill-conditioned linear regression y = A x for a two-layer linear network.

    A = U diag(s) V^T with singular values log-spaced from 1 down to 1/condition, x ~ N(0, I).
    The minimum of the MSE is 0 (any factorisation W2 W1 = A).
    """
    if condition < 1:
        raise ValueError("condition must be >= 1")
    rng = np.random.default_rng(seed)
    s = np.logspace(0.0, -math.log10(condition), dim)
    a = _orthogonal(rng, dim, dim) @ np.diag(s) @ _orthogonal(rng, dim, dim).T
    x = rng.standard_normal((train_samples, dim))
    xt = rng.standard_normal((test_samples, dim))
    return Dataset("rahimi-recht", _t(x), _t(x @ a.T), _t(xt), _t(xt @ a.T), task="regression", loss="mse",
                   meta={"A": a.tolist(), "condition": condition, "minimum": 0.0,
                         "default_model": {"name": "linear2", "hidden": dim}})


def load_quadratic(dim: int = 20, condition: float = 100.0, spectrum: list[float] | None = None,
                   train_samples: int | None = None, test_samples: int = 200, seed: int = 0) -> Dataset:
    """Least squares whose Hessian has exactly the given spectrum.

    With X = sqrt(N/2) U diag(sqrt(lambda)) Q^T (U with orthonormal columns) and the MSE loss
    L(w) = (1/N) sum_n (x_n . w - y_n)^2 of a bias-free linear model, the Hessian is
    (2/N) X^T X = Q diag(lambda) Q^T for every w. Targets y = X w* make w* the minimiser with
    L(w*) = 0. Default spectrum: ``dim`` values log-spaced from 1 to ``condition``.
    """
    if spectrum is None:
        lam = np.logspace(0.0, math.log10(condition), dim)
    else:
        lam = np.asarray(spectrum, dtype=np.float64)
        dim = lam.size
    if lam.ndim != 1 or lam.size == 0:
        raise ValueError("spectrum must be a non-empty list of numbers")
    if np.any(lam < 0):
        raise ValueError("spectrum must be non-negative (a least-squares Hessian is positive semi-definite)")
    n = int(train_samples) if train_samples is not None else 2 * dim
    if n < dim:
        raise ValueError(f"train_samples must be >= dim ({dim})")
    rng = np.random.default_rng(seed)
    q = _orthogonal(rng, dim, dim)
    w_star = rng.standard_normal(dim)
    x = math.sqrt(n / 2.0) * _orthogonal(rng, n, dim) @ np.diag(np.sqrt(lam)) @ q.T
    xt = rng.standard_normal((test_samples, dim)) @ np.diag(np.sqrt(lam / 2.0)) @ q.T
    return Dataset("quadratic", _t(x), _t(x @ w_star), _t(xt), _t(xt @ w_star), task="regression", loss="mse",
                   meta={"spectrum": lam.tolist(), "eigenvectors": q.tolist(), "minimizer": w_star.tolist(),
                         "minimum": 0.0, "default_model": {"name": "linear", "bias": False}})


def load_teacher_student(input_dim: int = 20, hidden: int = 32, outputs: int = 1, classes: int | None = None,
                         train_samples: int = 1000, test_samples: int = 1000, noise: float = 0.0,
                         activation: str = "tanh", seed: int = 0) -> Dataset:
    """A random one-hidden-layer teacher network labels Gaussian inputs.

    y = W2 act(W1 x) (+ N(0, noise^2)) with W1 ~ N(0, 1/input_dim), W2 ~ N(0, 1/hidden); with
    ``classes=k`` the teacher has k outputs and the label is their argmax.
    """
    acts = {"tanh": np.tanh, "relu": lambda z: np.maximum(z, 0.0), "linear": lambda z: z}
    if activation not in acts:
        raise ValueError(f"activation must be one of {', '.join(acts)}")
    rng = np.random.default_rng(seed)
    k = classes if classes else outputs
    w1 = rng.standard_normal((hidden, input_dim)) / math.sqrt(input_dim)
    w2 = rng.standard_normal((k, hidden)) / math.sqrt(hidden)
    x = rng.standard_normal((train_samples, input_dim))
    xt = rng.standard_normal((test_samples, input_dim))
    f, ft = acts[activation](x @ w1.T) @ w2.T, acts[activation](xt @ w1.T) @ w2.T
    if classes:
        return Dataset("teacher-student", _t(x), torch.from_numpy(f.argmax(1)), _t(xt),
                       torch.from_numpy(ft.argmax(1)), task="classification", num_classes=classes,
                       loss="cross_entropy", meta={"teacher_hidden": hidden})
    f = f + noise * rng.standard_normal(f.shape)
    ft = ft + noise * rng.standard_normal(ft.shape)
    return Dataset("teacher-student", _t(x), _t(f), _t(xt), _t(ft), task="regression", loss="mse",
                   meta={"teacher_hidden": hidden, "noise": noise})


def load_chebyshev(degree: int = 4, train_samples: int = 20, test_samples: int = 200, seed: int = 0) -> Dataset:
    """1-D regression of the Chebyshev polynomial T_degree(x) = cos(degree arccos x) on [-1, 1].

    A cheap full-batch setup for edge-of-stability experiments (few samples, tiny tanh network).
    Training inputs are seeded uniform draws; test inputs an even grid.
    """
    if degree < 0:
        raise ValueError("degree must be >= 0")
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(-1.0, 1.0, size=(train_samples, 1)), axis=0)
    xt = np.linspace(-1.0, 1.0, test_samples)[:, None]
    cheb = np.polynomial.chebyshev.Chebyshev.basis(degree)
    return Dataset("chebyshev", _t(x), _t(cheb(x)), _t(xt), _t(cheb(xt)), task="regression", loss="mse",
                   meta={"degree": degree,
                         "default_model": {"name": "mlp", "widths": [32, 32], "activation": "tanh"}})
