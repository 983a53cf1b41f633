"""Does ``torch.compile`` pay for Hessian-vector products? (``landscape analyze --compile``)

For each model, the time of one H v over the whole objective (all its batches) for:

- double backward with the gradient graph of every batch cached (the default when it fits memory);
- double backward rebuilding the graph for every product (what a model too large to cache pays);
- forward-over-reverse (``torch.func`` jvp of grad), eager;
- forward-over-reverse through ``torch.compile`` (Inductor), plus the one-time compile seconds.

Medians of interleaved rounds (this machine's timings drift by up to 2x between identical runs).
The compiled products are checked against the eager ones. Usage:

    python benchmarks/compile_products.py [--models mlp,cnn,resnet20] [--device cpu] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from pathlib import Path

import torch

from landscape.data import load_dataset
from landscape.linalg.operators import HessianOperator
from landscape.models import build_model
from landscape.objective import Objective
from timing import sync

warnings.filterwarnings("ignore")
RESULTS = Path(__file__).parent / "results"


def setup(name: str, device: torch.device, resnet_samples: int):
    if name == "resnet20":
        torch.manual_seed(0)
        x = torch.randn(resnet_samples, 3, 32, 32)
        y = torch.randint(0, 10, (resnet_samples,))
        model = build_model("resnet20", (3, 32, 32), 10)
        batch = resnet_samples
    else:
        ds = load_dataset("mnist1d", samples=4000)
        x, y = ds.x_train, ds.y_train
        model = build_model({"mlp": "mlp", "cnn": "conv1d"}[name], ds.input_shape, ds.num_classes)
        batch = 1024
    return Objective(model.to(device), x, y, "cross_entropy", batch_size=batch, device=device)


def timed(op: HessianOperator, v: torch.Tensor, device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    op._matmat_rows(v)
    sync(device)
    return time.perf_counter() - t0


def measure(name: str, device: torch.device, rounds: int, resnet_samples: int) -> dict:
    obj = setup(name, device, resnet_samples)
    ops = {"double-backward cached": HessianOperator(obj, "double-backward", cache=True, batched=False),
           "double-backward uncached": HessianOperator(obj, "double-backward", cache=False, batched=False),
           "forward-over-reverse": HessianOperator(obj, "forward-over-reverse", batched=False),
           "forward-over-reverse compiled": HessianOperator(obj, "forward-over-reverse", compile=True)}
    torch.manual_seed(1)
    v = torch.randn(1, obj.dim, device=device)
    reference = ops["forward-over-reverse"]._matmat_rows(v)
    for op in ops.values():  # warm-up: graphs cached, transforms traced, Inductor compiled
        op._matmat_rows(v)
    compiled = ops["forward-over-reverse compiled"]._matmat_rows(v)
    double_backward = ops["double-backward cached"]._matmat_rows(v)
    times: dict[str, list[float]] = {k: [] for k in ops}
    for _ in range(rounds):
        for key, op in ops.items():
            times[key].append(timed(op, v, device))
    ms = {k: 1e3 * statistics.median(t) for k, t in times.items()}
    compiled_ms = ms["forward-over-reverse compiled"]
    return {"model": name, "parameters": obj.dim, "samples": obj.num_samples, "batches": len(obj.batches),
            "ms_per_product": ms,
            "compile_seconds": ops["forward-over-reverse compiled"].calibration["compile_seconds"],
            "speedup_compiled_vs": {k: ms[k] / compiled_ms for k in ms if k != "forward-over-reverse compiled"},
            "compiled_max_relative_deviation": float((compiled - reference).abs().max() / reference.abs().max()),
            # the float32 noise floor: two exact eager methods differ by this much
            "eager_methods_max_relative_deviation": float((double_backward - reference).abs().max()
                                                          / reference.abs().max()),
            "break_even_products_vs_eager": (ops["forward-over-reverse compiled"].calibration["compile_seconds"]
                                             / max((ms["forward-over-reverse"] - compiled_ms) / 1e3, 1e-12))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mlp,cnn,resnet20")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--resnet-samples", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    for name in args.models.split(","):
        row = measure(name, device, args.rounds, args.resnet_samples)
        rows.append(row)
        print(f"{name} ({row['parameters']} parameters, {row['samples']} samples): "
              + ", ".join(f"{k} {v:.2f} ms" for k, v in row["ms_per_product"].items())
              + f"; compile {row['compile_seconds']:.1f} s; speed-up of compiled over "
              + ", ".join(f"{k} {v:.2f}x" for k, v in row["speedup_compiled_vs"].items())
              + f"; deviation from eager {row['compiled_max_relative_deviation']:.1e} (double backward vs "
              f"forward-over-reverse: {row['eager_methods_max_relative_deviation']:.1e})", flush=True)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"compile_products_{device.type}.json").write_text(json.dumps({"device": device_name, "threads": args.threads, "torch": torch.__version__,
                                   "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
