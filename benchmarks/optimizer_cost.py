"""Per-step cost of every optimizer relative to SGD on the MNIST-1D MLP (2x100 ReLU, batch 100).

Each optimizer takes ``--steps`` steps through ``opt.step(closure)`` on the same sequence of
mini-batches (the closure zeroes the gradients, evaluates the loss and back-propagates); the
measurement is repeated ``--repeats`` times, interleaved across optimizers, and the median is
reported with the number of closure evaluations (forward-backward passes) per step (the curvature
methods evaluate the model themselves: their count is 0; their inner iterations are capped at 10
CG iterations or 10 Lanczos steps here).
BFGS holds a dense 15,210^2 inverse Hessian here (1.9 GB), far beyond its intended use; it is
timed anyway to show why ``bfgs`` refuses models above 4096 parameters by default.

    python benchmarks/optimizer_cost.py [--steps 100] [--repeats 5] [--json]
    python benchmarks/optimizer_cost.py --model resnet20 --device cuda --optimizers sgd,momentum,curveball,kfac

``--model resnet20``: CIFAR-shaped ResNet-20 (BatchNorm) on random data, batch 128; ``--device``
times on that device (CUDA synchronised around every timed run).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from landscape.data import load_dataset
from landscape.losses import cross_entropy
from landscape.models import build_model
from landscape.optim import build_optimizer
from timing import sync

SUITE = {
    "sgd": {"lr": 0.1}, "momentum": {"lr": 0.02}, "nesterov": {"lr": 0.02}, "adagrad": {"lr": 0.01},
    "rmsprop": {"lr": 1e-3}, "adam": {"lr": 1e-3}, "adamw": {"lr": 1e-3}, "delta-bar-delta": {"lr": 0.01},
    "bb": {"lr": 0.01, "steps_per_epoch": 40}, "parabola": {"lr": 0.01}, "cg-fr": {}, "cg-pr": {},
    "lbfgs": {"max_iter": 1}, "bfgs": {"max_parameters": 20000}, "lookahead:adam": {"lr": 1e-3},
    "polyak:sgd": {"lr": 0.1}, "sam:sgd": {"lr": 0.1}, "asam:sgd": {"lr": 0.1}, "sam:sgd (m=25)": {"lr": 0.1, "m": 25},
    "curveball": {}, "adahessian": {}, "kfac": {"lr": 0.01}, "newton-cg": {"cg_iterations": 10},
    "hessian-free": {"cg_iterations": 10}, "gauss-newton": {"dense_limit": 0, "cg_iterations": 10},
    "levenberg-marquardt": {"dense_limit": 0, "cg_iterations": 10}, "saddle-free-newton": {"krylov_dim": 10},
}


def measure(name: str, options: dict, model_name: str, shape, outputs: int, batches: list,
            device: torch.device) -> tuple[float, float]:
    torch.manual_seed(0)
    model = build_model(model_name, shape, outputs).to(device)
    opt = build_optimizer({"name": name.split(" ")[0], **options}, model.parameters(), model=model,
                          loss="cross_entropy")
    calls = [0]
    for step, (x, y) in enumerate(batches):
        def closure(part=None, x=x, y=y):
            calls[0] += 1
            opt.zero_grad(set_to_none=True)
            if part is not None:
                x, y = x.tensor_split(part[1])[part[0]], y.tensor_split(part[1])[part[0]]
            loss = cross_entropy(model(x), y)
            loss.backward()
            return loss
        closure.batch_size = int(x.shape[0])
        closure.batch = (x, y)
        if step == 1:  # the first step allocates state: not timed
            sync(device)
            t0 = time.perf_counter()
            calls[0] = 0
        opt.step(closure)
    sync(device)
    steps = len(batches) - 1
    return (time.perf_counter() - t0) / steps, calls[0] / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", default="mlp", choices=["mlp", "resnet20"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--optimizers", help="comma-separated subset of the suite (default: all; sgd is always timed)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    batches = []
    if args.model == "mlp":
        ds = load_dataset("mnist1d")
        shape, outputs, batch = ds.input_shape, ds.output_dim, 100
        for _ in range(args.steps + 1):
            idx = torch.randint(0, ds.num_train, (batch,), generator=g)
            batches.append((ds.x_train[idx].to(device), ds.y_train[idx].to(device)))
    else:
        shape, outputs, batch = (3, 32, 32), 10, 128
        for _ in range(args.steps + 1):
            batches.append((torch.randn(batch, *shape, generator=g).to(device),
                            torch.randint(0, outputs, (batch,), generator=g).to(device)))
    suite = dict(SUITE) if not args.optimizers else {n: SUITE[n] for n in ["sgd", *args.optimizers.split(",")]}
    if args.model != "mlp":
        suite.pop("bfgs", None)  # a dense inverse Hessian of 272k parameters does not fit
    times = {n: [] for n in suite}
    evals = {}
    for _ in range(args.repeats):
        for name, options in suite.items():
            steps = batches[:6] if name == "bfgs" else batches  # seconds per step: five are enough
            seconds, per_step = measure(name, options, args.model, shape, outputs, steps, device)
            times[name].append(seconds)
            evals[name] = per_step
    base = statistics.median(times["sgd"])
    results = {n: {"ms_per_step": 1e3 * statistics.median(t), "relative_to_sgd": statistics.median(t) / base,
                   "evaluations_per_step": evals[n]} for n, t in times.items()}
    if args.json:
        print(json.dumps(results))
        return
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "1 CPU thread"
    title = "MNIST-1D MLP (15,210 parameters), batch 100" if args.model == "mlp" else "ResNet-20, CIFAR shape, batch 128"
    print(f"{title}, median of {args.repeats} x {args.steps} steps, {where}")
    print("| optimizer | ms / step | x SGD | forward-backward passes / step |")
    print("|---|---|---|---|")
    for n, r in results.items():
        print(f"| {n} | {r['ms_per_step']:.2f} | {r['relative_to_sgd']:.2f} | {r['evaluations_per_step']:.2f} |")


if __name__ == "__main__":
    main()
