"""Curvature-based optimizers against dense exact curvature on small models."""

import math

import pytest
import torch

from landscape.data import load_dataset
from landscape.losses import get_loss
from landscape.models import build_model
from landscape.optim import CurveBall, build_optimizer


def _mlp_problem(seed=0, n=40):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (n,), generator=g)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)).double()
    return model, x, y


def _flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _dense_ggn_and_gradient(model, x, y, loss="cross_entropy"):
    """G = J^T H_L J from the full Jacobian (torch.autograd.functional), and the gradient."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    w0 = _flat(model)
    loss_fn = get_loss(loss)

    def unflat(w):
        out, i = {}, 0
        for n, s in zip(names, shapes):
            k = math.prod(s)
            out[n] = w[i:i + k].reshape(s)
            i += k
        return out

    def f(w):
        return torch.func.functional_call(model, unflat(w), (x,))

    out = f(w0)
    jac = torch.autograd.functional.jacobian(f, w0).reshape(out.numel(), -1)
    h_out = torch.autograd.functional.hessian(lambda o: loss_fn(o.reshape(out.shape), y), out.reshape(-1))
    grad = torch.autograd.functional.jacobian(lambda w: loss_fn(f(w), y), w0)
    return jac.T @ h_out @ jac, grad


def test_curveball_step_matches_dense_gauss_newton():
    model, x, y = _mlp_problem()
    g_dense, grad = _dense_ggn_and_gradient(model, x, y)
    opt = CurveBall(model, "cross_entropy", rho=0.9, beta=0.05, damping=0.5, auto_damping=False)
    z0 = torch.randn(g_dense.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 0.1
    opt.step(batch=(x, y))  # creates the state (z = 0: a plain damped gradient step)
    model2, _, _ = _mlp_problem()
    opt2 = CurveBall(model2, "cross_entropy", rho=0.9, beta=0.05, damping=0.5, auto_damping=False)
    opt2.step(batch=(x, y))
    w1 = _flat(model2)
    torch.testing.assert_close(w1, _flat(_mlp_problem()[0]) - 0.05 * grad, rtol=1e-10, atol=1e-12)
    # now a step from a known non-zero z at the new point
    g1, grad1 = _dense_ggn_and_gradient(model2, x, y)
    opt2.scalars["z"] = z0.clone()
    opt2.step(batch=(x, y))
    expected_z = 0.9 * z0 - 0.05 * ((g1 + 0.5 * torch.eye(len(z0), dtype=torch.float64)) @ z0 + grad1)
    torch.testing.assert_close(opt2.scalars["z"], expected_z, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(_flat(model2), w1 + expected_z, rtol=1e-10, atol=1e-12)


def _quadratic_model():
    ds = load_dataset("quadratic", spectrum=[1.0, 2.0, 5.0, 10.0], train_samples=8)
    torch.manual_seed(0)
    model = build_model({"name": "linear", "bias": False}, ds.input_shape, ds.output_dim).double()
    return model, ds.x_train.double(), ds.y_train.double(), torch.tensor(ds.meta["minimizer"], dtype=torch.float64)


@pytest.mark.parametrize("rho,converges", [(0.9, True), (0.55, True), (1.05, True), (0.45, False), (1.15, False)])
def test_curveball_theorem_a1_region_on_a_quadratic(rho, converges):
    # h_min = 1, h_max = 10, beta = 0.1: converges iff 3/2 beta h_max - 1 = 0.5 < rho < 1 + beta h_min = 1.1
    model, x, y, w_star = _quadratic_model()
    opt = CurveBall(model, "mse", rho=rho, beta=0.1, damping=0.0, auto_damping=False)
    for _ in range(600):
        opt.step(batch=(x, y))
    err = float((_flat(model) - w_star).norm())
    if converges:
        assert err < 1e-6
    else:
        assert err > 1e3 or not math.isfinite(err)


def test_curveball_automatic_steps_descend_and_solve_a_quadratic():
    model, x, y = _mlp_problem(seed=3)
    opt = CurveBall(model, "cross_entropy", damping=1.0)
    for _ in range(15):
        _, grad = _dense_ggn_and_gradient(model, x, y)
        opt.step(batch=(x, y))
        z = opt.scalars["z"]
        assert float(grad @ z) < 0  # Theorem A.2: z_{t+1} is a descent direction at w_t
    model, xq, yq, w_star = _quadratic_model()
    opt = CurveBall(model, "mse", damping=0.0, auto_damping=False)
    for _ in range(100):
        opt.step(batch=(xq, yq))
    assert float((_flat(model) - w_star).norm()) < 1e-6  # (w* is exact for the float64 data; x, y are float32)


def test_curveball_through_the_registry_and_training_loop(tmp_path):
    from landscape.optim import train
    from landscape.runs import Run
    cfg = {"data": {"name": "digits", "samples": 300}, "model": {"name": "mlp", "widths": [16]},
           "optimizer": {"name": "curveball", "damping": 1.0}, "training": {"steps": 30, "batch_size": 50,
                                                                          "device": "cpu"}}
    result = train(cfg, tmp_path / "cb")
    metrics = Run.open(tmp_path / "cb").metrics
    assert result.final["train_loss"] < 0.8 * metrics["train_loss"][0]
    with pytest.raises(Exception, match="model=model"):
        build_optimizer({"name": "curveball"}, [torch.nn.Parameter(torch.zeros(2))])
