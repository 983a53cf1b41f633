"""Figures of a stored curvature analysis: the spectrum's extreme eigenvalues by rank, the spectral density."""

from __future__ import annotations

from pathlib import Path

from landscape.errors import LandscapeError
from landscape.plotting import figure_format, pyplot, save_figure
from landscape.results import result_path
from landscape.runs import Run

from .curvature import CurvatureResult


def stored_curvature(run: Run, checkpoint: str | int = "last", curvature: str = "hessian",
                     flag: str = "--top-k 10") -> CurvatureResult:
    """The stored curvature result, with the command that computes it (``flag``) in the error when there is none."""
    step = run.resolve_checkpoint(checkpoint)
    if not result_path(run, step, curvature).exists():  # a corrupt file keeps its own error
        raise LandscapeError(f"no {curvature} analysis for checkpoint {step}; run: landscape analyze {run.path} "
                             f"--checkpoint {step} {flag}"
                             + (f" --curvature {curvature}" if curvature != "hessian" else ""))
    return CurvatureResult.load(run, step, curvature)


def _missing(result: CurvatureResult, run: Run, what: str, flag: str) -> LandscapeError:
    return LandscapeError(f"the {result.name} analysis of checkpoint {result.checkpoint} has no {what}; run: "
                          f"landscape analyze {run.path} --checkpoint {result.checkpoint} {flag}")


def _title(run: Run, result: CurvatureResult) -> str:
    cfg = run.config
    return (f"{result.name} of {cfg['model']['name']} on {cfg['data']['name']} ({cfg['optimizer']['name']}), "
            f"step {result.checkpoint}")


def plot_spectrum(run: Run, result: CurvatureResult, path: str | Path) -> Path:
    """Top (and smallest) eigenvalues of a curvature result, by rank."""
    figure_format(Path(path))
    if not result.eigenvalues:
        raise _missing(result, run, "eigenvalues", "--top-k 10")
    plt = pyplot()
    top = result.eigenvalues
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.stem(range(1, len(top) + 1), top, basefmt=" ", label="largest")
    if result.smallest_eigenvalues:
        low = result.smallest_eigenvalues
        ax.stem(range(len(top) + 2, len(top) + 2 + len(low)), low, linefmt="C3-", markerfmt="C3o", basefmt=" ",
                label="smallest")
        ax.axhline(0, color="0.6", lw=0.8)
        ax.legend()
    elif all(v > 0 for v in top):
        ax.set_yscale("log")
    ax.set_xlabel("rank")
    ax.set_ylabel("eigenvalue")
    ax.grid(alpha=0.3)
    ax.set_title(_title(run, result), fontsize=9)
    return save_figure(fig, path)


def plot_density(run: Run, result: CurvatureResult, path: str | Path) -> Path:
    """Smoothed eigenvalue density (SLQ) on a log axis, as in Ghorbani et al. (2019)."""
    figure_format(Path(path))
    if result.density is None:
        raise _missing(result, run, "density", "--density")
    plt = pyplot()
    dens = result.density
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    values = [max(v, 1e-12) for v in dens.values]
    ax.semilogy(dens.grid, values, color="C0")
    ax.set_ylim(bottom=max(min(values), max(values) * 1e-8))
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density (log scale)")
    ax.grid(alpha=0.3)
    ax.set_title(_title(run, result) + f"\nnegative mass {dens.negative_mass:.3g}, sigma {dens.sigma:.2g}",
                 fontsize=9)
    return save_figure(fig, path)
