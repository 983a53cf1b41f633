"""``landscape analyze RUN --sharpness NAME,...``: compute, store (``sharpness.h5``), print."""

from __future__ import annotations

import time

import click

from landscape import distributed
from landscape.analysis import evaluate_checkpoint, load_checkpoint_model, resolve_steps
from landscape.analysis.sharpness import MEASURES, measure_all, measure_names
from landscape.errors import LandscapeError
from landscape.objective import Objective
from landscape.runs import Run, update_result

from .common import print_checkpoints_json


def sharpness_of(loaded, names: list[str], seed: int, eps: float, rho: float, m: int | None,
                 batch_size: int | None) -> dict:
    """Measures of a loaded checkpoint on its (possibly subset) training set, with its evaluation."""
    ds = loaded.dataset
    obj = Objective(loaded.model, ds.x_train, ds.y_train, loaded.loss, batch_size=batch_size, shard=True)
    t0 = time.perf_counter()
    values, details = measure_all(obj, names, eps=eps, rho=rho, seed=seed, m=m)
    return {"measures": values, "details": details, "evaluation": evaluate_checkpoint(loaded),
            "seconds": time.perf_counter() - t0}


def run_sharpness(run_dir: str, checkpoint: str, names: list[str], device: str, samples: int | None, seed: int,
                  eps: float, rho: float, m: int | None, batch_size: int | None, as_json: bool) -> None:
    names = list(measure_names(names))
    if not names:
        raise LandscapeError(f"--sharpness needs measure names; choose from {', '.join(MEASURES)} or all")
    if not (eps > 0 and rho > 0) or (m is not None and m < 1):
        raise LandscapeError("--sharpness-eps, --sharpness-rho and --sharpness-m must be positive")
    run = Run.open(run_dir)
    outputs = []
    for step in resolve_steps(run, checkpoint):
        loaded = load_checkpoint_model(run, step, device=device, samples=samples, seed=seed)
        result = sharpness_of(loaded, names, seed, eps, rho, m, batch_size)
        if distributed.is_main():
            update_result(run, step, "sharpness", result, samples=samples, seed=seed, eps=eps, rho=rho, m=m)
        outputs.append({"checkpoint": step, **result})
        if not as_json:
            ev = result["evaluation"]
            click.echo(f"checkpoint {step}: train loss {ev['train_loss']:.4g}, test loss {ev['test_loss']:.4g}"
                       + (f", gap {100 * ev['generalization_gap']:.2f} points" if "generalization_gap" in ev else ""))
            for name, value in result["measures"].items():
                click.echo(f"  {name:20s} {value:.6g}")
    if as_json:
        print_checkpoints_json(run.path, outputs)
