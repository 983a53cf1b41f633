"""README figures of loss surfaces: small- vs large-batch MNIST-1D MLPs (Keskar et al. 2017 setting,
drawn the Li et al. 2018 way), made only with the library that ``landscape train / analyze / plot`` use.

1. Train the default MLP with Adam (lr 1e-3) at batch 32 (25,000 steps, 200 epochs) and at batch 2000
   (half the data; 10,000 steps), both to a small training loss.
2. 2-D filter-normalised surfaces (``--grid`` points per axis on [-1, 1]^2) of both final checkpoints,
   drawn side by side with the same log-spaced contour levels.
3. The 1-D slice from the small-batch to the large-batch solution (t in [-0.5, 1.5]), train and test.
4. The PCA plane of the small-batch run with its trajectory.

    python benchmarks/surface_figures.py [--grid 51] [--runs runs/figures] [--out benchmarks/figures]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from landscape.analysis import evaluate_checkpoint, load_checkpoint_model
from landscape.analysis.surface import SurfaceSpec, compute_surface
from landscape.analysis.surface_plots import plot_surface
from landscape.optim.training import train
from landscape.plotting import pyplot, save_figure
from landscape.runs import Run


def trained(folder: Path, batch: int, steps: int) -> Path:
    config = {"data": {"name": "mnist1d"}, "model": {"name": "mlp"}, "optimizer": {"name": "adam", "lr": 1e-3},
              "training": {"steps": steps, "batch_size": batch, "device": "cpu", "seed": 0}}
    if not (Run.exists(folder) and Run.open(folder).finished):
        train(config, folder, resume=Run.exists(folder))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, default=51)
    parser.add_argument("--runs", default="runs/figures")
    parser.add_argument("--out", default="benchmarks/figures")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    runs = {"batch 32": trained(Path(args.runs) / "mlp-b32-25000", 32, 25000),
            "batch 2000": trained(Path(args.runs) / "mlp-b2000-10000", 2000, 10000)}
    surfaces = {}
    for label, folder in runs.items():
        loaded = load_checkpoint_model(folder)
        ev = evaluate_checkpoint(loaded)
        surfaces[label] = compute_surface(loaded, SurfaceSpec(dims=2, directions="filter", xrange=(-1, 1),
                                                              xnum=args.grid))
        print(f"{label}: train loss {ev.train_loss:.4f}, test acc {100 * ev.test_acc:.1f}%, surface "
              f"{surfaces[label].computed_points} points in {surfaces[label].seconds:.1f} s", flush=True)
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    lo = min(float(np.nanmin(s.train_loss)) for s in surfaces.values())
    hi = max(float(np.nanmax(s.train_loss)) for s in surfaces.values())
    levels = np.geomspace(max(lo, 1e-4), hi, 25)
    for ax, (label, s) in zip(axes, surfaces.items()):
        X, Y = np.meshgrid(s.xcoordinates, s.ycoordinates, indexing="ij")
        cs = ax.contour(X, Y, s.train_loss, levels=levels, cmap="viridis", norm=_log_norm(levels))
        ax.clabel(cs, cs.levels[::3], fontsize=6, fmt="%.2g")
        ax.set(title=f"MNIST-1D MLP, Adam, {label}", xlabel="x (filter-normalized)", ylabel="y")
    save_figure(fig, out / "surface_small_vs_large_batch.png")
    small, large = runs["batch 32"], runs["batch 2000"]
    line = compute_surface(load_checkpoint_model(small), SurfaceSpec(dims=1, between=str(large), xnum=81))
    plot_surface(line, "slice", out / "slice_small_to_large_batch.png")
    pca = compute_surface(load_checkpoint_model(small), SurfaceSpec(dims=2, directions="pca", xnum=args.grid))
    plot_surface(pca, "trajectory", out / "surface_pca_trajectory.png")
    print(f"1-D slice: train loss at t=0 {line.train_loss[20]:.4f}, t=1 {line.train_loss[60]:.4f}, "
          f"max between {float(np.max(line.train_loss[20:61])):.4f}")


def _log_norm(levels):
    from matplotlib.colors import LogNorm

    return LogNorm(levels[0], levels[-1])


if __name__ == "__main__":
    main()
