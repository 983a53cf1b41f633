"""MNIST-1D accuracy and training-loop overhead.

For each model (MLP, CNN) and seed, trains with the MNIST-1D paper's recipe (Adam, lr 1e-2,
batch 100, 6000 steps) through ``landscape.optim.train`` (with evaluation every epoch and ~20
HDF5 checkpoints), and the same steps through a bare PyTorch loop (same data, batches and model),
then reports test accuracy and the wall-clock ratio of the two.

    python benchmarks/mnist1d_training.py [--seeds 3] [--steps 6000] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import torch

from landscape.data import load_dataset
from landscape.losses import evaluate
from landscape.models import build_model
from landscape.optim import train
from landscape.optim.training import epoch_order
from landscape.seeding import seed_everything


def bare_loop(model_name: str, seed: int, steps: int, batch: int = 100, lr: float = 1e-2) -> tuple[float, float]:
    ds = load_dataset("mnist1d")
    seed_everything(seed)
    model = build_model(model_name, ds.input_shape, ds.output_dim)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    spe = -(-ds.num_train // batch)
    t0 = time.perf_counter()
    order = None
    for step in range(steps):
        epoch, b = divmod(step, spe)
        if b == 0:
            order = epoch_order(seed, epoch, ds.num_train, ds.x_train.device)
        idx = order[b * batch:(b + 1) * batch]
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(ds.x_train[idx]), ds.y_train[idx])
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - t0
    return evaluate(model, ds.x_test, ds.y_test, "cross_entropy")["acc"], seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    results = {}
    for model in ("mlp", "conv1d"):
        rows = []
        for seed in range(args.seeds):
            with tempfile.TemporaryDirectory() as tmp:
                cfg = {"model": {"name": model}, "optimizer": {"name": "adam", "lr": 1e-2},
                       "training": {"steps": args.steps, "batch_size": 100, "seed": seed, "device": "cpu"}}
                t0 = time.perf_counter()
                res = train(cfg, f"{tmp}/run")
                ours_total = time.perf_counter() - t0
            bare_acc, bare_s = bare_loop(model, seed, args.steps)
            rows.append({"seed": seed, "test_acc": res.final["test_acc"], "train_loop_s": res.seconds,
                         "total_s": ours_total, "bare_test_acc": bare_acc, "bare_s": bare_s})
        results[model] = {"runs": rows, "mean_test_acc": statistics.mean(r["test_acc"] for r in rows),
                          "mean_s": statistics.mean(r["train_loop_s"] for r in rows),
                          "mean_bare_s": statistics.mean(r["bare_s"] for r in rows)}
    if args.json:
        print(json.dumps(results, indent=2))
        return
    paper = {"mlp": "68%", "conv1d": "94%"}
    print(f"MNIST-1D, Adam lr 1e-2, batch 100, {args.steps} steps, {args.seeds} seeds, "
          f"{torch.get_num_threads()} CPU threads")
    print(f"{'model':8} {'paper':>6} {'test acc (per seed)':>28} {'mean':>7} {'landscape s':>12} "
          f"{'bare loop s':>12} {'ratio':>6}")
    for model, r in results.items():
        accs = " ".join(f"{100 * x['test_acc']:.1f}" for x in r["runs"])
        print(f"{model:8} {paper[model]:>6} {accs:>28} {100 * r['mean_test_acc']:6.1f}% {r['mean_s']:12.1f} "
              f"{r['mean_bare_s']:12.1f} {r['mean_s'] / r['mean_bare_s']:6.2f}")


if __name__ == "__main__":
    main()
