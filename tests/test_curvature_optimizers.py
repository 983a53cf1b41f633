"""Curvature-based optimizers against dense exact curvature on small models."""

import copy
import math

import pytest
import torch

from landscape.data import load_dataset
from landscape.errors import LandscapeError
from landscape.losses import get_loss
from landscape.models import build_model
from landscape.optim import OPTIMIZERS, CurveBall, build_optimizer


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
    w0 = _flat(model)
    _, grad0 = _dense_ggn_and_gradient(model, x, y)
    opt = CurveBall(model.parameters(), model, "cross_entropy", rho=0.9, beta=0.05, damping=0.5, auto_damping=False)
    opt.step(batch=(x, y))  # z = 0: a plain damped gradient step, z1 = -beta g
    w1 = _flat(model)
    torch.testing.assert_close(w1, w0 - 0.05 * grad0, rtol=1e-10, atol=1e-12)
    # the second step from z1: z2 = rho z1 - beta ((G + lambda I) z1 + g), with the dense GGN at w1
    g1, grad1 = _dense_ggn_and_gradient(model, x, y)
    z1 = w1 - w0
    opt.step(batch=(x, y))
    expected_z = 0.9 * z1 - 0.05 * ((g1 + 0.5 * torch.eye(len(z1), dtype=torch.float64)) @ z1 + grad1)
    torch.testing.assert_close(_flat(model) - w1, expected_z, rtol=1e-8, atol=1e-12)


def test_curveball_automatic_rho_and_beta_minimise_the_damped_quadratic_model():
    """Eq. 18: (rho, beta) minimise q(z) = g^T z + 1/2 z^T (G + lambda I) z over z = rho z_prev - beta Dz, with
    Dz = (G + lambda I) z_prev + g; from z = 0 the minimiser along -g, beta = g^T g / g^T (G + lambda I) g."""
    model, x, y = _mlp_problem(seed=4)
    lam = 1.0
    opt = CurveBall(model.parameters(), model, "cross_entropy", damping=lam, auto_damping=False)
    eye = torch.eye(_flat(model).numel(), dtype=torch.float64)
    w0 = _flat(model)
    g0, grad0 = _dense_ggn_and_gradient(model, x, y)
    opt.step(batch=(x, y))
    h0 = g0 + lam * eye
    torch.testing.assert_close(_flat(model) - w0, -(grad0 @ grad0) / (grad0 @ h0 @ grad0) * grad0,
                               rtol=1e-8, atol=1e-12)
    for _ in range(3):
        w1 = _flat(model)
        z = w1 - w0
        g1, grad1 = _dense_ggn_and_gradient(model, x, y)
        h = g1 + lam * eye
        dz = h @ z + grad1
        basis = torch.stack([z, dz], 1)
        coef = torch.linalg.solve(basis.T @ h @ basis, -basis.T @ grad1)
        opt.step(batch=(x, y))
        torch.testing.assert_close(_flat(model) - w1, basis @ coef, rtol=1e-7, atol=1e-11)
        assert float(coef[0]) > 0.05  # a real two-dimensional minimisation (rho far from 0)
        w0 = w1


def _quadratic_model():
    ds = load_dataset("quadratic", spectrum=[1.0, 2.0, 5.0, 10.0], train_samples=8)
    torch.manual_seed(0)
    model = build_model({"name": "linear", "bias": False}, ds.input_shape, ds.output_dim).double()
    return model, ds.x_train.double(), ds.y_train.double(), torch.tensor(ds.meta["minimizer"], dtype=torch.float64)


@pytest.mark.parametrize("rho,converges", [(0.9, True), (0.55, True), (1.05, True), (0.45, False), (1.15, False)])
def test_curveball_theorem_a1_region_on_a_quadratic(rho, converges):
    # h_min = 1, h_max = 10, beta = 0.1: converges iff 3/2 beta h_max - 1 = 0.5 < rho < 1 + beta h_min = 1.1
    model, x, y, w_star = _quadratic_model()
    opt = CurveBall(model.parameters(), model, "mse", rho=rho, beta=0.1, damping=0.0, auto_damping=False)
    for _ in range(600):
        opt.step(batch=(x, y))
    err = float((_flat(model) - w_star).norm())
    if converges:
        assert err < 1e-6
    else:
        assert err > 1e3 or not math.isfinite(err)


def test_curveball_automatic_steps_descend_and_solve_a_quadratic():
    model, x, y = _mlp_problem(seed=3)
    opt = CurveBall(model.parameters(), model, "cross_entropy", damping=1.0)
    for _ in range(15):
        _, grad = _dense_ggn_and_gradient(model, x, y)
        opt.step(batch=(x, y))
        z = opt.scalars["z"]
        assert float(grad @ z) < 0  # Theorem A.2: z_{t+1} is a descent direction at w_t
    model, xq, yq, w_star = _quadratic_model()
    opt = CurveBall(model.parameters(), model, "mse", damping=0.0, auto_damping=False)
    for _ in range(100):
        opt.step(batch=(xq, yq))
    assert float((_flat(model) - w_star).norm()) < 1e-6  # (w* is exact for the float64 data; x, y are float32)


