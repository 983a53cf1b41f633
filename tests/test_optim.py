import contextlib
import math

import pytest
import torch

from landscape.errors import LandscapeError
from landscape.losses import get_loss
from landscape.optim import OPTIMIZERS, build_optimizer, lr_factor, make_closure
from landscape.runs import Checkpoint, read_checkpoint, write_checkpoint


def _problem():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 5, generator=g), torch.randn(64, 1, generator=g)
    return x, y


def _steps(model, opt, x, y, n):
    for _ in range(n):
        opt.step(make_closure(model, opt, get_loss("mse"), x, y))


def _build(spec, model):
    return build_optimizer(spec, model.parameters(), model=model, loss="mse")


SUITE = sorted(OPTIMIZERS) + ["lookahead:adam", "polyak:momentum", "sam:sgd", "asam:momentum",
                              "lookahead:sam:adam", "lookahead:lbfgs", "lookahead:curveball"]


@pytest.mark.parametrize("name", SUITE)
def test_state_dict_roundtrip_through_hdf5_resumes_identically(name, tmp_path):
    x, y = _problem()
    torch.manual_seed(0)
    ref = torch.nn.Linear(5, 1)
    spec = {"name": name, "lr": 0.01}
    ref_opt = _build(spec, ref)
    _steps(ref, ref_opt, x, y, 3)
    write_checkpoint(tmp_path / "c.h5", Checkpoint.from_model(3, 0, ref, ref_opt))
    _steps(ref, ref_opt, x, y, 4)

    torch.manual_seed(123)
    model = torch.nn.Linear(5, 1)
    opt = _build(spec, model)
    ckpt = read_checkpoint(tmp_path / "c.h5")
    ckpt.load_into(model)
    opt.load_state_dict(ckpt.optimizer)
    _steps(model, opt, x, y, 4)
    for a, b in zip(ref.parameters(), model.parameters()):
        assert torch.equal(a, b)


# learning rates that make each method converge on the least-squares problem below (curvature <= ~3)
CONVERGENCE_LR = {"sgd": 0.3, "momentum": 0.05, "nesterov": 0.05, "adagrad": 0.5, "rmsprop": 0.003, "adam": 0.01,
                  "adamw": 0.01, "delta-bar-delta": 0.1, "bb": 0.3, "parabola": 0.1, "cg-fr": 1.0, "cg-pr": 1.0,
                  "bfgs": 1.0, "lbfgs": 1.0, "lookahead:adam": 0.02, "polyak:momentum": 0.05, "sam:sgd": 0.3,
                  "asam:momentum": 0.05, "lookahead:sam:adam": 0.02, "lookahead:lbfgs": 1.0, "curveball": 1.0,
                  "adahessian": 0.1, "newton": 1.0, "newton-cg": 1.0, "hessian-free": 1.0, "gauss-newton": 1.0,
                  "levenberg-marquardt": 1.0, "saddle-free-newton": 1.0, "kfac": 0.1, "lookahead:curveball": 1.0}


@pytest.mark.parametrize("name", SUITE)
def test_every_optimizer_converges_on_least_squares(name):
    x, y = _problem()
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 1)
    solution = torch.linalg.lstsq(torch.cat([x, torch.ones(64, 1)], 1), y).solution
    best = float(((torch.cat([x, torch.ones(64, 1)], 1) @ solution - y) ** 2).mean())
    options = {"name": name, "lr": CONVERGENCE_LR[name]}
    if name.startswith(("sam", "asam", "lookahead:sam")):
        options["rho"] = 1e-3  # SAM settles within ~rho of the minimum by design
    if name == "bb":
        options["steps_per_epoch"] = 5
    opt = _build(options, model)
    loss0 = float(((model(x) - y) ** 2).mean().detach())
    for _ in range(40):  # at most 400 steps; stop once converged (second-order methods need a few)
        _steps(model, opt, x, y, 10)
        with getattr(opt, "averaged", contextlib.nullcontext)():
            gap = float(((model(x) - y) ** 2).mean().detach()) - best
        if gap < 1e-4 * (loss0 - best):
            break
    assert gap < 1e-4 * (loss0 - best)


