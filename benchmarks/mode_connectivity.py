"""Mode connectivity on MNIST-1D: two networks trained from different seeds, connected by the linear
path, a Bezier curve (Garipov et al. 2018), AutoNEB (Draxler et al. 2018) and the linear path after
weight-matching alignment (Ainsworth et al. 2023).

Pairs (the MNIST-1D recipe: Adam lr 1e-2, batch 100, 6000 steps, seeds 0 and 1): the default MLP
(2 x 100), the MNIST-1D CNN (``conv1d``) and a wide MLP (2 x 512, lr 1e-3) for the alignment effect.
``--save`` merges into an existing results file, so pairs can be rerun one at a time.
Barriers are on the mean training loss over all 4000 training samples (max_t L(t) - linear
interpolation of the end losses); the Bezier bend is trained with Adam (``--curve-lr``) for
``--curve-epochs`` epochs.

    python benchmarks/mode_connectivity.py [--runs runs/connectivity] [--figures benchmarks/figures]
                                           [--save benchmarks/results/mode_connectivity.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from landscape.analysis import load_checkpoint_model
from landscape.analysis.autoneb import NEBOptions
from landscape.analysis.curves import CurveTraining
from landscape.analysis.path_plots import plot_path, plot_plane
from landscape.analysis.paths import ConnectSpec, connect
from landscape.optim.training import train
from landscape.runs import Run

PAIRS = {"mlp": ({"name": "mlp"}, 1e-2), "conv1d": ({"name": "conv1d"}, 1e-2),
         "wide-mlp": ({"name": "mlp", "widths": [512, 512]}, 1e-3)}  # lr 1e-2 leaves one wide run unconverged


def trained(folder: Path, model: dict, lr: float, seed: int) -> Path:
    config = {"data": {"name": "mnist1d"}, "model": model, "optimizer": {"name": "adam", "lr": lr},
              "training": {"steps": 6000, "batch_size": 100, "device": "cpu", "seed": seed}}
    if not (Run.exists(folder) and Run.open(folder).finished):
        train(config, folder, resume=Run.exists(folder))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs/connectivity")
    parser.add_argument("--figures", default="benchmarks/figures")
    parser.add_argument("--pairs", default=",".join(PAIRS))
    parser.add_argument("--curve-epochs", type=int, default=100)
    parser.add_argument("--curve-lr", type=float, default=3e-3)
    parser.add_argument("--save")
    args = parser.parse_args()
    torch.set_num_threads(2)
    results = json.loads(Path(args.save).read_text()) if args.save and Path(args.save).exists() else {}
    for pair in args.pairs.split(","):
        a = trained(Path(args.runs) / f"{pair}-lr{PAIRS[pair][1]:g}-s0", *PAIRS[pair], 0)
        b = trained(Path(args.runs) / f"{pair}-lr{PAIRS[pair][1]:g}-s1", *PAIRS[pair], 1)
        loaded = load_checkpoint_model(a)
        row: dict = {}
        t0 = time.perf_counter()
        lin = connect(loaded, ConnectSpec(other=str(b), curve="linear", points=41))
        row["linear_barrier"] = lin["linear"]["barrier"]["train_loss"]["barrier"]
        row["linear_max"] = lin["linear"]["barrier"]["train_loss"]["max"]
        row["endpoint_train_loss"] = [float(lin["linear"]["train_loss"][0]), float(lin["linear"]["train_loss"][-1])]
        row["linear_test_error_barrier"] = lin["linear"]["barrier"]["test_error"]["barrier"]
        row["ensemble"] = lin["ensemble"]
        if pair != "wide-mlp":
            bez = connect(loaded, ConnectSpec(other=str(b), curve="bezier", points=41, plane_grid=31,
                                              training=CurveTraining(epochs=args.curve_epochs,
                                                                     optimizer={"name": "adam", "lr": args.curve_lr})))
            row["bezier_barrier"] = bez["fitted"]["barrier"]["train_loss"]["barrier"]
            row["bezier_max"] = bez["fitted"]["barrier"]["train_loss"]["max"]
            row["bezier_test_error_barrier"] = bez["fitted"]["barrier"]["test_error"]["barrier"]
            row["ratio_bezier_to_linear"] = row["bezier_barrier"] / row["linear_barrier"]
            row["ensemble"] = bez["ensemble"]
            neb = connect(loaded, ConnectSpec(other=str(b), curve="autoneb", points=41,
                                              neb=NEBOptions(cycles=4, steps=150, lr=0.05, batch_size=500)))
            row["autoneb_saddle"] = neb["saddle_train_loss"]
            row["autoneb_barrier"] = neb["fitted"]["barrier"]["train_loss"]["barrier"]
            row["autoneb_pivots"] = neb["fitted"]["pivots"]
            out = Path(args.figures)
            plot_path(bez, out / f"connectivity_{pair}_path.png")
            plot_plane(bez, out / f"connectivity_{pair}_plane.png")
        ali = connect(loaded, ConnectSpec(other=str(b), curve="linear", points=41, align=True))
        row["aligned_linear_barrier"] = ali["linear"]["barrier"]["train_loss"]["barrier"]
        row["aligned_reduction"] = 1 - row["aligned_linear_barrier"] / row["linear_barrier"]
        row["seconds"] = time.perf_counter() - t0
        results[pair] = row
        print(f"{pair}: {json.dumps(row)}", flush=True)
    if args.save:
        Path(args.save).write_text(json.dumps(results, indent=1))
    print("| pair | end losses | linear: max / barrier | Bezier: max / barrier | Bezier / linear | AutoNEB saddle | "
          "aligned linear barrier |")
    print("|---|---|---|---|---|---|---|")
    for pair, r in results.items():
        bez = (f"{r['bezier_max']:.3f} / {r['bezier_barrier']:.3f} | {r['ratio_bezier_to_linear']:.3f} | "
               f"{r['autoneb_saddle']:.3f}") if "bezier_max" in r else "- | - | -"
        print(f"| {pair} | {r['endpoint_train_loss'][0]:.3f}, {r['endpoint_train_loss'][1]:.3f} | "
              f"{r['linear_max']:.3f} / {r['linear_barrier']:.3f} | {bez} | {r['aligned_linear_barrier']:.3f} "
              f"({100 * r['aligned_reduction']:.0f}% lower) |")


if __name__ == "__main__":
    main()
