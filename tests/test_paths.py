"""Mode connectivity: barriers, curves, bend training and its resume, AutoNEB, alignment, CLI, plots."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from conftest import tree_digest
from landscape.analysis import load_checkpoint_model
from landscape.analysis import directions as dirs
from landscape.analysis.alignment import weight_matching
from landscape.analysis.autoneb import NEBOptions, autoneb
from landscape.analysis.curves import CurveTraining, PathProblem, curve_coordinates, curve_weights, train_bend
from landscape.analysis.path_result import barriers
from landscape.cli.main import main
from landscape.errors import LandscapeError
from landscape.models import build_model
from landscape.objective import Objective

SMALL = ["--samples", "300", "--set", "model.widths=[16]", "--batch-size", "50", "--epochs", "6",
         "--optimizer", "adam", "--lr", "0.01", "--device", "cpu", "-q"]


class Valley(nn.Module):
    """L(u, v) = (v - (1 - u^2))^2 with the MSE loss against 0: a parabolic valley of zero loss through
    (-1, 0), (0, 1), (1, 0). The straight line between (-1, 0) and (1, 0) rises to L = 1 at u = 0; the
    Bezier curve with bend (0, 2) is x = 2t - 1, y = 4t(1 - t): exactly the valley."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(2, dtype=torch.float64))

    def forward(self, x):
        return (self.w[1] - (1 - self.w[0] ** 2)).expand(x.shape[0], 1)


def _valley():
    model = Valley()
    layout, _ = dirs.flat_parameters(model)
    w0 = torch.tensor([-1.0, 0.0], dtype=torch.float64)
    w1 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    x = torch.zeros(32, 1, dtype=torch.float64)
    return model, layout, w0, w1, x, torch.zeros(32, 1, dtype=torch.float64)


def _valley_loss(p: torch.Tensor) -> float:
    return float((p[1] - (1 - p[0] ** 2)) ** 2)


def test_barrier_definitions():
    t = np.array([0.0, 0.5, 1.0])
    b = barriers(t, np.array([1.0, 2.5, 3.0]))
    assert b["barrier"] == pytest.approx(0.5) and b["barrier_midpoint"] == pytest.approx(1.0)
    assert b["argmax_t"] == 1.0 and b["max"] == 3.0
    flat = barriers(np.linspace(0, 1, 7), np.full(7, 0.25))
    assert flat["barrier"] == 0.0 and flat["barrier_midpoint"] == 0.0
    # points outside [0, 1] (an extended line) do not count
    assert barriers(np.array([-0.5, 0, 1, 1.5]), np.array([9.0, 1, 1, 9]))["barrier"] == 0.0


@pytest.mark.parametrize("kind", ["linear", "bezier", "polychain"])
def test_curve_weights_and_coordinates(kind):
    g = torch.Generator().manual_seed(0)
    w0, theta, w1 = (torch.randn(5, generator=g, dtype=torch.float64) for _ in range(3))
    ts = np.linspace(0, 1, 11)
    coords = curve_coordinates(kind, ts)
    for t, (a, b) in zip(ts, coords):
        c0, ct, c1 = curve_weights(kind, float(t))
        assert c0 + ct + c1 == pytest.approx(1.0)
        torch.testing.assert_close(w0 + a * (theta - w0) + b * (w1 - w0), c0 * w0 + ct * theta + c1 * w1)
    assert curve_weights(kind, 0.0) == (1.0, 0.0, 0.0) and curve_weights(kind, 1.0)[2] == 1.0
    if kind == "bezier":
        assert curve_weights(kind, 0.5) == (0.25, 0.5, 0.25)
    if kind == "polychain":
        assert curve_weights(kind, 0.5) == (0.0, 1.0, 0.0)


def test_bezier_bend_finds_the_valley_and_training_resumes(tmp_path):
    model, layout, w0, w1, x, y = _valley()
    training = CurveTraining(epochs=400, batch_size=32, optimizer={"name": "adam", "lr": 0.02}, seed=0)
    theta, history = train_bend(PathProblem(model, "mse", layout, w0, w1, x, y), "bezier", training)
    torch.testing.assert_close(theta, torch.tensor([0.0, 2.0], dtype=torch.float64), atol=2e-2, rtol=0)
    along = [_valley_loss(sum(c * p for c, p in zip(curve_weights("bezier", t), (w0, theta, w1))))
             for t in np.linspace(0, 1, 101)]
    assert max(along) < 1e-3 and history[-1] < 1e-4
    assert max(_valley_loss(w0 + t * (w1 - w0)) for t in np.linspace(0, 1, 101)) == pytest.approx(1.0)

    state = tmp_path / "bend.training.h5"

    class Stop(Exception):
        pass

    def stop_at_150(epoch, total, value):
        if epoch == 150:
            raise Stop

    with pytest.raises(Stop):
        train_bend(PathProblem(model, "mse", layout, w0, w1, x, y), "bezier", training, state_path=state,
                   progress=stop_at_150)
    resumed, resumed_history = train_bend(PathProblem(model, "mse", layout, w0, w1, x, y), "bezier", training,
                                          state_path=state)
    assert torch.equal(resumed, theta) and resumed_history == history


