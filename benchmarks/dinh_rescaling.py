"""Which sharpness measures change under Dinh et al.'s (2017) function-preserving reparameterisation?

A ReLU MLP (2 x 100) is trained on MNIST-1D (Adam lr 1e-2, batch 100, 3000 steps); then its first
layer is multiplied by alpha and the second divided by alpha (``dinh_rescale``), which leaves every
output unchanged. Every measure of ``landscape.analysis.sharpness`` is computed on 1000 training
samples before and after, for alpha = 0.2 and 5.

    python benchmarks/dinh_rescaling.py [--save benchmarks/results/dinh_rescaling.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from landscape.analysis import load_checkpoint_model
from landscape.analysis.sharpness import MEASURES, dinh_rescale, loss_at, measure_all
from landscape.objective import Objective
from landscape.optim.training import train
from landscape.runs import Run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/dinh/mlp")
    parser.add_argument("--save")
    args = parser.parse_args()
    torch.set_num_threads(2)
    folder = Path(args.run)
    if not (Run.exists(folder) and Run.open(folder).finished):
        train({"data": {"name": "mnist1d"}, "model": {"name": "mlp"}, "optimizer": {"name": "adam", "lr": 1e-2},
               "training": {"steps": 3000, "batch_size": 100, "device": "cpu", "seed": 0}}, folder,
              resume=Run.exists(folder))
    loaded = load_checkpoint_model(folder, samples=1000)
    x, y = loaded.dataset.x_train, loaded.dataset.y_train
    names = [n for n in MEASURES if n != "keskar-subspace"]
    table = {}
    for alpha in (1.0, 0.2, 5.0):
        model = loaded.model if alpha == 1.0 else dinh_rescale(loaded.model, alpha)
        obj = Objective(model, x, y, loaded.loss)
        values, _ = measure_all(obj, names, seed=0)
        values["loss"] = loss_at(obj, obj.point())
        table[alpha] = values
        print(f"alpha {alpha:g}: " + ", ".join(f"{k} {v:.4g}" for k, v in values.items()), flush=True)
    print("| measure | original | alpha = 0.2 | alpha = 5 | changes? |")
    print("|---|---|---|---|---|")
    for name in ["loss", *names]:
        a, b, c = table[1.0][name], table[0.2][name], table[5.0][name]
        moved = max(abs(b - a), abs(c - a)) / max(abs(a), 1e-12)
        print(f"| {name} | {a:.4g} | {b:.4g} | {c:.4g} | {'yes' if moved > 0.1 else 'no'} ({100 * moved:.0f}%) |")
    if args.save:
        Path(args.save).write_text(json.dumps({str(k): v for k, v in table.items()}, indent=1))


if __name__ == "__main__":
    main()
