"""Edge of stability (Cohen et al. 2021) at CPU scale: full-batch gradient descent with the MSE loss on
a tanh MLP (2 x 64) fitting the ``teacher-student`` regression data, lambda_max tracked every 20 steps
with ``track_curvature_every`` (the same code as ``landscape train --track-curvature-every``).

Runs: gradient descent at lr 0.2, 0.3 and 0.4 (threshold 2/lr = 10, 6.67 and 5) and heavy-ball momentum
0.9 at lr 0.5 (threshold (2 + 2 * 0.9)/lr = 7.6). lambda_max rises (progressive sharpening) until it
reaches the threshold and then hovers around it while the loss keeps decreasing non-monotonically.

    python benchmarks/edge_of_stability.py [--steps 3000] [--runs runs/eos] [--figure FILE] [--save FILE]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch

from landscape.optim.training import train
from landscape.plotting import pyplot, save_figure, stability_factor
from landscape.runs import Run

RUNS = {"GD lr 0.2": ("sgd", 0.2), "GD lr 0.3": ("sgd", 0.3), "GD lr 0.4": ("sgd", 0.4),
        "momentum 0.9, lr 0.5": ("momentum", 0.5)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--runs", default="runs/eos")
    parser.add_argument("--figure", default="benchmarks/figures/edge_of_stability.png")
    parser.add_argument("--save")
    args = parser.parse_args()
    torch.set_num_threads(1)
    summary = {}
    plt = pyplot()
    fig, axes = plt.subplots(2, len(RUNS), figsize=(4.2 * len(RUNS), 6), sharex=True)
    for j, (label, (name, lr)) in enumerate(RUNS.items()):
        folder = Path(args.runs) / f"{name}-lr{lr:g}-{args.steps}"
        if not (Run.exists(folder) and Run.open(folder).finished):
            config = {"data": {"name": "teacher-student"},
                      "model": {"name": "mlp", "widths": [64, 64], "activation": "tanh"},
                      "optimizer": {"name": name, "lr": lr},
                      "training": {"steps": args.steps, "batch_size": 10**6, "device": "cpu", "seed": 0,
                                   "track_curvature_every": 20, "eval_every": 20}}
            train(config, folder, resume=Run.exists(folder))
        run = Run.open(folder)
        m = run.metrics
        rows = [i for i, v in enumerate(m["lambda_max"]) if not math.isnan(v)]
        steps = np.array([m["step"][i] for i in rows])
        lam = np.array([m["lambda_max"][i] for i in rows])
        threshold = stability_factor(run.config["optimizer"])[0] / lr
        late = lam[steps >= args.steps // 2]
        summary[label] = {"threshold": threshold, "lambda_max_initial": float(lam[0]),
                          "lambda_max_peak": float(lam.max()), "late_mean": float(late.mean()),
                          "late_min": float(late.min()), "late_max": float(late.max()),
                          "late_mean_over_threshold": float(late.mean() / threshold),
                          "final_train_loss": float(m["train_loss"][-1])}
        print(f"{label}: {json.dumps(summary[label])}", flush=True)
        ax = axes[0, j]
        ax.plot(steps, lam, "C0", linewidth=1, label="lambda_max")
        ax.axhline(threshold, color="k", linestyle="--", linewidth=1,
                   label=stability_factor(run.config["optimizer"])[1] + f" = {threshold:.3g}")
        ax.set(title=label, ylabel="lambda_max")
        ax.legend(fontsize=8)
        axes[1, j].plot(m["step"], m["train_loss"], "C1", linewidth=1)
        axes[1, j].set(xlabel="step", ylabel="train loss (MSE)", yscale="log")
    save_figure(fig, args.figure)
    if args.save:
        Path(args.save).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
