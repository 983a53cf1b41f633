"""PyHessian vs landscape on the same model and data, in one process.

For each setup (a trained MNIST-1D MLP; a CIFAR-shaped ResNet-20 on random data) it measures:

- top-1 eigenvalue: wall time and Hessian-vector products to reach 1e-4 relative error against a
  long Lanczos reference, with one batch and with the data set in several batches;
- top-20 eigenpairs: time at equal accuracy;
- trace: time to reach a target standard error (PyHessian's per-probe samples give its standard
  error; its own stopping rule is a heuristic, so we count the probes its samples need);
- cost of one Hessian-vector product relative to one gradient.

Each tool's tolerance is swept and the cheapest setting that reaches the target accuracy is
reported. Usage:

    python benchmarks/curvature.py [--setups mlp,resnet20] [--json] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings

import numpy as np
import torch

from landscape.data import load_dataset
from landscape.linalg import estimate_trace, hutchpp
from landscape.linalg.lanczos import lanczos
from landscape.linalg.operators import HessianOperator
from landscape.models import build_model
from landscape.objective import Objective
from timing import sync

warnings.filterwarnings("ignore")


class PyHessianCounter:
    """Counts PyHessian's Hessian-vector products (one per product over all batches)."""

    def __init__(self):
        import sys

        import pyhessian  # noqa: F401  (the package re-exports the class under the module's name)

        ph = sys.modules["pyhessian.hessian"]
        self.ph = ph
        self.count = 0
        original_hvp = ph.hessian_vector_product
        original_loader = ph.hessian.dataloader_hv_product

        def hvp(*a, **k):
            self.count += 1
            return original_hvp(*a, **k)

        def loader_hvp(obj, v):
            self.count += 1
            return original_loader(obj, v)

        ph.hessian_vector_product = hvp
        ph.hessian.dataloader_hv_product = loader_hvp

    def make(self, model, x, y, batch, device):
        cuda = device.type == "cuda"
        crit = torch.nn.CrossEntropyLoss()
        if batch >= x.shape[0]:
            return self.ph.hessian(model, crit, data=(x, y), cuda=cuda)
        loader = [(x[i:i + batch], y[i:i + batch]) for i in range(0, x.shape[0], batch)]
        return self.ph.hessian(model, crit, dataloader=loader, cuda=cuda)


def trained_mlp(device):
    ds = load_dataset("mnist1d")
    torch.manual_seed(0)
    model = build_model("mlp", ds.input_shape, ds.output_dim)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for step in range(1500):
        idx = torch.randint(0, ds.num_train, (100,))
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(ds.x_train[idx]), ds.y_train[idx]).backward()
        opt.step()
    return model.to(device).eval(), ds.x_train.to(device), ds.y_train.to(device)


def random_resnet(device, n):
    torch.manual_seed(0)
    model = build_model("resnet20", (3, 32, 32), 10)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    model.train()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for i in range(0, n, 64):
            model(x[i:i + 64])
    return model.to(device).eval(), x.to(device), y.to(device)


def grad_time(model, x, y, device, repeats=5):
    params = [p for p in model.parameters()]
    times = []
    for _ in range(repeats + 1):
        sync(device)
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        torch.autograd.grad(loss, params)
        sync(device)
        times.append(time.perf_counter() - t0)
    return float(np.median(times[1:]))


def product_time(model, x, y, batch, device, repeats=5):
    """Median seconds of one Hessian-vector product over all batches, after calibration and graph caching."""
    op = HessianOperator(Objective(model, x, y, batch_size=batch))
    v = torch.randn(op.shape[0], device=device)
    op @ v
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        op @ v
        sync(device)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def ours_top(model, x, y, batch, k, tol, device, seed=0):
    sync(device)
    t0 = time.perf_counter()
    op = HessianOperator(Objective(model, x, y, batch_size=batch))
    res = lanczos(op, k=k, tol=tol, seed=seed)
    sync(device)
    return time.perf_counter() - t0, res.eigenvalues, res.products, op


