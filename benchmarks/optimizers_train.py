"""Training with first- and second-order optimizers at CPU scale (the CurveBall paper's Sec. 4 setups).

Setups, all on MNIST-1D (4000 training sequences, batch 128):
- ``cnn`` / ``cnn-bn``: the paper's basic CNN (5x5 convolutions 32-32-64-64, max-pooling; ``landscape``
  model ``cnn``) without and with batch normalisation;
- ``random``: the random-architecture protocol of appendix B.3 (``random-cnn``; depth 3-10, channels
  32-256 in powers of two, here scaled by 1/8 for the CPU), ``--nets`` networks held fixed across
  optimizers; the median and quartiles of the training loss are reported.

Optimizers: SGD with momentum and Adam with the learning rate picked from {1e-1, 1e-2, 1e-3} by final
training loss (the paper's 10^-k grid), CurveBall (no tuning), AdaHessian (its default lr 0.15),
K-FAC (lr from the same grid) and Hessian-free (50 CG iterations at most; basic CNN only). On the
random nets each method keeps the learning rate chosen on the basic CNN. Every run takes the same
batches; the full training loss is measured every ``--eval-every`` steps (not timed). Reported: final
training loss, seconds, and the cost of a step relative to an SGD step. ``--figure`` draws loss
against iterations and against wall-clock time.

    python benchmarks/optimizers_train.py [--steps 300] [--nets 12] [--json] [--figure PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from landscape.data import load_dataset
from landscape.losses import evaluate, get_loss
from landscape.models import build_model
from landscape.optim import build_optimizer, make_closure

GRID = [0.1, 0.01, 0.001]
OPTIMIZERS = {
    "momentum": {"grid": GRID},
    "adam": {"grid": GRID},
    "curveball": {},
    "adahessian": {},
    "kfac": {"grid": GRID},
    "hessian-free": {"options": {"cg_iterations": 50}, "random": False},  # ~50x an SGD step: basic CNN only
}


def train_once(model_spec, name: str, options: dict, ds, steps: int, batch: int, eval_every: int, seed: int = 0):
    """(steps, full training losses, cumulative training seconds) of one run."""
    torch.manual_seed(seed)
    model = build_model(model_spec, ds.input_shape, ds.output_dim)
    opt = build_optimizer({"name": name, **options}, model.parameters(), model=model, loss="cross_entropy")
    loss_fn = get_loss("cross_entropy")
    g = torch.Generator().manual_seed(seed)
    xs, losses, times = [0], [evaluate(model, ds.x_train, ds.y_train, "cross_entropy")["loss"]], [0.0]
    seconds = 0.0
    model.train()
    for step in range(1, steps + 1):
        idx = torch.randint(0, ds.num_train, (batch,), generator=g)
        closure = make_closure(model, opt, loss_fn, ds.x_train[idx], ds.y_train[idx])
        t0 = time.perf_counter()
        opt.step(closure)
        seconds += time.perf_counter() - t0
        if step % eval_every == 0 or step == steps:
            value = evaluate(model, ds.x_train, ds.y_train, "cross_entropy")["loss"]
            model.train()
            xs.append(step)
            losses.append(value if np.isfinite(value) else float("nan"))
            times.append(seconds)
            if not np.isfinite(value):
                break
    return xs, losses, times


def best_of_grid(model_spec, name: str, spec: dict, ds, args) -> tuple[dict, tuple]:
    options = dict(spec.get("options", {}))
    if "grid" not in spec:
        return options, train_once(model_spec, name, options, ds, args.steps, args.batch, args.eval_every)
    best = None
    for lr in spec["grid"]:
        run = train_once(model_spec, name, {**options, "lr": lr}, ds, args.steps, args.batch, args.eval_every)
        final = run[1][-1] if np.isfinite(run[1][-1]) else float("inf")
        if best is None or final < best[0]:
            best = (final, {**options, "lr": lr}, run)
    return best[1], best[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--nets", type=int, default=12)
    parser.add_argument("--setups", default="cnn,cnn-bn,random")
    parser.add_argument("--optimizers", default=",".join(OPTIMIZERS))
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--save")
    parser.add_argument("--figure")
    args = parser.parse_args()
    torch.set_num_threads(1)
    ds = load_dataset("mnist1d")
    names = args.optimizers.split(",")
    results: dict = {}
    t_start = time.perf_counter()
    for setup in args.setups.split(","):
        if setup in ("cnn", "cnn-bn"):
            spec = {"name": "cnn", "bn": setup == "cnn-bn"}
            results[setup] = {}
            for name in names:
                options, (xs, losses, times) = best_of_grid(spec, name, OPTIMIZERS[name], ds, args)
                results[setup][name] = {"settings": options, "steps": xs, "loss": losses, "seconds": times,
                                        "ms_per_step": 1e3 * times[-1] / max(xs[-1], 1)}
                print(f"[{time.perf_counter() - t_start:6.0f}s] {setup:7s} {name:13s} final loss {losses[-1]:.4f} "
                      f"{results[setup][name]['ms_per_step']:.1f} ms/step {options}", flush=True)
        elif setup == "random":
            results["random"] = {}
            for name in names:
                if not OPTIMIZERS[name].get("random", True):
                    continue
                finals, curves, ms = [], [], []
                for net in range(args.nets):
                    spec = {"name": "random-cnn", "seed": net, "channel_scale": 0.125}
                    options = OPTIMIZERS[name].get("options", {})
                    if "grid" in OPTIMIZERS[name]:  # the learning rate chosen on the basic CNN
                        options = results.get("cnn", {}).get(name, {}).get("settings", {"lr": 0.01})
                    xs, losses, times = train_once(spec, name, options, ds, args.steps, args.batch, args.eval_every)
                    finals.append(losses[-1])
                    curves.append(losses)
                    ms.append(1e3 * times[-1] / max(xs[-1], 1))
                q = np.nanpercentile(np.array(finals, dtype=float), [25, 50, 75]).tolist()
                results["random"][name] = {"final_quartiles": q, "finals": finals, "steps": xs,
                                           "median_curve": np.nanmedian(np.array(curves, dtype=float), 0).tolist(),
                                           "ms_per_step": statistics.median(ms)}
                print(f"[{time.perf_counter() - t_start:6.0f}s] random  {name:13s} final loss quartiles "
                      f"{q[0]:.3f} / {q[1]:.3f} / {q[2]:.3f}", flush=True)
    base = {s: r["momentum"]["ms_per_step"] for s, r in results.items() if "momentum" in r}
    for s, rows in results.items():
        for r in rows.values():
            r["relative_step_cost"] = r["ms_per_step"] / base[s] if s in base else None
    if args.save:
        with open(args.save, "w") as fh:
            json.dump(results, fh)
    if args.figure:
        draw(results, args.figure)
    if args.json:
        print(json.dumps(results))
        return
    print("| setup | optimizer | settings | final training loss | ms / step | x SGD step |")
    print("|---|---|---|---|---|---|")
    for s, rows in results.items():
        for n, r in rows.items():
            final = (f"{r['loss'][-1]:.3f}" if "loss" in r else
                     "{:.3f} / {:.3f} / {:.3f}".format(*r["final_quartiles"]))
            print(f"| {s} | {n} | {r.get('settings', '')} | {final} | {r['ms_per_step']:.1f} | "
                  f"{r['relative_step_cost']:.2f} |")


def draw(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from landscape.plotting import save_figure

    setups = [s for s in ("cnn", "cnn-bn") if s in results]
    fig, axes = plt.subplots(2, len(setups) + ("random" in results), figsize=(4.2 * (len(setups) + 1), 7),
                             squeeze=False)
    for j, s in enumerate(setups):
        for n, r in results[s].items():
            axes[0][j].semilogy(r["steps"], r["loss"], label=n)
            axes[1][j].semilogy(r["seconds"], r["loss"], label=n)
        axes[0][j].set(title=f"basic CNN{' + BN' if s == 'cnn-bn' else ''}, MNIST-1D", xlabel="iteration",
                       ylabel="training loss")
        axes[1][j].set(xscale="log", xlabel="seconds (1 CPU thread)", ylabel="training loss")
    if "random" in results:
        j = len(setups)
        for n, r in results["random"].items():
            axes[0][j].semilogy(r["steps"], r["median_curve"], label=n)
        axes[0][j].set(title="random CNNs (median)", xlabel="iteration", ylabel="training loss")
        axes[1][j].axis("off")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


if __name__ == "__main__":
    main()