RIDGE = 0.3


@pytest.mark.parametrize("name", [n for n in SUITE if n != "adamw"])
def test_weight_decay_is_the_coupled_l2_term_every_optimizer_converges_to_the_ridge_solution(name):
    """weight_decay means (weight_decay / 2) ||theta||^2 added to the loss in every optimizer: they all reach
    theta* = ((2/n) A^T A + wd I)^-1 (2/n) A^T y, not the least-squares solution (wd ignored), nor the one of
    2 wd (a penalty counted twice)."""
    x, y = _problem()
    design = torch.cat([x, torch.ones(64, 1)], 1).double()
    gram, rhs = 2 / 64 * design.T @ design, 2 / 64 * design.T @ y.double()
    ridge = torch.linalg.solve(gram + RIDGE * torch.eye(6, dtype=torch.float64), rhs)[:, 0]
    plain = torch.linalg.solve(gram, rhs)[:, 0]

    def objective(theta):
        return float(((design @ theta - y.double()[:, 0]) ** 2).mean() + 0.5 * RIDGE * theta @ theta)

    torch.manual_seed(0)
    model = torch.nn.Linear(5, 1)
    options = {"name": name, "lr": CONVERGENCE_LR[name], "weight_decay": RIDGE}
    if name.startswith(("sam", "asam", "lookahead:sam")):
        options["rho"] = 1e-4
    if name == "bb":
        options["steps_per_epoch"] = 5
    opt = _build(options, model)

    def theta():
        with getattr(opt, "averaged", contextlib.nullcontext)():
            return torch.cat([model.weight.detach()[0], model.bias.detach()]).double()
    f0, best = objective(theta()), objective(ridge)
    for _ in range(400):
        _steps(model, opt, x, y, 1)
        if objective(theta()) - best < 1e-7 * (f0 - best):
            break
    assert float((theta() - ridge).norm()) < 0.02 * float((plain - ridge).norm())


def test_decoupled_weight_decay_is_offered_where_its_papers_define_it_and_refused_elsewhere():
    params = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(LandscapeError, match="adamw's decay is decoupled_weight_decay"):
        build_optimizer({"name": "adamw", "weight_decay": 0.1}, params)
    with pytest.raises(LandscapeError, match="'sgd' has no decoupled_weight_decay.*adahessian, adamw, kfac"):
        build_optimizer({"name": "sgd", "decoupled_weight_decay": 0.1}, params)
    with pytest.raises(LandscapeError, match="decoupled weight decay must be a non-negative number"):
        build_optimizer({"name": "adamw", "decoupled_weight_decay": -1.0}, params)
    opt = build_optimizer({"name": "lookahead:adamw", "decoupled_weight_decay": 0.1}, params)
    assert opt.inner.param_groups[0]["weight_decay"] == 0.1  # torch's AdamW name for it


TORCH_EQUIVALENTS = [
    ({"name": "sgd", "lr": 0.1}, lambda p: torch.optim.SGD(p, lr=0.1)),
    ({"name": "momentum", "lr": 0.1}, lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)),
    ({"name": "nesterov", "lr": 0.1, "weight_decay": 0.01},
     lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ({"name": "adagrad", "lr": 0.1}, lambda p: torch.optim.Adagrad(p, lr=0.1)),
    ({"name": "rmsprop", "lr": 0.01, "centered": True}, lambda p: torch.optim.RMSprop(p, lr=0.01, centered=True)),
    ({"name": "adam", "lr": 0.01, "betas": [0.8, 0.9]}, lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.8, 0.9))),
    ({"name": "adamw", "lr": 0.01, "decoupled_weight_decay": 0.1},
     lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1)),
    ({"name": "adam", "lr": 0.01, "weight_decay": 0.1}, lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.1)),
    ({"name": "lbfgs", "max_iter": 5}, lambda p: torch.optim.LBFGS(p, max_iter=5, line_search_fn="strong_wolfe")),
]


