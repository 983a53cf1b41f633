"""``landscape train``."""

from __future__ import annotations

from pathlib import Path

import click

from landscape.optim import train as train_run
from landscape.optim.training import format_metrics

from .common import assemble_config, echo_err, given_flags, print_json, stderr_is_tty, training_options


def default_out(cfg: dict) -> Path:
    data = cfg.get("data", {}).get("name", "mnist1d")
    model = cfg.get("model", {}).get("name") or "auto"
    opt = cfg.get("optimizer", {}).get("name", "sgd")
    seed = cfg.get("training", {}).get("seed", 0)
    name = f"{data}-{model}-{opt}-s{seed}".replace("/", "_").replace(":", "_")
    return Path("runs") / name


@click.command(epilog="""\b
Examples:
  landscape train                                   # MLP on MNIST-1D with SGD, 10 epochs
  landscape train --model conv1d --optimizer adam --lr 1e-2 --batch-size 100 --steps 6000 --out runs/cnn
  landscape train --config exp.toml --set model.widths=[256,256] --set optimizer.momentum=0.95
  landscape train --out runs/cnn --resume           # continue after a kill
  landscape train --out runs/cnn --resume --steps 9000   # train longer
""")
@training_options
@click.option("--out", type=click.Path(file_okay=False), help="Run folder [default: runs/DATA-MODEL-OPT-sSEED].")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--json", "as_json", is_flag=True, help="Print the final metrics as JSON on stdout.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or per-evaluation lines.")
def train(config_file, assignments, out, resume, as_json, quiet, **flags):
    """Train a model and checkpoint it to an HDF5 run folder."""
    if resume:
        if out is None:
            raise click.UsageError("--resume needs --out RUN")
        if config_file:
            raise click.UsageError("--resume continues the stored configuration; drop --config")
        cfg = given_flags(flags, assignments)
    else:
        cfg = assemble_config(flags, config_file, assignments)
    out = Path(out) if out else default_out(cfg)
    log = None if quiet else echo_err
    result = train_run(cfg, out, resume=resume, progress=(not quiet and stderr_is_tty()), log=log)
    if as_json:
        print_json({"run": str(out), "steps_run": result.steps_run, "seconds": result.seconds, **result.final})
    else:
        total = result.run.total_steps or int(result.final.get("step", 0))
        click.echo(f"{out}: {format_metrics(result.final, total)}  ({result.seconds:.1f} s)")
