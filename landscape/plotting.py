"""Figures drawn from stored results (plotting computes nothing). Files are written atomically."""

from __future__ import annotations

import math
from pathlib import Path

from .atomic import atomic_path
from .errors import LandscapeError
from .runs import Run

FORMATS = ("png", "pdf", "svg")


def figure_format(path: Path) -> str:
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise LandscapeError(f"figure file {path} must end in .png, .pdf or .svg")
    return fmt


def pyplot():
    """matplotlib.pyplot with the non-interactive Agg backend (figures go to files only)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: int = 150) -> Path:
    """Save a matplotlib figure atomically; the format follows the file extension."""
    path = Path(path)
    fmt = figure_format(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight")
    finally:
        pyplot().close(fig)
    return path


def plot_training(run: Run, path: str | Path) -> Path:
    """Train/test loss (log scale) and, for classification, accuracy against epochs."""
    plt = pyplot()
    figure_format(Path(path))
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
    plt = pyplot()
    figure_format(Path(path))
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
