"""Sharpness measures against closed forms on a diagonal quadratic, and the Dinh rescaling check."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from landscape.analysis import sharpness as S
from landscape.data import load_dataset
from landscape.models import build_model
from landscape.objective import Objective

A = torch.tensor([0.5, 1.0, 3.0, 8.0], dtype=torch.float64)


def quadratic(w0=None) -> Objective:
    """L(w) = 1/2 sum_i a_i (w_i - c_i)^2 as a bias-free linear model with the MSE loss on n = 4 samples:
    x_i = sqrt(n a_i / 2) e_i, y_i = x_i . c, so (1/n) sum_i (x_i . w - y_i)^2 = 1/2 sum_i a_i (w_i - c_i)^2."""
    n = A.numel()
    x = torch.diag(torch.sqrt(n * A / 2))
    c = torch.tensor([0.3, -0.2, 0.1, 0.05], dtype=torch.float64)
    model = nn.Sequential(nn.Linear(n, 1, bias=False)).double()
    with torch.no_grad():
        model[0].weight.copy_((c if w0 is None else w0)[None])
    return Objective(model, x, (x @ c)[:, None], "mse")


def test_quadratic_objective_is_what_it_says():
    obj = quadratic(torch.zeros(4, dtype=torch.float64))
    c = torch.tensor([0.3, -0.2, 0.1, 0.05], dtype=torch.float64)
    assert S.loss_at(obj, torch.zeros(4, dtype=torch.float64)) == pytest.approx(float(0.5 * (A * c * c).sum()))


def test_keskar_on_a_quadratic_minimum_reaches_the_box_corner():
    obj = quadratic()  # at the minimum c: box half-widths eps (|c_i| + 1)
    eps = 1e-2
    out = S.keskar_sharpness(obj, eps=eps, max_iter=50)
    half = eps * (torch.tensor([0.3, 0.2, 0.1, 0.05], dtype=torch.float64) + 1)
    exact = float(0.5 * (A * half ** 2).sum())  # a convex quadratic peaks at a corner of the box
    assert out["loss"] == pytest.approx(0.0, abs=1e-15)
    assert out["max_loss"] == pytest.approx(exact, rel=1e-9)
    assert out["sharpness"] == pytest.approx(100 * exact, rel=1e-9)
    sub = S.keskar_sharpness(obj, eps=eps, subspace=2, max_iter=50, seed=1)
    a = torch.randn(4, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)  # the same A
    c = torch.tensor([0.3, -0.2, 0.1, 0.05], dtype=torch.float64)
    r = eps * (torch.linalg.lstsq(a, c[:, None]).solution[:, 0].abs() + 1)
    corners = [torch.tensor([s1, s2], dtype=torch.float64) * r for s1 in (-1, 1) for s2 in (-1, 1)]
    assert sub["max_loss"] == pytest.approx(max(float(0.5 * (A * (a @ y) ** 2).sum()) for y in corners), rel=1e-9)


def test_sam_one_step_closed_form_and_multistep_reaches_the_ball_maximum():
    w = torch.tensor([0.4, -0.1, 0.2, 0.1], dtype=torch.float64)
    obj = quadratic(w)
    c = torch.tensor([0.3, -0.2, 0.1, 0.05], dtype=torch.float64)
    r = w - c
    g = A * r
    rho = 0.05
    d = rho * g / g.norm()
    exact_one = float(0.5 * (A * (r + d) ** 2).sum() - 0.5 * (A * r ** 2).sum())
    assert S.sam_sharpness(obj, rho) == pytest.approx(exact_one, rel=1e-10)
    # the maximum over the ball: dense search on the sphere (a convex quadratic peaks on the boundary)
    gen = torch.Generator().manual_seed(0)
    dirs = torch.randn(200000, 4, generator=gen, dtype=torch.float64)
    dirs = rho * dirs / dirs.norm(dim=1, keepdim=True)
    best = float((0.5 * (A * (r + dirs) ** 2).sum(1)).max() - 0.5 * (A * r ** 2).sum())
    multi = S.sam_sharpness(obj, rho, steps=50)
    assert exact_one <= multi + 1e-12 and multi == pytest.approx(best, rel=2e-3)


def test_m_sharpness_averages_chunks():
    ds = load_dataset("quadratic", spectrum=[1.0, 2.0, 4.0], train_samples=12)
    model = build_model({"name": "linear", "bias": False}, ds.input_shape, ds.output_dim).double()
    obj = Objective(model, ds.x_train.double(), ds.y_train.double(), "mse")
    parts = [S.sam_sharpness(Objective(model, ds.x_train[i:i + 4].double(), ds.y_train[i:i + 4].double(), "mse"),
                             0.1) for i in (0, 4, 8)]
    assert S.sam_sharpness(obj, 0.1, m=4) == pytest.approx(float(np.mean(parts)), rel=1e-12)


def test_adaptive_worst_case_one_step_closed_form():
    w = torch.tensor([0.4, -0.1, 0.2, 0.1], dtype=torch.float64)
    obj = quadratic(w)
    c = torch.tensor([0.3, -0.2, 0.1, 0.05], dtype=torch.float64)
    r, eta, rho = w - c, 0.01, 0.3
    t = w.abs() + eta
    g = A * r
    d = rho * t * t * g / (t * g).norm()
    exact = float(0.5 * (A * (r + d) ** 2).sum() - 0.5 * (A * r ** 2).sum())
    assert S.adaptive_sharpness(obj, rho, eta) == pytest.approx(exact, rel=1e-10)
    average = S.adaptive_sharpness(obj, rho, eta, kind="average", samples=4000)
    expected = float(0.5 * (A * (rho * t) ** 2).sum() / 4)  # E z_i^2 = 1/n
    assert average == pytest.approx(expected, rel=0.1)


def test_hessian_measures_on_the_quadratic():
    out = S.hessian_measures(quadratic(), slq_runs=4, slq_steps=4)
    assert out["lambda_max"] == pytest.approx(8.0, rel=1e-9)
    assert out["trace"] == pytest.approx(float(A.sum()), rel=1e-9)
    assert out["frobenius_squared"] == pytest.approx(float((A ** 2).sum()), rel=1e-9)
    assert out["logdet"] == pytest.approx(float(torch.log(A).sum()), rel=1e-9)  # exact for a diagonal H


def _draws(samples, seed=0):
    """The seeded N(0, I) draws the Monte-Carlo measures use (one generator, one draw per sample)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randn(A.numel(), generator=gen, dtype=torch.float64) for _ in range(samples)])


