"""``landscape plot``."""

from __future__ import annotations

from pathlib import Path

import click

from landscape.plotting import plot_training
from landscape.runs import Run

KINDS = {"training": plot_training}


@click.command(epilog="""\b
Examples:
  landscape plot runs/cnn                            # RUN/figures/training.png
  landscape plot runs/cnn --kind training -o fig.pdf
""")
@click.argument("run_dir", metavar="RUN", type=click.Path())
@click.option("--kind", type=click.Choice(sorted(KINDS)), default="training", show_default=True,
              help="What to draw.")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Output file (.png, .pdf or .svg) [default: RUN/figures/KIND.png].")
def plot(run_dir, kind, output):
    """Draw figures from a run's stored metrics and results."""
    run = Run.open(run_dir)
    path = Path(output) if output else run.figures_dir / f"{kind}.png"
    click.echo(str(KINDS[kind](run, path)))
