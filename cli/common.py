"""Shared CLI pieces: training flags, config assembly, output helpers."""

from __future__ import annotations

import json
import math
import sys
from typing import Any, Callable

import click

from landscape import distributed
from landscape.errors import LandscapeError

from landscape.optim.config import apply_assignments, load_config_file, merge

# flag -> (section, key)
TRAINING_FLAGS = {
    "data": ("data", "name"), "samples": ("data", "samples"), "data_dir": ("data", "data_dir"),
    "model": ("model", "name"), "optimizer": ("optimizer", "name"), "lr": ("optimizer", "lr"),
    "weight_decay": ("optimizer", "weight_decay"), "batch_size": ("training", "batch_size"),
    "epochs": ("training", "epochs"), "steps": ("training", "steps"), "seed": ("training", "seed"),
    "device": ("training", "device"), "schedule": ("training", "schedule"),
    "eval_every": ("training", "eval_every"), "checkpoint_every": ("training", "checkpoint_every"),
    "track_curvature_every": ("training", "track_curvature_every"), "track_trace": ("training", "track_trace"),
    "track_samples": ("training", "track_samples"), "bf16": ("training", "bf16"),
    "sync_bn": ("training", "sync_batchnorm"),
}


def training_options(fn: Callable) -> Callable:
    """The flags shared by ``train`` and ``study`` (all default to None = not given)."""
    options = [
        click.option("--data", help="Data set name or module:function [default: mnist1d]."),
        click.option("--samples", type=int, help="Train on a fixed seeded subset of N training samples."),
        click.option("--data-dir", help="Folder with downloaded data (vision data sets)."),
        click.option("--model", help="Model name or module:factory [default: the data set's, else mlp]."),
        click.option("--optimizer", help="Optimizer name: sgd, momentum, nesterov, adagrad, rmsprop, adam, adamw, "
                     "delta-bar-delta, bb, parabola, cg-fr, cg-pr, bfgs, lbfgs, curveball, adahessian, newton, "
                     "newton-cg, hessian-free, gauss-newton, levenberg-marquardt, saddle-free-newton, kfac, or a "
                     "wrapped one: lookahead:NAME, polyak:NAME, sam:NAME, asam:NAME [default: sgd]."),
        click.option("--lr", type=float, help="Learning rate [default: the optimizer's]."),
        click.option("--weight-decay", type=float, help="Weight decay [default: 0]."),
        click.option("--batch-size", type=int, help="Mini-batch size [default: 128]."),
        click.option("--epochs", type=int, help="Number of epochs [default: 10]."),
        click.option("--steps", type=int, help="Number of optimizer steps (instead of --epochs)."),
        click.option("--seed", type=int, help="Random seed [default: 0]."),
        click.option("--device", help="auto, cpu, cuda, cuda:N or mps [default: auto]."),
        click.option("--schedule", help="Learning-rate schedule: constant, step or cosine."),
        click.option("--eval-every", type=int, help="Evaluate every N steps [default: every epoch]."),
        click.option("--checkpoint-every", type=int, help="Checkpoint every N steps [default: ~20 per run]."),
        click.option("--track-curvature-every", type=int,
                     help="Record lambda_max of the training-loss Hessian every N steps (edge-of-stability plots)."),
        click.option("--track-trace", is_flag=True, default=None, help="With --track-curvature-every: also the trace."),
        click.option("--track-samples", type=int,
                     help="Training samples of the tracked Hessian (a fixed seeded subset) [default: 2048]."),
        click.option("--bf16", is_flag=True, default=None,
                     help="Training forward passes under bfloat16 autocast (for GPUs; evaluation stays float32)."),
        click.option("--sync-bn", is_flag=True, default=None,
                     help="Under torchrun on GPUs: BatchNorm batch statistics over the global batch (SyncBatchNorm) "
                          "instead of each process's share."),
        click.option("--config", "config_file", type=click.Path(dir_okay=False),
                     help="TOML file with [data], [model], [optimizer], [training] tables."),
        click.option("--set", "assignments", multiple=True, metavar="SECTION.KEY=VALUE",
                     help="Override any option, e.g. --set model.widths=[256,256] (repeatable)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def assemble_config(flags: dict[str, Any], config_file: str | None, assignments: tuple[str, ...]) -> dict:
    """defaults < --config file < flags < --set (only flags actually given count)."""
    cfg: dict[str, Any] = load_config_file(config_file) if config_file else {}
    for flag, (section, key) in TRAINING_FLAGS.items():
        value = flags.get(flag)
        if value is not None:
            cfg = merge(cfg, {section: {key: value}})
    return apply_assignments(cfg, list(assignments))


def given_flags(flags: dict[str, Any], assignments: tuple[str, ...]) -> dict:
    """Only the options given on the command line (for --resume, which keeps the stored config)."""
    return assemble_config(flags, None, assignments)


def parse_pair(text: str, separator: str, convert: Callable[[str], Any], error: str) -> tuple[Any, Any]:
    """``"A<separator>B"`` -> (convert(A), convert(B)); anything else raises ``LandscapeError(error)``."""
    try:
        a, b = (convert(v) for v in text.split(separator))
    except ValueError:
        raise LandscapeError(error) from None
    return a, b


def stderr_is_tty() -> bool:
    return sys.stderr.isatty()


def echo_err(message: str) -> None:
    """A progress or information line on stderr; under torchrun from rank 0 only (errors are printed by
    ``main`` on every rank)."""
    if distributed.is_main():
        click.echo(message, err=True)


def print_json(obj: Any) -> None:
    click.echo(json.dumps(_jsonable(obj), indent=2))


def print_checkpoints_json(run_path: Any, outputs: list[dict[str, Any]]) -> None:
    """The ``--json`` object of an analysis: one checkpoint's fields at the top, or a list of them."""
    print_json({"run": str(run_path), **outputs[0]} if len(outputs) == 1
               else {"run": str(run_path), "checkpoints": outputs})


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "tolist"):
        return _jsonable(obj.tolist())
    return obj