def test_pac_bayes_sigma_and_local_entropy_on_the_quadratic():
    """At the minimum, L(w + u) - L(w) = sum_i a_i u_i^2 / 2 exactly, so with the measures' own draws z the
    bisection must land on the closed form to its resolution (1e-6); the draws themselves are checked
    against the population value (200 samples: 4 standard errors of sigma are about 14%)."""
    obj = quadratic()
    z2 = _draws(200).pow(2)
    m = float((z2 * A).sum(1).mean()) / 2                    # mean over draws of sum_i a_i z_i^2 / 2
    out = S.pac_bayes_flatness(obj, threshold=0.01, samples=200, max_sigma=1.0)
    assert out["sigma"] == pytest.approx(math.sqrt(0.01 / m), rel=1e-5)
    assert out["sigma"] == pytest.approx(math.sqrt(2 * 0.01 / float(A.sum())), rel=0.15)
    assert out["measure"] == pytest.approx(1 / out["sigma"] ** 2)
    magnitude = S.pac_bayes_flatness(obj, threshold=0.01, magnitude_aware=True, samples=200, max_sigma=10.0)
    c = torch.tensor([0.3, -0.2, 0.1, 0.05], dtype=torch.float64)
    # mean_z sum_i a_i (s^2 c_i^2 + eps^2) z_i^2 / 2 = 0.01
    m_c, m_eps = float((z2 * A * c * c).sum(1).mean()) / 2, float((z2 * A * 1e-6).sum(1).mean()) / 2
    assert magnitude["sigma"] == pytest.approx(math.sqrt((0.01 - m_eps) / m_c), rel=1e-5)
    ent = S.local_entropy(obj, sigmas=(0.1,), samples=200)
    assert ent["0.1"] == pytest.approx(0.01 * m, rel=1e-9)


def test_fisher_rao_norm_of_a_linear_model():
    ds = load_dataset("quadratic", spectrum=[1.0, 2.0, 4.0], train_samples=10)
    torch.manual_seed(0)
    model = build_model({"name": "linear", "bias": False}, ds.input_shape, ds.output_dim).double()
    x, y = ds.x_train.double(), ds.y_train.double()
    obj = Objective(model, x, y, "mse")
    w = obj.point()
    pred = x @ w
    # l_n = (x_n . w - y_n)^2, <w, grad l_n> = 2 (x_n . w - y_n) (x_n . w)
    expected = float((2 * (pred - y.reshape(-1)) * pred).pow(2).mean())
    assert S.fisher_rao_norm(obj) == pytest.approx(expected, rel=1e-10)


def test_dinh_rescaling_changes_hessian_measures_but_not_the_function():
    ds = load_dataset("mnist1d", samples=200)
    torch.manual_seed(0)
    model = build_model({"name": "mlp", "widths": [16]}, ds.input_shape, ds.output_dim).double().eval()
    x, y = ds.x_train.double(), ds.y_train
    scaled = S.dinh_rescale(model, alpha=5.0)
    with torch.no_grad():
        torch.testing.assert_close(scaled(x), model(x), rtol=1e-10, atol=1e-10)
    before, after = Objective(model, x, y), Objective(scaled, x, y)
    assert S.loss_at(before, before.point()) == pytest.approx(S.loss_at(after, after.point()), rel=1e-10)
    lam = [S.hessian_measures(o, which=("lambda-max",))["lambda_max"] for o in (before, after)]
    assert lam[1] / lam[0] > 3 or lam[0] / lam[1] > 3
    fr = [S.fisher_rao_norm(o) for o in (before, after)]
    assert fr[1] == pytest.approx(fr[0], rel=1e-8)  # a function-space measure
    with pytest.raises(Exception, match="ReLU"):
        S.dinh_rescale(build_model({"name": "mlp", "activation": "tanh"}, ds.input_shape, 10), 2.0)