def test_the_bends_gradient_is_the_chain_rule_through_the_objective():
    """train_bend differentiates the objective's value at phi(t) through phi: grad_theta = c_theta(t) grad L(phi(t)),
    the objective's own gradient at that point, exactly."""
    model, layout, w0, w1, x, y = _valley()
    theta = torch.tensor([0.3, 0.7], dtype=torch.float64, requires_grad=True)
    objective = Objective.live(model, x, y, "mse")
    c0, ct, c1 = curve_weights("bezier", 0.3)
    point = c0 * w0 + ct * theta + c1 * w1
    value = objective.differentiable_value(point)
    value.backward()
    expected_value, g = objective.value_and_gradient(point.detach())
    assert float(value.detach()) == expected_value == _valley_loss(point.detach())
    assert torch.equal(theta.grad, ct * g)
    with pytest.raises(LandscapeError, match="one batch"):
        Objective(model, x, y, "mse", batch_size=8).differentiable_value(point)


def test_autoneb_relaxes_onto_the_valley():
    model, layout, w0, w1, x, y = _valley()
    out = autoneb(PathProblem(model, "mse", layout, w0, w1, x, y),
                  NEBOptions(cycles=3, steps=300, lr=0.02, spring=0.5, batch_size=32, initial_pivots=3,
                             probe_samples=32, insert_tolerance=0.05))
    pivots = out["pivots"]
    assert torch.equal(pivots[0], w0) and torch.equal(pivots[-1], w1)
    dense = [pivots[i] + t * (pivots[i + 1] - pivots[i]) for i in range(len(pivots) - 1)
             for t in np.linspace(0, 1, 21)]
    saddle = max(_valley_loss(p) for p in dense)
    assert saddle < 0.05  # the straight line's barrier is 1


def test_autoneb_resumes_after_an_interruption(tmp_path):
    model, layout, w0, w1, x, y = _valley()
    opts = NEBOptions(cycles=3, steps=40, lr=0.02, batch_size=16, probe_samples=32)
    whole = autoneb(PathProblem(model, "mse", layout, w0, w1, x, y), opts)["pivots"]

    class Stop(Exception):
        pass

    def stop_after_first(cycle, total, pivots):
        if cycle == 1:
            raise Stop

    state = tmp_path / "neb.autoneb.h5"
    with pytest.raises(Stop):
        autoneb(PathProblem(model, "mse", layout, w0, w1, x, y), opts, state_path=state,
                progress=stop_after_first)
    resumed = autoneb(PathProblem(model, "mse", layout, w0, w1, x, y), opts, state_path=state)["pivots"]
    assert torch.equal(resumed, whole)