@pytest.mark.parametrize("spec,make", TORCH_EQUIVALENTS, ids=[s["name"] for s, _ in TORCH_EQUIVALENTS])
def test_registry_matches_torch(spec, make):
    x, y = _problem()
    torch.manual_seed(0)
    a = torch.nn.Linear(5, 1)
    b = torch.nn.Linear(5, 1)
    b.load_state_dict(a.state_dict())
    _steps(a, _build(spec, a), x, y, 5)
    _steps(b, make(b.parameters()), x, y, 5)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_lbfgs_single_iteration_steps_move():
    # torch's default max_eval (max_iter * 5 // 4 = 1) would leave the line search no evaluation
    w = torch.tensor([-1.2, 1.0], requires_grad=True)
    opt = build_optimizer({"name": "lbfgs", "max_iter": 1}, [w])

    def closure():
        opt.zero_grad()
        loss = (1 - w[0]) ** 2 + 100 * (w[1] - w[0] ** 2) ** 2
        loss.backward()
        return loss
    for _ in range(60):
        opt.step(closure)
    assert float(torch.linalg.norm(w.detach() - 1)) < 1e-3


def test_optimizer_errors():
    params = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(LandscapeError, match="unknown optimizer"):
        build_optimizer({"name": "sgdd"}, params)
    with pytest.raises(LandscapeError, match="positive"):
        build_optimizer({"name": "sgd", "lr": -1.0}, params)
    with pytest.raises(LandscapeError, match="has no option 'momentum'"):
        build_optimizer({"name": "adam", "momentum": 0.9}, params)
    with pytest.raises(LandscapeError, match="unknown optimizer 'sgdd'"):
        build_optimizer({"name": "lookahead:sgdd"}, params)
    with pytest.raises(LandscapeError, match="wraps first-order"):
        build_optimizer({"name": "sam:lbfgs"}, params)
    with pytest.raises(LandscapeError, match="has no option 'kk'"):
        build_optimizer({"name": "lookahead:adam", "kk": 3}, params)
    with pytest.raises(LandscapeError, match="alpha"):
        build_optimizer({"name": "lookahead:adam", "alpha": 2.0}, params)
    opt = build_optimizer({"name": "lookahead:adam", "k": 3, "betas": [0.5, 0.6], "lr": 0.1}, params)
    assert opt.param_groups[0]["k"] == 3 and opt.inner.param_groups[0]["betas"] == (0.5, 0.6)


def test_schedules():
    assert lr_factor(10, 100) == 1.0
    assert lr_factor(49, 100, "step") == 1.0 and lr_factor(50, 100, "step") == pytest.approx(0.1)
    assert lr_factor(75, 100, "step") == pytest.approx(0.01)
    assert lr_factor(0, 100, "cosine") == 1.0 and lr_factor(50, 100, "cosine") == pytest.approx(0.5)
    assert lr_factor(100, 100, "cosine", min_factor=0.1) == pytest.approx(0.1)
    assert lr_factor(0, 100, warmup_steps=4) == 0.25 and lr_factor(3, 100, warmup_steps=4) == 1.0
    assert math.isclose(lr_factor(25, 100, "cosine"), 0.5 * (1 + math.cos(math.pi / 4)))


def test_cli_help_names_every_registered_optimizer():
    from landscape.cli.common import training_options
    from landscape.optim import WRAPPERS

    import click

    @click.command()
    @training_options
    def cmd(**kwargs):
        pass
    text = next(p.help for p in cmd.params if p.name == "optimizer")
    for name in list(OPTIMIZERS) + [f"{w}:NAME" for w in WRAPPERS]:
        assert name in text
