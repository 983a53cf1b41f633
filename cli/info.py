"""``landscape info``."""

from __future__ import annotations

import math

import click

from landscape.results import list_results
from landscape.runs import Run

from .common import print_json


def _options(section: dict) -> str:
    extra = {k: v for k, v in section.items() if k != "name" and v is not None}
    return ", ".join(f"{k}={v}" for k, v in extra.items())


def parameter_count(run: Run) -> int | None:
    """Parameter count read from the last checkpoint's dataset shapes (nothing is loaded)."""
    import h5py

    steps = run.checkpoint_steps()
    if not steps:
        return None
    try:
        with h5py.File(run.checkpoint_path(steps[-1]), "r") as fh:
            return int(sum(math.prod(ds.shape) for ds in fh["params"].values()))
    except (OSError, KeyError):
        return None


@click.command(epilog="""\b
Examples:
  landscape info runs/mnist1d-mlp-sgd-s0
  landscape info runs/cnn --json
""")
@click.argument("run_dir", metavar="RUN", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print everything as JSON on stdout.")
def info(run_dir, as_json):
    """Show a run's configuration, checkpoints, latest metrics and stored analyses."""
    run = Run.open(run_dir)
    steps = run.checkpoint_steps()
    results = [str(p.relative_to(run.path)) for p in list_results(run)]
    n_params = parameter_count(run)
    if as_json:
        print_json({"run": str(run.path), "status": run.status, "message": run.message, "created": run.created,
                    "config": run.config, "total_steps": run.total_steps, "parameters": n_params,
                    "checkpoints": steps, "last_metrics": run.last_metrics(), "analysis": results})
        return
    cfg = run.config
    tr = cfg["training"]
    length = f"{tr['steps']} steps" if tr.get("steps") else f"{tr['epochs']} epochs"
    lines = [
        f"run          {run.path}  ({run.status}{': ' + run.message if run.message else ''})",
        f"created      {run.created}",
        f"data         {cfg['data']['name']}  {_options(cfg['data'])}",
        f"model        {cfg['model']['name']}  {_options(cfg['model'])}"
        + (f"  ({n_params:,} parameters)" if n_params else ""),
        f"optimizer    {cfg['optimizer']['name']}  {_options(cfg['optimizer'])}",
        f"training     {length}, batch {tr['batch_size']}, {tr['schedule']} schedule, seed {tr['seed']}, "
        f"loss {tr.get('loss')}",
        f"checkpoints  {len(steps)}" + (f"  (steps {steps[0]} .. {steps[-1]})" if steps else ""),
    ]
    last = run.last_metrics()
    if last:
        desc = f"step {int(last['step'])}: train loss {last['train_loss']:.4g}, test loss {last['test_loss']:.4g}"
        if not math.isnan(last.get("train_acc", math.nan)):
            desc += f", train acc {100 * last['train_acc']:.1f}%, test acc {100 * last['test_acc']:.1f}%"
        if not math.isnan(last.get("lambda_max", math.nan)):
            desc += f", lambda_max {last['lambda_max']:.4g}"
        lines.append(f"last metrics {desc}")
    lines.append(f"analysis     {len(results)} result file(s)" + ("" if not results else ": " + ", ".join(results[:5])))
    click.echo("\n".join(lines))