def _permuted_copy(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """The same function with every hidden layer's units permuted at random."""
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    layers = [n for n, m in model.named_children() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]
    g = torch.Generator().manual_seed(seed)
    for i, name in enumerate(layers[:-1]):
        perm = torch.randperm(params[f"{name}.weight"].shape[0], generator=g)
        params[f"{name}.weight"] = params[f"{name}.weight"][perm]
        params[f"{name}.bias"] = params[f"{name}.bias"][perm]
        nxt = params[f"{layers[i + 1]}.weight"]
        units = perm.numel()
        if nxt.ndim == 2 and nxt.shape[1] != units:
            params[f"{layers[i + 1]}.weight"] = nxt.reshape(nxt.shape[0], units, -1)[:, perm].reshape(nxt.shape)
        else:
            params[f"{layers[i + 1]}.weight"] = nxt[:, perm]
    return params


@pytest.mark.parametrize("spec,shape", [({"name": "mlp", "widths": [20, 12]}, (40,)),
                                        ({"name": "lenet"}, (1, 8, 8)),
                                        ({"name": "cnn", "bn": False, "channels": [4, 4, 6, 6]}, (40,))])
def test_weight_matching_undoes_a_permutation(spec, shape):
    torch.manual_seed(0)
    model = build_model(spec, shape, 10)
    params_a = {n: p.detach() for n, p in model.named_parameters()}
    params_b = _permuted_copy(model, seed=3)
    x = torch.randn(5, *shape)
    with torch.no_grad():  # the permuted network computes the same function
        torch.testing.assert_close(torch.func.functional_call(model, params_b, (x,)), model(x))
    aligned, perms = weight_matching(model, params_a, params_b)
    for n in params_a:
        torch.testing.assert_close(aligned[n], params_a[n], rtol=0, atol=0)
    assert perms


def test_weight_matching_refuses_batchnorm():
    model = build_model({"name": "cnn", "bn": True, "channels": [4, 4, 6, 6]}, (40,), 10)
    params = {n: p.detach() for n, p in model.named_parameters()}
    with pytest.raises(Exception, match="BatchNorm"):
        weight_matching(model, params, params)


# --- CLI ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("paths")
    for seed in (0, 1):
        assert main(["train", *SMALL, "--seed", str(seed), "--out", str(root / f"s{seed}")]) == 0
    return root / "s0", root / "s1"


def test_linear_connection_json_and_identical_models(two_runs, capsys):
    a, b = two_runs
    capsys.readouterr()
    assert main(["analyze", str(a), "--connect", str(b), "--points", "11", "--json"]) == 0
    view = json.loads(capsys.readouterr().out)
    loaded_a, loaded_b = load_checkpoint_model(a), load_checkpoint_model(b)
    from landscape.analysis import evaluate_checkpoint

    ea, eb = evaluate_checkpoint(loaded_a), evaluate_checkpoint(loaded_b)
    assert view["t"][0] == 0 and view["t"][-1] == 1 and len(view["train_loss"]) == 11
    assert view["train_loss"][0] == pytest.approx(ea.train_loss, rel=1e-5)
    assert view["train_loss"][-1] == pytest.approx(eb.train_loss, rel=1e-5)
    assert view["test_acc"][-1] == pytest.approx(eb.test_acc)
    assert view["barrier"] > 0.05  # two seeds of a small MLP: a clear barrier
    assert view["ensemble"]["endpoint_0_test_acc"] == pytest.approx(ea.test_acc)
    last = str(a / "checkpoints" / f"{loaded_a.step:08d}.h5")
    assert main(["analyze", str(a), "--connect", last, "--points", "5", "--json"]) == 0
    same = json.loads(capsys.readouterr().out)
    assert same["barrier"] == 0.0 and same["barrier_midpoint"] == 0.0 and same["distance"] == 0.0


def test_bezier_connection_plots_and_alignment(two_runs, capsys, tmp_path):
    a, b = two_runs
    capsys.readouterr()
    assert main(["analyze", str(a), "--connect", str(b), "--curve", "bezier", "--curve-epochs", "20",
                 "--curve-lr", "0.01", "--points", "11", "--plane-grid", "7", "--json"]) == 0
    view = json.loads(capsys.readouterr().out)
    assert view["curve"] == "bezier" and view["fitted"]["barrier"]["train_loss"]["barrier"] < view["linear"]["barrier"]["train_loss"]["barrier"]
    assert 0 <= view["ensemble"]["curve_test_acc"] <= 1 and view["plane"]["bend"][1] > 0
    for kind in ("path", "plane"):
        out = tmp_path / f"{kind}.png"
        assert main(["plot", str(a), "--kind", kind, "-o", str(out)]) == 0
        assert out.stat().st_size > 5000
    capsys.readouterr()
    assert main(["analyze", str(a), "--connect", str(b), "--align", "--points", "11", "--json"]) == 0
    aligned = json.loads(capsys.readouterr().out)
    assert aligned["aligned"] and aligned["barrier"] < view["linear"]["barrier"]["train_loss"]["barrier"]
    assert aligned["distance"] < view["distance"]


@pytest.mark.parametrize("argv,message", [
    (["--connect", "no-such-run"], "neither a run folder"),
    (["--connect", "0", "--points", "2"], "--points must be >= 3"),
    (["--connect", "0", "--curve", "bezier", "--curve-optimizer", "lbfgs"], "first-order optimizer"),
    (["--connect", "0", "--curve", "bezier", "--curve-optimizer", "nope"], "unknown optimizer"),
])
def test_connect_mistakes(two_runs, capsys, argv, message):
    a, _ = two_runs
    before = tree_digest(a)
    assert main(["analyze", str(a), *argv]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error: ") and message in err[0], err
    assert tree_digest(a) == before