def test_curveball_through_the_registry_and_training_loop_is_the_class_on_the_loops_batches(tmp_path):
    from landscape.optim import build_experiment, epoch_order, train
    from landscape.runs import Run
    cfg = {"data": {"name": "digits", "samples": 300}, "model": {"name": "mlp", "widths": [16]},
           "optimizer": {"name": "curveball", "damping": 1.0}, "training": {"steps": 30, "batch_size": 50,
                                                                          "device": "cpu"}}
    result = train(cfg, tmp_path / "cb")
    run = Run.open(tmp_path / "cb")
    exp = build_experiment(cfg)  # the same seeded initial model
    model, data = exp.model, exp.dataset
    opt = CurveBall(model.parameters(), model, "cross_entropy", lr=1.0, damping=1.0)
    for step in range(30):
        epoch, b = divmod(step, exp.steps_per_epoch)
        index = epoch_order(0, epoch, data.num_train, data.x_train.device)[b * 50:(b + 1) * 50]
        opt.step(batch=(data.x_train[index], data.y_train[index]))
    final = run.load_checkpoint("last").params
    assert all(torch.equal(p.detach(), final[n]) for n, p in model.named_parameters())
    # lambda moved by the rule (x or / 0.999^5 on 6 of the 30 steps), and training made real progress
    changes = math.log(opt.scalars["damping"]) / (5 * math.log(0.999))
    assert abs(changes - round(changes)) < 1e-6 and round(changes) != 0
    assert result.final["train_loss"] < 0.6 * run.metrics["train_loss"][0]
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
    opt = AdaHessian(model.parameters(), model, "cross_entropy", seed=0)
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
    opt = AdaHessian(model.parameters(), model, "cross_entropy", lr=0.1, betas=(0.8, 0.9), eps=1e-4, decoupled_weight_decay=0.01,
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
    opt = KFAC(model.parameters(), model, "mse", lr=1.0, momentum=0.0, damping=1e-12, fisher="empirical")
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
    opt = KFAC(model.parameters(), model, "cross_entropy", fisher="empirical")
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


@pytest.mark.parametrize("fisher", ["mc", "empirical"])
def test_kfac_monte_carlo_factors_are_the_dense_fisher_blocks_of_one_input(fisher):
    """For one input x (here repeated R times) the Fisher block of a layer s = [W b] [a; 1] is exactly
    E_y[g g^T] (x) a a^T, with g = dl/ds and y drawn from the model; the dense Fisher of the network is
    J^T (diag p - p p^T) J (cross-entropy). K-FAC's Monte-Carlo G (x) A must match it to MC error; the
    empirical Fisher (the data labels instead of samples) must not."""
    from landscape.optim import KFAC
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3)).double()
    x1 = torch.tensor([[0.8, -0.5, 0.3]], dtype=torch.float64)
    repeats = 6000
    x, y = x1.expand(repeats, 3), torch.zeros(repeats, dtype=torch.long)
    opt = KFAC(model.parameters(), model, "cross_entropy", fisher=fisher, seed=0)
    _, a_mats, g_mats = opt.factors(x, y)
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]

    def out(w):
        pieces = dict(zip(names, [t.reshape(s) for t, s in zip(w.split(sizes), shapes)]))
        return torch.func.functional_call(model, pieces, (x1,))[0]
    w0 = _flat(model)
    jac = torch.autograd.functional.jacobian(out, w0)
    p = torch.softmax(out(w0), 0)
    dense = jac.T @ (torch.diag(p) - torch.outer(p, p)) @ jac
    start = 0
    for layer in (model[0], model[2]):
        fan_out, fan_in = layer.weight.shape
        # K-FAC orders the block row-major over [W b]: (i, j) is W[i, j] for j < fan_in, else b[i]
        order = [start + i * fan_in + j if j < fan_in else start + fan_out * fan_in + i
                 for i in range(fan_out) for j in range(fan_in + 1)]
        block = dense[order][:, order]
        approx = torch.kron(g_mats[layer], a_mats[layer])
        error = float((approx - block).norm() / block.norm())
        if fisher == "mc":
            assert error < 0.05
        else:
            assert error > 0.3
        start += (fan_in + 1) * fan_out


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


CURVATURE = sorted(n for n, e in OPTIMIZERS.items() if e.needs_model)


@pytest.mark.parametrize("subset", ["head", "head weight"])
@pytest.mark.parametrize("name", CURVATURE)
def test_a_parameter_subset_is_optimized_exactly_as_a_model_with_the_others_frozen(name, subset):
    torch.manual_seed(0)
    a = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)).double()
    b = copy.deepcopy(a)
    chosen = list(a[2].parameters()) if subset == "head" else [a[2].weight]
    for (_, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        q.requires_grad_(any(p is c for c in chosen))
    spec = {"name": name, "weight_decay": 0.01}
    opt_a = build_optimizer(spec, chosen, model=a, loss="cross_entropy")
    opt_b = build_optimizer(spec, b.parameters(), model=b, loss="cross_entropy")
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (16,), generator=g)
    before = {n: p.detach().clone() for n, p in a.named_parameters()}
    for _ in range(3):
        opt_a.step(batch=(x, y))
        opt_b.step(batch=(x, y))
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, q), n  # exactly the frozen model's step
        assert torch.equal(p, before[n]) != any(p is c for c in chosen), n  # the subset moved, nothing else
        assert any(p is c for c in chosen) or p.grad is None, n
    with pytest.raises(LandscapeError, match="not the model's"):
        build_optimizer(spec, [torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))], model=a,
                        loss="cross_entropy")
