"""``landscape plot``."""

from __future__ import annotations

from pathlib import Path

import click

from landscape.analysis.path_plots import find_path_result, plot_path, plot_plane
from landscape.analysis.study import StudyResult
from landscape.analysis.study_plots import plot_study
from landscape.analysis.surface import SurfaceResult
from landscape.analysis.surface_plots import KINDS as SURFACE_KINDS
from landscape.analysis.surface_plots import find_surface, plot_surface, write_vtp
from landscape.errors import LandscapeError
from landscape.analysis.curvature_plots import plot_density, plot_spectrum, stored_curvature
from landscape.plotting import plot_sharpness, plot_training
from landscape.runs import Run

KINDS = ("training", "spectrum", "density", "sharpness", *SURFACE_KINDS, "path", "plane")


@click.command(epilog="""\b
Examples:
  landscape plot runs/cnn                                 # RUN/figures/training.png
  landscape plot runs/cnn --kind training -o fig.pdf
  landscape plot runs/cnn --kind spectrum                 # after: landscape analyze runs/cnn --top-k 10
  landscape plot runs/cnn --kind density -o esd.svg       # after: landscape analyze runs/cnn --density
  landscape plot runs/cnn --kind contour                  # after: landscape analyze runs/cnn --slice 2d
  landscape plot runs/cnn --kind surface3d --metric test_loss -o surf.pdf
  landscape plot runs/cnn --kind trajectory --surface surface-2d-pca
  landscape plot runs/cnn --kind slice                    # after: landscape analyze runs/cnn --slice 1d
  landscape plot runs/cnn --format vtp --log              # ParaView file of the 2-D surface
  landscape plot studies/bs                               # a study: measures vs batch size, Kendall tau
  landscape plot runs/gd --kind sharpness                 # after: landscape train ... --track-curvature-every 10
  landscape plot runs/mlp-s0 --kind path                  # after: landscape analyze ... --connect OTHER
  landscape plot runs/mlp-s0 --kind plane                 # after: ... --curve bezier --plane-grid 31
""")
@click.argument("run_dir", metavar="RUN", type=click.Path())
@click.option("--kind", type=click.Choice(KINDS), default="training", show_default=True, help="What to draw.")
@click.option("--checkpoint", default="last", show_default=True, help="Checkpoint of the stored analysis.")
@click.option("--curvature", type=click.Choice(["hessian", "ggn", "fisher"]), default="hessian", show_default=True)
@click.option("--surface", "surface_name", default=None,
              help="Stored surface (or path result for --kind path|plane) to draw, e.g. surface-2d-pca "
              "[default: the checkpoint's latest one].")
@click.option("--metric", type=click.Choice(["train_loss", "test_loss", "train_acc", "test_acc"]),
              default="train_loss", show_default=True, help="Surface quantity to draw.")
@click.option("--format", "fmt", type=click.Choice(["figure", "vtp"]), default="figure", show_default=True,
              help="vtp: write the 2-D surface for ParaView instead of a figure.")
@click.option("--log", is_flag=True, help="With --format vtp: z = ln(loss + 0.1).")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Output file (.png, .pdf or .svg; .vtp) [default: RUN/figures/KIND.png].")
def plot(run_dir, kind, checkpoint, curvature, surface_name, metric, fmt, log, output):
    """Draw figures from a run's stored metrics and analysis results (plotting computes nothing).

    RUN may also be a study folder (``landscape study --measures ...``): its measures, correlations and
    the small- to large-batch line are drawn."""
    if (Path(run_dir) / "study.h5").exists() and not (Path(run_dir) / "run.h5").exists():
        path = Path(output) if output else Path(run_dir) / "figures" / "study.png"
        click.echo(str(plot_study(StudyResult.load(run_dir), path)))
        return
    run = Run.open(run_dir)
    if kind in ("path", "plane"):
        if fmt == "vtp":
            raise LandscapeError("--format vtp exports a 2-D surface; use --kind contour etc.")
        result = find_path_result(run, run.resolve_checkpoint(checkpoint), surface_name)
        path = Path(output) if output else run.figures_dir / f"{result.path.stem}-{kind}.png"
        click.echo(str((plot_path if kind == "path" else plot_plane)(result, path)))
        return
    if fmt == "vtp" or kind in SURFACE_KINDS:
        step = run.resolve_checkpoint(checkpoint)
        dims = 1 if kind == "slice" else 2
        if fmt == "vtp" and kind == "slice":
            raise LandscapeError("--format vtp exports a 2-D surface, not a slice")
        source = find_surface(run, step, dims, surface_name)
        surface = SurfaceResult.load(source)
        if fmt == "vtp":
            path = Path(output) if output else run.figures_dir / f"{source.stem}.vtp"
            click.echo(str(write_vtp(surface, path, metric, log)))
            return
        path = Path(output) if output else run.figures_dir / f"{source.stem}-{kind}.png"
        click.echo(str(plot_surface(surface, kind, path, metric)))
        return
    path = Path(output) if output else run.figures_dir / f"{kind}.png"
    if kind == "training":
        out = plot_training(run, path)
    elif kind == "sharpness":
        out = plot_sharpness(run, path)
    elif kind == "spectrum":
        out = plot_spectrum(run, stored_curvature(run, checkpoint, curvature, "--top-k 10"), path)
    else:
        out = plot_density(run, stored_curvature(run, checkpoint, curvature, "--density"), path)
    click.echo(str(out))
