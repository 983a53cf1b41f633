"""Figures drawn from stored results (plotting computes nothing). Files are written atomically."""

from __future__ import annotations

import math
from pathlib import Path

from .atomic import atomic_path
from .errors import LandscapeError
from .runs import Run

FORMATS = ("png", "pdf", "svg")


def _figure_format(path: Path) -> str:
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise LandscapeError(f"figure file {path} must end in .png, .pdf or .svg")
    return fmt


def _pyplot():
    """matplotlib.pyplot with the non-interactive Agg backend (figures go to files only)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: int = 150) -> Path:
    """Save a matplotlib figure atomically; the format follows the file extension."""
    path = Path(path)
    fmt = _figure_format(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight")
    finally:
        _pyplot().close(fig)
    return path


def plot_training(run: Run, path: str | Path) -> Path:
    """Train/test loss (log scale) and, for classification, accuracy against epochs."""
    plt = _pyplot()
    _figure_format(Path(path))
    m = run.metrics
    if not m.get("step"):
        raise LandscapeError(f"run {run.path} has no metrics yet")
    has_acc = "train_acc" in m and any(not math.isnan(v) for v in m["train_acc"])
    fig, axes = plt.subplots(1, 2 if has_acc else 1, figsize=(10 if has_acc else 5.5, 3.8), squeeze=False)
    ax = axes[0, 0]
    epochs = m["epoch"]
    ax.plot(epochs, m["train_loss"], label="train", color="C0")
    ax.plot(epochs, m["test_loss"], label="test", color="C1")
    if all(v > 0 for v in m["train_loss"] + m["test_loss"] if not math.isnan(v)):
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"loss ({run.config['training'].get('loss', '')})")
    ax.grid(alpha=0.3)
    ax.legend()
    if has_acc:
        ax = axes[0, 1]
        ax.plot(epochs, [100 * v for v in m["train_acc"]], label="train", color="C0")
        ax.plot(epochs, [100 * v for v in m["test_acc"]], label="test", color="C1")
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend()
    cfg = run.config
    fig.suptitle(f"{cfg['model']['name']} on {cfg['data']['name']}, {cfg['optimizer']['name']} "
                 f"lr={cfg['optimizer']['lr']:g}, batch {cfg['training']['batch_size']}", fontsize=10)
    return save_figure(fig, path)


def stability_factor(optimizer: dict) -> tuple[float, str] | None:
    """c with gradient descent on a quadratic of curvature lambda stable iff lambda < c / lr (Cohen et al.
    2021): 2 for SGD, 2 + 2 mu for heavy-ball momentum (torch's SGD, dampening 0), (2 + 2 mu) / (1 + 2 mu)
    for Nesterov; None for adaptive methods (their threshold is on the preconditioned Hessian)."""
    name = optimizer.get("name")
    if name == "sgd":
        return 2.0, "2/lr"
    if name == "momentum" and not optimizer.get("dampening"):
        mu = float(optimizer.get("momentum", 0.9))
        return 2.0 + 2.0 * mu, f"(2+2*{mu:g})/lr"
    if name == "nesterov":
        mu = float(optimizer.get("momentum", 0.9))
        return (2.0 + 2.0 * mu) / (1.0 + 2.0 * mu), f"(2+2*{mu:g})/((1+2*{mu:g}) lr)"
    return None


def plot_sharpness(run: Run, path: str | Path) -> Path:
    """lambda_max tracked along training with the stability threshold c/lr, the trace when tracked,
    and the training loss."""
    plt = _pyplot()
    _figure_format(Path(path))
    m = run.metrics
    if "lambda_max" not in m or all(math.isnan(v) for v in m["lambda_max"]):
        raise LandscapeError(f"run {run.path} has no tracked curvature: train it with --track-curvature-every K")
    rows = [i for i, v in enumerate(m["lambda_max"]) if not math.isnan(v)]
    steps = [m["step"][i] for i in rows]
    has_trace = "trace" in m and any(not math.isnan(v) for v in m["trace"])
    fig, axes = plt.subplots(1, 3 if has_trace else 2, figsize=(15 if has_trace else 10, 3.8))
    ax, ax_loss = axes[0], axes[-1]
    if has_trace:
        axes[1].plot(steps, [m["trace"][i] for i in rows], "C2.-", markersize=3)
        axes[1].set(xlabel="step", ylabel="trace of the Hessian", title="trace along training")
        axes[1].grid(alpha=0.3)
    ax.plot(steps, [m["lambda_max"][i] for i in rows], "C0.-", markersize=3, label="lambda_max")
    factor = stability_factor(run.config["optimizer"])
    if factor is not None:
        ax.plot(steps, [factor[0] / m["lr"][i] for i in rows], "k--", linewidth=1, label=factor[1])
    ax.set(xlabel="step", ylabel="lambda_max (training loss Hessian)", title="sharpness along training")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax_loss.plot(m["step"], m["train_loss"], "C1")
    ax_loss.set(xlabel="step", ylabel="train loss", yscale="log")
    ax_loss.grid(alpha=0.3)
    cfg = run.config
    fig.suptitle(f"{cfg['model']['name']} on {cfg['data']['name']}, {cfg['optimizer']['name']} "
                 f"lr={cfg['optimizer']['lr']:g}, batch {cfg['training']['batch_size']}", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    return save_figure(fig, path)


def _stored_curvature(run: Run, checkpoint: str | int, curvature: str, key: str, flag: str) -> tuple[int, dict]:
    from .results import load_result, result_path

    step = run.resolve_checkpoint(checkpoint)
    path = result_path(run, step, curvature)
    if not path.exists():
        raise LandscapeError(f"no {curvature} analysis for checkpoint {step}; run: landscape analyze {run.path} "
                             f"--checkpoint {step} {flag}" + (f" --curvature {curvature}" if curvature != "hessian" else ""))
    result, _ = load_result(path)
    if key not in result:
        raise LandscapeError(f"the {curvature} analysis of checkpoint {step} has no {key}; run: landscape analyze "
                             f"{run.path} --checkpoint {step} {flag}")
    return step, result


def _title(run: Run, step: int, curvature: str) -> str:
    cfg = run.config
    return (f"{curvature} of {cfg['model']['name']} on {cfg['data']['name']} ({cfg['optimizer']['name']}), "
            f"step {step}")


def plot_spectrum(run: Run, path: str | Path, checkpoint: str | int = "last", curvature: str = "hessian") -> Path:
    """Top (and smallest) eigenvalues of a stored curvature analysis, by rank."""
    plt = _pyplot()
    _figure_format(Path(path))
    step, result = _stored_curvature(run, checkpoint, curvature, "eigenvalues", "--top-k 10")
    top = result["eigenvalues"]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.stem(range(1, len(top) + 1), top, basefmt=" ", label="largest")
    if result.get("smallest_eigenvalues"):
        low = result["smallest_eigenvalues"]
        ax.stem(range(len(top) + 2, len(top) + 2 + len(low)), low, linefmt="C3-", markerfmt="C3o", basefmt=" ",
                label="smallest")
        ax.axhline(0, color="0.6", lw=0.8)
        ax.legend()
    elif all(v > 0 for v in top):
        ax.set_yscale("log")
    ax.set_xlabel("rank")
    ax.set_ylabel("eigenvalue")
    ax.grid(alpha=0.3)
    ax.set_title(_title(run, step, curvature), fontsize=9)
    return save_figure(fig, path)


def plot_density(run: Run, path: str | Path, checkpoint: str | int = "last", curvature: str = "hessian") -> Path:
    """Smoothed eigenvalue density (SLQ) on a log axis, as in Ghorbani et al. (2019)."""
    plt = _pyplot()
    _figure_format(Path(path))
    step, result = _stored_curvature(run, checkpoint, curvature, "density", "--density")
    dens = result["density"]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    values = [max(v, 1e-12) for v in dens["values"]]
    ax.semilogy(dens["grid"], values, color="C0")
    ax.set_ylim(bottom=max(min(values), max(values) * 1e-8))
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density (log scale)")
    ax.grid(alpha=0.3)
    ax.set_title(_title(run, step, curvature) + f"\nnegative mass {dens['negative_mass']:.3g}, "
                 f"sigma {dens['sigma']:.2g}", fontsize=9)
    return save_figure(fig, path)
