"""Figures of stored mode-connectivity results: loss and accuracy along the linear path and the
fitted curve (``path``), and the plane through both minima and the bend (``plane``, Garipov et al.
Fig. 1 style: train-loss contours, the straight segment and the curve)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from landscape.errors import LandscapeError
from landscape.plotting import pyplot, save_figure
from landscape.runs import Run

from .path_result import ConnectResult
from .surface import SurfaceResult


def find_path_result(run: Run, step: int, name: str | None = None) -> ConnectResult:
    """The connectivity result ``name`` of checkpoint ``step``, or its most recent one."""
    folder = run.analysis_dir / f"{int(step):08d}"
    if name:
        path = folder / (name if name.endswith(".h5") else f"{name}.h5")
        if not path.exists():
            raise LandscapeError(f"no path result {name!r} for checkpoint {step} (looked for {path})")
    else:
        found = sorted((p for p in folder.glob("path-*.h5") if not p.name.endswith((".training.h5", ".autoneb.h5"))
                        and not p.stem.endswith("-plane")), key=lambda p: p.stat().st_mtime, reverse=True)
        if not found:
            raise LandscapeError(f"no mode-connectivity result for checkpoint {step}: run "
                                 f"`landscape analyze {run.path} --connect OTHER` first")
        path = found[0]
    return ConnectResult.read(path, step)


LABELS = {"bezier": "Bezier curve", "polychain": "PolyChain", "autoneb": "AutoNEB path"}


def plot_path(result: ConnectResult, path: str | Path) -> Path:
    """Loss (log scale) and error along the linear path and, when fitted, the curve; train and test."""
    plt = pyplot()
    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(11, 4))
    paths = [("linear path", result.linear, "-")]
    if result.fitted is not None:
        paths.append((LABELS.get(result.curve.value, result.curve.value), result.fitted, "--"))
    for name, p, style in paths:
        t = np.asarray(p.t)
        ax_loss.plot(t, p.train_loss, "b" + style, label=f"{name}, train")
        ax_loss.plot(t, p.test_loss, "r" + style, label=f"{name}, test")
        if p.train_acc is not None:
            ax_err.plot(t, 100 * (1 - np.asarray(p.train_acc)), "b" + style, label=f"{name}, train")
            ax_err.plot(t, 100 * (1 - np.asarray(p.test_acc)), "r" + style, label=f"{name}, test")
    title = f"barrier (train loss): linear {result.linear.barrier['train_loss']['barrier']:.3g}"
    if result.fitted is not None:
        title += f", {paths[1][0]} {result.fitted.barrier['train_loss']['barrier']:.3g}"
    ax_loss.set(xlabel="t (0: this checkpoint, 1: the other)", ylabel="loss", yscale="log", title=title)
    ax_loss.legend(fontsize=7)
    ax_err.set(xlabel="t", ylabel="error (%)", title="error along the path" + (" (aligned)" if result.aligned else ""))
    if ax_err.lines:
        ax_err.legend(fontsize=7)
    return save_figure(fig, path)


def plot_plane(result: ConnectResult, path: str | Path) -> Path:
    """Train loss on the plane through both minima and the bend, with the straight segment and the curve."""
    if result.plane is None:
        raise LandscapeError("this result has no plane: rerun the connection with --curve bezier|polychain "
                             "--plane-grid N")
    plane = result.plane
    surface = SurfaceResult.load(plane["surface"])
    plt = pyplot()
    from matplotlib.colors import LogNorm

    z = np.asarray(surface.train_loss, dtype=float)
    X, Y = np.meshgrid(surface.xcoordinates, surface.ycoordinates, indexing="ij")
    fig, ax = plt.subplots(figsize=(6.5, 5))
    levels = np.geomspace(max(np.nanmin(z), 1e-6), np.nanmax(z), 25)
    filled = ax.contourf(X, Y, z, levels=levels, cmap="viridis", norm=LogNorm(levels[0], levels[-1]))
    fig.colorbar(filled, ax=ax, label="train loss", ticks=np.geomspace(levels[0], levels[-1], 7), format="%.2g")
    w1, bend = plane["w1"], plane["bend"]
    ax.plot([0, w1[0]], [0, w1[1]], "w--", linewidth=1.2, label="linear path")
    xy = np.asarray(plane["curve_xy"])
    ax.plot(xy[:, 0], xy[:, 1], "w-", linewidth=1.8, label="fitted curve")
    ax.plot([0, w1[0]], [0, w1[1]], "ko", markersize=6)
    ax.plot([bend[0]], [bend[1]], "k^", markersize=6, label="bend")
    ax.set(xlabel="along w1 - w0", ylabel="towards the bend", title="plane through both minima and the bend")
    ax.legend(fontsize=7, loc="upper right")
    return save_figure(fig, path)
