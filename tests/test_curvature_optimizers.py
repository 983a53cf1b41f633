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


def _linear_regression(seed=0, n=30, d=4):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) @ torch.diag(torch.tensor([1.0, 2.0, 5.0, 10.0],
                                                                                    dtype=torch.float64))
    y = torch.randn(n, 1, generator=g, dtype=torch.float64)
    torch.manual_seed(seed)
    model = torch.nn.Linear(d, 1).double()
    design = torch.cat([x, torch.ones(n, 1, dtype=torch.float64)], 1)
    solution = torch.linalg.lstsq(design, y).solution[:, 0]
    return model, x, y, solution


@pytest.mark.parametrize("name,options", [("newton", {}), ("newton", {"modification": "cholesky"}),
                                          ("newton-cg", {"tolerance": 1e-12}), ("gauss-newton", {}),
                                          ("levenberg-marquardt", {"damping": 1e-12}),
                                          ("hessian-free", {"damping": 0.0, "adapt_damping": False}),
                                          ("saddle-free-newton", {"damping": 0.0})])
def test_second_order_methods_solve_a_quadratic_in_one_step(name, options):
    model, x, y, solution = _linear_regression()
    opt = build_optimizer({"name": name, **options}, model.parameters(), model=model, loss="mse")
    opt.step(batch=(x, y))
    torch.testing.assert_close(_flat(model), solution, rtol=1e-7, atol=1e-8)


def test_levenberg_marquardt_adapts_its_damping():
    ds = load_dataset("rosenbrock")
    model = build_model({"name": "rosenbrock", "start": [-1.2, 1.0]}, ds.input_shape, ds.output_dim).double()
    opt = build_optimizer({"name": "levenberg-marquardt"}, model.parameters(), model=model, loss="sum_squares")
    batch = (ds.x_train[:1].double(), ds.y_train[:1].double())
    for _ in range(40):
        opt.step(batch=batch)
    assert float((_flat(model) - 1).norm()) < 1e-8
    assert opt.scalars["mu"] < 1e-3  # damping shrinks once the Gauss-Newton model is good near the solution


def _saddle_model(start):
    """f(u, v) = u^2 - v^2 + v^4 / 4 (a saddle at 0, minima at (0, +-sqrt 2)) as a model whose output is f."""
    class Saddle(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor(start, dtype=torch.float64))

        def forward(self, x):
            u, v = self.w
            return (u * u - v * v + 0.25 * v ** 4).expand(x.shape[0], 1)
    return Saddle()


def test_saddle_free_newton_escapes_a_saddle_where_newton_is_attracted(monkeypatch):
    # sum_squares of a scalar output would square it; use a loss that is the output itself
    from landscape import losses
    monkeypatch.setitem(losses.LOSSES, "identity_mean", lambda out, target: out.mean())
    x, y = torch.zeros(1, 1, dtype=torch.float64), torch.zeros(1, 1, dtype=torch.float64)
    plain = _saddle_model([0.5, 0.1])
    # pure Newton (no modification, unit step): w - H^-1 g jumps onto the saddle at 0 in v (quadratic there)
    h = torch.autograd.functional.hessian(lambda w: w[0] ** 2 - w[1] ** 2 + 0.25 * w[1] ** 4, plain.w.detach())
    g = torch.autograd.functional.jacobian(lambda w: w[0] ** 2 - w[1] ** 2 + 0.25 * w[1] ** 4, plain.w.detach())
    newton_point = plain.w.detach() - torch.linalg.solve(h, g)
    assert abs(float(newton_point[1])) < abs(0.1)  # attracted towards the saddle's v = 0
    sfn_model = _saddle_model([0.5, 0.1])
    opt = build_optimizer({"name": "saddle-free-newton", "damping": 0.0}, sfn_model.parameters(), model=sfn_model,
                          loss="identity_mean")
    for _ in range(15):
        opt.step(batch=(x, y))
    u, v = sfn_model.w.detach().tolist()
    assert abs(u) < 1e-8 and abs(abs(v) - 2 ** 0.5) < 1e-8  # escaped to the minima at v = +-sqrt(2)


def test_adahessian_hutchinson_diagonal_converges_to_the_true_diagonal():
    from landscape.objective import Objective
    from landscape.optim import AdaHessian
    model, x, y = _mlp_problem(seed=5)
    opt = AdaHessian(model, "cross_entropy", seed=0)
    obj = Objective.live(model, x, y, "cross_entropy")
    dense = torch.autograd.functional.hessian(
        lambda w: get_loss("cross_entropy")(torch.func.functional_call(
            model, obj.layout.unflatten(w), (x,)), y), obj.point())
    exact = torch.diagonal(dense)
    estimate = torch.stack([opt.hutchinson_diagonal(obj) for _ in range(4000)]).mean(0)
    assert float((estimate - exact).norm() / exact.norm()) < 0.1
    # Rademacher probes have both signs (an all -1 probe gives row sums of H, not its diagonal)
    from landscape.linalg.probes import probes
    z = probes(10000, 1, torch.Generator().manual_seed(0), "rademacher")[:, 0]
    assert set(z.unique().tolist()) == {-1.0, 1.0} and abs(float(z.mean())) < 0.03
    row_sums = dense.sum(1)
    assert float((estimate - row_sums).norm()) > 3 * float((estimate - exact).norm())


