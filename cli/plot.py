"""``landscape plot``."""

from __future__ import annotations

from pathlib import Path

import click

from landscape.plotting import plot_density, plot_spectrum, plot_training
from landscape.runs import Run

KINDS = ("training", "spectrum", "density")


@click.command(epilog="""\b
Examples:
  landscape plot runs/cnn                                 # RUN/figures/training.png
  landscape plot runs/cnn --kind training -o fig.pdf
  landscape plot runs/cnn --kind spectrum                 # after: landscape analyze runs/cnn --top-k 10
  landscape plot runs/cnn --kind density -o esd.svg       # after: landscape analyze runs/cnn --density
""")
@click.argument("run_dir", metavar="RUN", type=click.Path())
@click.option("--kind", type=click.Choice(KINDS), default="training", show_default=True, help="What to draw.")
@click.option("--checkpoint", default="last", show_default=True, help="Checkpoint of the stored analysis.")
@click.option("--curvature", type=click.Choice(["hessian", "ggn", "fisher"]), default="hessian", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Output file (.png, .pdf or .svg) [default: RUN/figures/KIND.png].")
def plot(run_dir, kind, checkpoint, curvature, output):
    """Draw figures from a run's stored metrics and analysis results (plotting computes nothing)."""
    run = Run.open(run_dir)
    path = Path(output) if output else run.figures_dir / f"{kind}.png"
    if kind == "training":
        out = plot_training(run, path)
    elif kind == "spectrum":
        out = plot_spectrum(run, path, checkpoint, curvature)
    else:
        out = plot_density(run, path, checkpoint, curvature)
    click.echo(str(out))
