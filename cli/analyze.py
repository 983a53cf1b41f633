"""``landscape analyze``."""

from __future__ import annotations

import click

from landscape.analysis import evaluate_checkpoint, load_checkpoint_model, resolve_steps
from landscape.errors import LandscapeError
from landscape.runs import Run, save_result

from .common import echo_err, print_json


def parse_samples(value: str | None) -> int | None:
    if value is None or value.strip().lower() == "all":
        return None
    try:
        n = int(value)
    except ValueError:
        raise LandscapeError(f"--samples must be a positive integer or 'all', got {value!r}") from None
    if n <= 0:
        raise LandscapeError(f"--samples must be positive, got {n}")
    return n


@click.command(epilog="""\b
Examples:
  landscape analyze runs/cnn                         # loss/accuracy of the last checkpoint
  landscape analyze runs/cnn --checkpoint all --json
  landscape analyze runs/cnn --checkpoint 3000 --samples 1000 --seed 1
""")
@click.argument("run_dir", metavar="RUN", type=click.Path())
@click.option("--checkpoint", default="last", show_default=True, help="last, first, all or a step number.")
@click.option("--samples", default=None, help="Evaluate on a fixed seeded subset of N training samples, or 'all'.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the --samples subset.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON on stdout.")
def analyze(run_dir, checkpoint, samples, seed, device, as_json):
    """Analyse checkpoints of a run; results are saved under RUN/analysis/<checkpoint>/.

    Computes train/test loss and accuracy (and the generalization gap) of each selected checkpoint.
    """
    run = Run.open(run_dir)
    n = parse_samples(samples)
    results, dataset = {}, None
    for step in resolve_steps(run, checkpoint):
        loaded = load_checkpoint_model(run, step, device=device, samples=n, seed=seed, dataset=dataset)
        dataset = loaded.dataset
        result = evaluate_checkpoint(loaded)
        save_result(run, step, "evaluation", result, samples=n, seed=seed)
        results[step] = result
        if not as_json:
            line = f"checkpoint {step}: train loss {result['train_loss']:.4g}, test loss {result['test_loss']:.4g}"
            if "train_acc" in result:
                line += f", train acc {100 * result['train_acc']:.2f}%, test acc {100 * result['test_acc']:.2f}%"
            click.echo(line)
    if as_json:
        if len(results) == 1:
            step, result = next(iter(results.items()))
            print_json({"run": str(run.path), "checkpoint": step, "evaluation": result})
        else:
            print_json({"run": str(run.path), "checkpoints": [{"checkpoint": s, "evaluation": r}
                                                             for s, r in results.items()]})
    else:
        echo_err(f"saved under {run.analysis_dir}")
