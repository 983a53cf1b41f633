import math

import pytest
import torch

from landscape.errors import LandscapeError
from landscape.optim import OPTIMIZERS, build_optimizer, lr_factor
from landscape.runs import Checkpoint, read_checkpoint, write_checkpoint


def _problem():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 5, generator=g), torch.randn(64, 1, generator=g)
    return x, y


def _steps(model, opt, x, y, n):
    for _ in range(n):
        def closure():
            opt.zero_grad()
            loss = ((model(x) - y) ** 2).mean()
            loss.backward()
            return loss
        opt.step(closure)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_state_dict_roundtrip_through_hdf5_resumes_identically(name, tmp_path):
    x, y = _problem()
    torch.manual_seed(0)
    ref = torch.nn.Linear(5, 1)
    spec = {"name": name, "lr": 0.01}
    ref_opt = build_optimizer(spec, ref.parameters())
    _steps(ref, ref_opt, x, y, 3)
    write_checkpoint(tmp_path / "c.h5", Checkpoint.from_model(3, 0, ref, ref_opt))
    _steps(ref, ref_opt, x, y, 4)

    torch.manual_seed(123)
    model = torch.nn.Linear(5, 1)
    opt = build_optimizer(spec, model.parameters())
    ckpt = read_checkpoint(tmp_path / "c.h5")
    ckpt.load_into(model)
    opt.load_state_dict(ckpt.optimizer)
    _steps(model, opt, x, y, 4)
    for a, b in zip(ref.parameters(), model.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_decreases_a_quadratic(name):
    x, y = _problem()
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 1)
    opt = build_optimizer({"name": name}, model.parameters())
    loss0 = float(((model(x) - y) ** 2).mean().detach())
    _steps(model, opt, x, y, 50)
    assert float(((model(x) - y) ** 2).mean().detach()) < loss0


def test_registry_wraps_torch_exactly():
    x, y = _problem()
    for spec, make in [({"name": "momentum", "lr": 0.1}, lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)),
                       ({"name": "adam", "lr": 0.01, "betas": [0.8, 0.9]},
                        lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.8, 0.9)))]:
        torch.manual_seed(0)
        a = torch.nn.Linear(5, 1)
        b = torch.nn.Linear(5, 1)
        b.load_state_dict(a.state_dict())
        _steps(a, build_optimizer(spec, a.parameters()), x, y, 5)
        _steps(b, make(b.parameters()), x, y, 5)
        assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_optimizer_errors():
    params = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(LandscapeError, match="unknown optimizer"):
        build_optimizer({"name": "sgdd"}, params)
    with pytest.raises(LandscapeError, match="positive"):
        build_optimizer({"name": "sgd", "lr": -1.0}, params)
    with pytest.raises(LandscapeError, match="has no option 'momentum'"):
        build_optimizer({"name": "adam", "momentum": 0.9}, params)


def test_schedules():
    assert lr_factor(10, 100) == 1.0
    assert lr_factor(49, 100, "step") == 1.0 and lr_factor(50, 100, "step") == pytest.approx(0.1)
    assert lr_factor(75, 100, "step") == pytest.approx(0.01)
    assert lr_factor(0, 100, "cosine") == 1.0 and lr_factor(50, 100, "cosine") == pytest.approx(0.5)
    assert lr_factor(100, 100, "cosine", min_factor=0.1) == pytest.approx(0.1)
    assert lr_factor(0, 100, warmup_steps=4) == 0.25 and lr_factor(3, 100, warmup_steps=4) == 1.0
    assert math.isclose(lr_factor(25, 100, "cosine"), 0.5 * (1 + math.cos(math.pi / 4)))
