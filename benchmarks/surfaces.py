"""2-D loss surfaces (51 x 51, filter-normalised random plane): landscape against the peers, side by side.

Methods, on the same model, data and grid, in one process:

- ``landscape``: :class:`landscape.analysis.grid_evaluation.GridEvaluator` with the plan that
  ``landscape analyze --slice 2d`` picks (the faster, timed on the spot, of one point at a time and
  a vmap chunk of stacked parameter sets; affine first layer; data resident), loss and accuracy at
  every point, planning included;
- ``loss-landscapes``: the PyPI package (``loss_landscapes.random_plane`` with a ``Loss`` metric on
  the whole data set as one batch, as its README does), loss only;
- ``per-point``: the original loss-landscape method (Li et al.'s ``plot_surface.py``, written here from
  its description): for every point copy w + a d_x + b d_y into the model, then evaluate a
  ``DataLoader`` over the data set (batch 128, ``net.eval()``, ``no_grad``), loss and accuracy;
- ``forward limit``: points x (one forward pass over the data at the best batch size), the cost
  of the per-point evaluation without any overhead.

The per-point methods cost the same at every point, so ``--baseline-points`` of them are timed
(``loss-landscapes`` on a ``sqrt`` x ``sqrt`` grid) and scaled to the full grid; on the ResNet,
whose best plan is one point at a time, ours is timed on those points too. Every method runs
``--repeats`` interleaved rounds and the medians are reported (timings on a shared VM vary).
Models: the MNIST-1D MLP (default ``mlp``, 4000 training samples) and a CIFAR-shaped ResNet-20 on
random data (``--resnet-samples``).

    python benchmarks/surfaces.py [--grid 51] [--models mlp,resnet20] [--json] [--save FILE]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from landscape.analysis import directions as dirs
from landscape.analysis.grid_evaluation import GridEvaluator, candidate_plans, fastest_plan, split_batches
from landscape.analysis.surface import DEFAULT_MEMORY
from landscape.data import load_dataset
from landscape.models import build_model
from timing import sync


def problem(name: str, resnet_samples: int):
    torch.manual_seed(0)
    if name == "mlp":
        ds = load_dataset("mnist1d")
        model = build_model("mlp", ds.input_shape, ds.output_dim)
        return model.eval(), ds.x_train, ds.y_train
    g = torch.Generator().manual_seed(0)
    x = torch.randn(resnet_samples, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (resnet_samples,), generator=g)
    return build_model("resnet20", (3, 32, 32), 10).eval(), x, y


def forward_limit(model, x) -> tuple[float, int]:
    """Seconds of one forward pass over x at the best batch size (median of 5), and that size."""
    device = x.device
    best = (math.inf, 0)
    sizes = sorted({min(b, x.shape[0]) for b in (64, 128, 256, 512, 1024, 2048, x.shape[0])})
    with torch.no_grad():
        for bs in sizes:
            times = []
            for _ in range(6):
                sync(device)
                t0 = time.perf_counter()
                for i in range(0, x.shape[0], bs):
                    model(x[i:i + bs])
                sync(device)
                times.append(time.perf_counter() - t0)
            best = min(best, (statistics.median(times[1:]), bs))
    return best


def ours(model, x, y, dx, dy, grid) -> tuple[float, np.ndarray, dict]:
    layout, w = dirs.flat_parameters(model)
    sync(x.device)
    t0 = time.perf_counter()
    ev = GridEvaluator(model, "cross_entropy", layout.unflatten(w), [layout.unflatten(dx), layout.unflatten(dy)],
                       sample_input=x[:2])
    plans = candidate_plans(model, x, grid.shape[0], x.shape[0], layout.dim, DEFAULT_MEMORY.get(x.device.type, DEFAULT_MEMORY["cpu"]))
    k, bs = fastest_plan(ev, plans, x, y, 2)
    batches = split_batches(x, y, bs)
    coords = torch.as_tensor(grid, dtype=torch.float32, device=x.device)
    losses = []
    for start in range(0, grid.shape[0], k):
        s = ev.sums(coords[start:start + k], batches)
        losses.append((s.loss / s.samples).cpu().numpy())
    return time.perf_counter() - t0, np.concatenate(losses), {"points_per_chunk": k, "batch": bs,
                                                               "affine_first_layer": ev.first is not None}


def per_point(model, x, y, dx, dy, grid) -> tuple[float, np.ndarray]:
    """Li et al.'s loop: set the weights, evaluate a DataLoader, one point at a time (its data set lives
    on the CPU and every batch is moved to the device, as in their ``evaluation.py``)."""
    device = x.device
    net = copy.deepcopy(model).eval()
    layout, w = dirs.flat_parameters(net)
    params = [p for p in net.parameters() if p.requires_grad]
    loader = DataLoader(TensorDataset(x.cpu(), y.cpu()), batch_size=128, shuffle=False)
    criterion = torch.nn.CrossEntropyLoss()
    out = []
    sync(device)
    t0 = time.perf_counter()
    for a, b in grid:
        with torch.no_grad():
            for p, piece in zip(params, layout.unflatten(w + float(a) * dx + float(b) * dy).values()):
                p.copy_(piece)
        total, correct, n = 0.0, 0, 0
        with torch.no_grad():
            for inputs, targets in loader:
                inputs, targets = inputs.to(device), targets.to(device)
                outputs = net(inputs)
                total += criterion(outputs, targets).item() * targets.shape[0]
                correct += outputs.max(1)[1].eq(targets).sum().item()
                n += targets.shape[0]
        out.append(total / n)
    return time.perf_counter() - t0, np.array(out)


def loss_landscapes_plane(model, x, y, steps: int) -> tuple[float, str]:
    import loss_landscapes
    import loss_landscapes.metrics

    metric = loss_landscapes.metrics.Loss(torch.nn.CrossEntropyLoss(), x, y)
    for norm in ("filter", "layer"):  # its filter normalisation divides by zero on some models (ResNet-20)
        torch.manual_seed(0)
        sync(x.device)
        t0 = time.perf_counter()
        try:
            loss_landscapes.random_plane(copy.deepcopy(model), metric, distance=1, steps=steps, normalization=norm,
                                         deepcopy_model=True)
        except ZeroDivisionError:
            continue
        sync(x.device)
        return time.perf_counter() - t0, norm
    raise RuntimeError("loss-landscapes failed with both normalisations")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, default=51)
    parser.add_argument("--models", default="mlp,resnet20")
    parser.add_argument("--resnet-samples", type=int, default=128)
    parser.add_argument("--baseline-points", type=int, default=121)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--save")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    results = {}
    for name in args.models.split(","):
        model, x, y = problem(name, args.resnet_samples)
        model, x, y = model.to(device), x.to(device), y.to(device)
        layout, w = dirs.flat_parameters(model)
        g = torch.Generator().manual_seed(0)
        dx, dy = (dirs.normalize(dirs.gaussian(layout, g).to(device), w, layout, "filter") for _ in range(2))
        axis = np.linspace(-1, 1, args.grid)
        grid = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
        npoints = grid.shape[0]
        timed = grid if name == "mlp" else grid[np.linspace(0, npoints - 1, args.baseline_points).astype(int)]
        sub = grid[np.linspace(0, npoints - 1, min(args.baseline_points, npoints)).astype(int)]
        side = max(2, int(round(math.sqrt(args.baseline_points))))
        runs: dict[str, list[float]] = {"fwd": [], "ours": [], "pp": [], "ll": []}
        for _ in range(args.repeats):  # interleaved rounds; medians (this VM's timings vary by +-30%)
            fwd, best_bs = forward_limit(model, x)
            runs["fwd"].append(fwd)
            t_ours, z_ours, plan = ours(model, x, y, dx, dy, timed)
            runs["ours"].append(t_ours / len(timed))
            t_pp, z_pp = per_point(model, x, y, dx, dy, sub)
            runs["pp"].append(t_pp / len(sub))
            t_ll, ll_norm = loss_landscapes_plane(model, x, y, side)
            runs["ll"].append(t_ll / side ** 2)
        med = {k: statistics.median(v) * npoints for k, v in runs.items()}
        at = {tuple(p) for p in map(tuple, timed)}
        idx = [i for i, p in enumerate(map(tuple, sub)) if p in at]
        lookup = {tuple(p): z for p, z in zip(map(tuple, timed), z_ours)}
        agree = max(abs(z_pp[i] - lookup[tuple(sub[i])]) / max(1.0, abs(z_pp[i])) for i in idx)
        t_ours = med["ours"]
        r = {"points": npoints, "samples": int(x.shape[0]), "parameters": layout.dim, "repeats": args.repeats,
             "forward_limit_s": med["fwd"], "forward_best_batch": best_bs,
             "landscape_s": t_ours, "landscape_timed_points": len(timed), **plan,
             "per_point_s": med["pp"], "per_point_timed_points": len(sub),
             "loss_landscapes_s": med["ll"], "loss_landscapes_timed_points": side ** 2,
             "loss_landscapes_normalization": ll_norm, "max_relative_difference_vs_per_point": float(agree)}
        r["speedup_vs_per_point"] = r["per_point_s"] / t_ours
        r["speedup_vs_loss_landscapes"] = r["loss_landscapes_s"] / t_ours
        r["ratio_to_forward_limit"] = t_ours / r["forward_limit_s"]
        results[name] = r
        if not args.json:
            print(f"{name}: {npoints} points, {x.shape[0]} samples, {layout.dim} parameters; "
                  f"landscape {t_ours:.1f} s ({plan}), forward limit {r['forward_limit_s']:.1f} s "
                  f"(batch {best_bs}), per-point {r['per_point_s']:.1f} s, loss-landscapes {r['loss_landscapes_s']:.1f} s; "
                  f"max rel. difference {agree:.1e}", flush=True)
    if args.save:
        with open(args.save, "w") as fh:
            json.dump({"threads": args.threads, "torch": torch.__version__, "results": results,
                       "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"}, fh, indent=1)
    if args.json:
        print(json.dumps(results))
        return
    print("| model | points | landscape | forward limit | x forward limit | per-point (Li et al.) | speed-up | "
          "loss-landscapes | speed-up |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['points']} | {r['landscape_s']:.1f} s | {r['forward_limit_s']:.1f} s | "
              f"{r['ratio_to_forward_limit']:.2f} | {r['per_point_s']:.1f} s | {r['speedup_vs_per_point']:.1f}x | "
              f"{r['loss_landscapes_s']:.1f} s | {r['speedup_vs_loss_landscapes']:.1f}x |")


if __name__ == "__main__":
    main()
