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


def save_figure(fig, path: str | Path, dpi: int = 150) -> Path:
    """Save a matplotlib figure atomically; the format follows the file extension."""
    import matplotlib.pyplot as plt

    path = Path(path)
    fmt = _figure_format(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def plot_training(run: Run, path: str | Path) -> Path:
    """Train/test loss (log scale) and, for classification, accuracy against epochs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
