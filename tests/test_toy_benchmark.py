"""The toy-problem benchmark batches independent runs; batching must not change any run."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from landscape.optim import build_optimizer

spec = importlib.util.spec_from_file_location("toy_problems", Path(__file__).parents[1] / "benchmarks" / "toy_problems.py")
toy = importlib.util.module_from_spec(spec)
sys.modules["toy_problems"] = toy  # dataclasses resolve their module by name
spec.loader.exec_module(toy)


@pytest.mark.parametrize("problem,name,options", [("rosenbrock", "adam", {"lr": 0.01}),
                                                  ("rahimi-recht", "momentum", {"lr": 0.05}),
                                                  ("rosenbrock", "parabola", {"lr": 0.001}),
                                                  ("rahimi-recht", "polyak:momentum", {"lr": 0.05, "decay": 0.9})])
def test_batched_runs_equal_separate_runs(problem, name, options):
    seeds = [3, 7, 11]
    batched = toy.Runs(problem, seeds)
    opt = build_optimizer({"name": name, **options}, [{"params": p} for p in batched.params])
    separate = [toy.Runs(problem, [s]) for s in seeds]
    opts = [build_optimizer({"name": name, **options}, r.params[0]) for r in separate]
    for _ in range(25):
        batched.closure()
        opt.step()
        for r, o in zip(separate, opts):
            o.step(r.closure)
    for i, r in enumerate(separate):
        for a, b in zip(batched.params[i], r.params[0]):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(batched.exact_losses()[i], r.exact_losses()[0], rtol=1e-5, atol=1e-7)


def test_exact_loss_is_the_deterministic_rosenbrock_and_noise_is_fresh_per_call():
    runs = toy.Runs("rosenbrock-u03", [0, 1])
    with torch.no_grad():
        runs.params[0][0].copy_(torch.tensor([-1.2, 1.0]))
    assert float(runs.exact_losses()[0]) == pytest.approx(24.2, rel=1e-6)
    draws = [runs._draw() for _ in range(3)]
    assert not torch.equal(draws[0], draws[1]) and float(torch.stack(draws).max()) <= 3.0


def test_protocol_finds_a_setting_and_counts_iterations():
    best = toy.grid_search("rosenbrock", "bfgs", [0, 1], 200)
    result = toy.evaluate("rosenbrock", "bfgs", best, 4, 200)
    assert result["success"] == 1.0 and 5 < result["mean"] < 60