def test_adahessian_update_matches_its_formula():
    from landscape.optim import AdaHessian
    model, x, y = _mlp_problem(seed=2)
    opt = AdaHessian(model, "cross_entropy", lr=0.1, betas=(0.8, 0.9), eps=1e-4, weight_decay=0.01,
                     hessian_power=0.5)
    w0 = _flat(model)
    opt.step(batch=(x, y))
    d = opt.scalars["diagonal"]
    state_m = opt.scalars["exp_avg"] / (1 - 0.8)
    state_v = opt.scalars["exp_hessian_sq"] / (1 - 0.9)
    torch.testing.assert_close(state_v, d * d)
    expected = w0 - 0.1 * (state_m / (state_v.pow(0.25) + 1e-4) + 0.01 * w0)
    torch.testing.assert_close(_flat(model), expected, rtol=1e-12, atol=1e-14)


def test_kfac_on_linear_regression_is_a_newton_direction():
    # one Linear layer with squared error: the empirical K-FAC factors are E[a a^T] and E[(dL/ds)^2], so
    # G^-1 grad A^-1 is a multiple of the Newton step H^-1 grad (H = 2 E[a a^T]) when damping -> 0
    from landscape.optim import KFAC
    model, x, y, solution = _linear_regression()
    opt = KFAC(model, "mse", lr=1.0, momentum=0.0, damping=1e-12, fisher="empirical")
    w0 = _flat(model)
    opt.step(batch=(x, y))
    step = _flat(model) - w0
    newton = solution - w0
    cosine = float(step @ newton / (step.norm() * newton.norm()))
    assert cosine > 1 - 1e-9


def test_kfac_convolution_factors_match_unfolded_patches():
    from landscape.optim import KFAC
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv1d(2, 3, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(3 * 8, 4)).double()
    x = torch.randn(5, 2, 8, dtype=torch.float64)
    y = torch.randint(0, 4, (5,))
    opt = KFAC(model, "cross_entropy", fisher="empirical")
    _, a_mats, g_mats = opt.factors(x, y)
    conv = model[0]
    padded = torch.nn.functional.pad(x, (1, 1))
    patches = padded.unfold(2, 3, 1)  # (N, C, L, k)
    rows = patches.permute(0, 2, 1, 3).reshape(5 * 8, 6)
    rows = torch.cat([rows, torch.ones(40, 1, dtype=torch.float64)], 1)
    torch.testing.assert_close(a_mats[conv], rows.T @ rows / 40)
    # G: per-location output gradients of the summed loss (mean loss x N), summed over locations, / N
    out = conv(x)
    out.retain_grad()
    loss = get_loss("cross_entropy")(model[3](model[2](model[1](out))), y) * 5
    loss.backward()
    g_rows = out.grad.permute(0, 2, 1).reshape(40, 3)
    torch.testing.assert_close(g_mats[conv], g_rows.T @ g_rows / 5)


@pytest.mark.parametrize("name", ["curveball", "adahessian", "hessian-free", "kfac", "newton-cg"])
def test_batchnorm_in_training_mode_updates_running_statistics_once_per_step(name):
    torch.manual_seed(0)
    model = build_model({"name": "cnn", "bn": True, "channels": [4, 4, 8, 8]}, (1, 40), 10)
    model.train()
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d))
    opt = build_optimizer({"name": name}, model.parameters(), model=model, loss="cross_entropy")
    x = torch.randn(16, 1, 40)
    y = torch.randint(0, 10, (16,))
    for _ in range(2):
        loss = opt.step(batch=(x, y))
    assert math.isfinite(float(loss))
    assert int(bn.num_batches_tracked) == 2  # one update per step, however many evaluations the step makes
    assert all(m.track_running_stats for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d))


def test_curvature_optimizers_refuse_a_parameter_subset_instead_of_stepping_the_whole_model():
    from landscape.errors import LandscapeError
    from landscape.optim import build_optimizer
    model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    with pytest.raises(LandscapeError, match="not a subset"):
        build_optimizer({"name": "curveball"}, model[2].parameters(), model=model, loss="cross_entropy")
    for p in model[0].parameters():
        p.requires_grad_(False)  # the documented way: freeze what it should leave alone
    before, head = model[0].weight.clone(), model[2].weight.clone()
    opt = build_optimizer({"name": "curveball"}, model.parameters(), model=model, loss="cross_entropy")
    opt.step(batch=(torch.randn(16, 4), torch.randint(0, 3, (16,))))
    assert torch.equal(model[0].weight, before) and not torch.equal(model[2].weight, head)