def pyhessian_top(counter, model, x, y, batch, k, tol, device, max_iter=1000):
    torch.manual_seed(0)
    counter.count = 0
    sync(device)
    t0 = time.perf_counter()
    comp = counter.make(model, x, y, batch, device)
    values, _ = comp.eigenvalues(maxIter=max_iter, tol=tol, top_n=k)
    sync(device)
    return time.perf_counter() - t0, np.sort(np.asarray(values, dtype=np.float64))[::-1], counter.count


def rel_error(values, reference):
    k = len(values)
    return float(np.max(np.abs(np.asarray(values) - reference[:k]) / np.abs(reference[:k])))


def cheapest(run, tols, reference, target):
    """First tolerance (loosest first) whose result reaches ``target``; returns (time, products, error, tol)."""
    best = None
    for tol in tols:
        seconds, values, products = run(tol)[:3]
        err = rel_error(values, reference)
        best = (seconds, products, err, tol)
        if err <= target:
            return best
    return best


def bench_setup(name, model, x, y, batches, device, top20=True, max_iter=1000, skip_trace=False):
    out = {"setup": name, "parameters": sum(p.numel() for p in model.parameters()), "samples": int(x.shape[0])}
    counter = PyHessianCounter()
    ref_op = HessianOperator(Objective(model, x, y, batch_size=max(batches)))
    reference = lanczos(ref_op, k=20 if top20 else 1, tol=1e-9, max_iter=400).eigenvalues
    out["reference_top"] = reference[:5].tolist()
    g = grad_time(model, x, y, device)
    out["gradient_s"] = g
    for label, batch in (("one batch", x.shape[0]), ("batches", min(batches))):
        row = {}
        ours = cheapest(lambda t: ours_top(model, x, y, batch, 1, t, device), [1e-2, 1e-3, 1e-4, 1e-5],
                        reference, 1e-4)
        theirs = cheapest(lambda t: pyhessian_top(counter, model, x, y, batch, 1, t, device, max_iter),
                          [1e-3, 1e-4, 1e-5, 1e-6], reference, 1e-4)
        row["ours"] = dict(zip(("seconds", "products", "error", "tol"), ours))
        row["pyhessian"] = dict(zip(("seconds", "products", "error", "tol"), theirs))
        row["speedup"] = theirs[0] / ours[0]
        row["ours_product_s"] = product_time(model, x, y, batch, device)
        row["pyhessian_product_s"] = theirs[0] / max(theirs[1], 1)
        out[f"top1 ({label}, batch {batch})"] = row
    if top20:
        batch = min(batches)
        t_ours, v_ours, p_ours, _ = ours_top(model, x, y, batch, 20, 1e-5, device)
        err_ours = rel_error(v_ours, reference)
        t_ph, v_ph, p_ph = pyhessian_top(counter, model, x, y, batch, 20, 1e-4, device, max_iter=200)
        err_ph = rel_error(v_ph, reference)
        out["top20"] = {"ours": {"seconds": t_ours, "products": p_ours, "error": err_ours},
                        "pyhessian": {"seconds": t_ph, "products": p_ph, "error": err_ph},
                        "speedup": t_ph / t_ours}
    if skip_trace:
        return out
    # trace to a standard error of 1% of the trace; PyHessian's samples give its stderr per probe
    batch = min(batches)
    timings = {}
    for name, fn in (("ours", lambda op: estimate_trace(op, rtol=0.01, seed=0)),
                     ("hutch++", lambda op: hutchpp(op, rtol=0.01, seed=0))):
        sync(device)
        t0 = time.perf_counter()
        tr = fn(HessianOperator(Objective(model, x, y, batch_size=batch)))
        sync(device)
        timings[name] = {"seconds": time.perf_counter() - t0, "products": tr.products, "estimate": tr.estimate,
                         "stderr": tr.stderr, "method": tr.method}
    target = 0.01 * abs(timings["ours"]["estimate"])
    torch.manual_seed(0)
    counter.count = 0
    comp = counter.make(model, x, y, batch, device)
    sync(device)
    t0 = time.perf_counter()
    samples = comp.trace(maxIter=60, tol=0.0)
    sync(device)
    per_probe = (time.perf_counter() - t0) / len(samples)
    probes_needed = math.ceil((np.std(samples, ddof=1) / target) ** 2)
    out["trace"] = {"target_stderr": target, "ours": timings["ours"], "ours_hutchpp": timings["hutch++"],
                    "pyhessian": {"seconds": probes_needed * per_probe, "probes": probes_needed,
                                  "estimate": float(np.mean(samples)), "per_probe_s": per_probe,
                                  "heuristic_stop_probes": None},
                    "speedup": probes_needed * per_probe / timings["ours"]["seconds"]}
    torch.manual_seed(0)
    out["trace"]["pyhessian"]["heuristic_stop_probes"] = len(counter.make(model, x, y, batch, device).trace())
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setups", default="mlp,resnet20")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--resnet-samples", type=int, default=256)
    parser.add_argument("--resnet-top20", action="store_true",
                        help="also time top-20 on ResNet-20 (PyHessian needs ~800 products: slow on a CPU)")
    parser.add_argument("--skip-trace", action="store_true", help="omit the trace comparison (slow for ResNet on a CPU)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads()))
    results = []
    for setup in args.setups.split(","):
        if setup == "mlp":
            model, x, y = trained_mlp(device)
            results.append(bench_setup("MNIST-1D MLP (trained, 4000 samples)", model, x, y, [4000, 1000], device))
        elif setup == "resnet20":
            n = args.resnet_samples
            model, x, y = random_resnet(device, n)
            results.append(bench_setup(f"ResNet-20, CIFAR shape, random data ({n} samples)", model, x, y,
                                       [n, max(n // 4, 1)], device, top20=args.resnet_top20, max_iter=300,
                                       skip_trace=args.skip_trace))
        else:
            raise SystemExit(f"unknown setup {setup}")
    info = {"device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
            "threads": torch.get_num_threads(), "torch": torch.__version__, "results": results}
    if args.json:
        print(json.dumps(info, indent=2, default=float))
        return
    print(f"device {info['device']}, {info['threads']} threads, torch {info['torch']}")
    for r in results:
        print(f"\n{r['setup']}: {r['parameters']:,} parameters; gradient {1e3 * r['gradient_s']:.1f} ms")
        for key, row in r.items():
            if key.startswith("top1"):
                o, p = row["ours"], row["pyhessian"]
                print(f"  {key}: ours {o['seconds']:.3f} s / {o['products']} products (err {o['error']:.1e}); "
                      f"PyHessian {p['seconds']:.3f} s / {p['products']} products (err {p['error']:.1e}); "
                      f"speed-up {row['speedup']:.1f}x; product/gradient: ours "
                      f"{row['ours_product_s'] / r['gradient_s']:.2f}, PyHessian "
                      f"{row['pyhessian_product_s'] / r['gradient_s']:.2f}; Hessian-vector products per second: "
                      f"ours {1 / row['ours_product_s']:.1f}, PyHessian {1 / row['pyhessian_product_s']:.1f}")
        if "top20" in r:
            o, p = r["top20"]["ours"], r["top20"]["pyhessian"]
            print(f"  top-20: ours {o['seconds']:.2f} s / {o['products']} products (max err {o['error']:.1e}); "
                  f"PyHessian {p['seconds']:.2f} s / {p['products']} products (max err {p['error']:.1e}); "
                  f"speed-up {r['top20']['speedup']:.1f}x")
        if "trace" not in r:
            continue
        t = r["trace"]
        o, h, p = t["ours"], t["ours_hutchpp"], t["pyhessian"]
        print(f"  trace to stderr {t['target_stderr']:.3g} (1%): ours {o['seconds']:.2f} s / {o['products']} products "
              f"({o['method']}, stderr {o['stderr']:.3g}); Hutch++ {h['seconds']:.2f} s / {h['products']} products; "
              f"PyHessian {p['seconds']:.2f} s / {p['probes']} probes (its heuristic stops after "
              f"{p['heuristic_stop_probes']}); speed-up {t['speedup']:.1f}x")


if __name__ == "__main__":
    main()
