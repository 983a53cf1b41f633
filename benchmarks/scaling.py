"""Scaling of the same CLI commands from 1 to N processes under torchrun (one thread per process).

Each job is run with ``python -m torch.distributed.run --nproc-per-node P -m landscape ...`` for every
P in ``--procs`` (P = 1 is the plain single-process command), rounds interleaved, medians reported.
Speed-up S_P = T_1 / T_P and efficiency S_P / P. The machine's own ceiling is measured alongside:
P independent copies of the single-process command started together (throughput ceiling
P T_1 / T_copies: what P processes can gain at best when they share memory bandwidth and caches). The wall time includes process start-up, data
generation and checkpoint loading (what a user waits for); ``--json`` results also record whether
the results agree with one process. The command's own "seconds" (training loop, surface, analysis:
no start-up, data loading or file writing) is reported too as "compute".

Jobs (MNIST-1D, 4000 training samples):

- ``train``:   conv1d CNN (5k parameters), Adam, batch 256, 3 epochs (DistributedDataParallel): steps
               of a few milliseconds, where the gradient all-reduce's latency shows;
- ``train-wide``: MLP 2 x 1024 (1.1M parameters), batch 512, 10 epochs: compute-bound steps;
- ``top-k``:   top-5 Hessian eigenvalues + Hutchinson trace of the trained CNN (data sharded);
- ``surface``: 41 x 41 filter-normalised random plane around the trained CNN (grid points split);
- ``connect``: Bezier curve between two trained 2 x 512 MLPs, 10 epochs of bend training at batch
               512 (data parallel), 41 path points (split).

    python benchmarks/scaling.py [--procs 1,2] [--rounds 3] [--jobs train,train-wide,top-k,surface,connect]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
PORT = 29611


def landscape(args: list[str], procs: int, env: dict) -> tuple[float, str]:
    global PORT
    if procs == 1:
        cmd = [sys.executable, "-m", "landscape", *args]
    else:
        PORT += 1
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(procs),
               "--master-port", str(PORT), "-m", "landscape", *args]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return seconds, out.stdout


def copies(commands: list[list[str]], env: dict) -> float:
    """Wall seconds of the single-process commands run side by side."""
    t0 = time.perf_counter()
    running = [subprocess.Popen([sys.executable, "-m", "landscape", *c], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, env=env) for c in commands]
    for proc in running:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"a copy failed:\n{err[-3000:]}")
    return time.perf_counter() - t0


def jobs(root: Path) -> dict[str, callable]:
    cnn = ["--samples", "4000", "--model", "conv1d", "--optimizer", "adam", "--lr", "0.01", "--batch-size", "256",
           "--epochs", "3", "-q"]
    mlp = ["--samples", "4000", "--optimizer", "adam", "--lr", "0.001", "--batch-size", "128", "--epochs", "3",
           "--set", "model.widths=[512,512]", "-q"]
    wide = ["--samples", "4000", "--optimizer", "adam", "--lr", "0.001", "--batch-size", "512", "--epochs", "10",
            "--set", "model.widths=[1024,1024]", "-q"]

    def train(tag):
        shutil.rmtree(root / f"train-{tag}", ignore_errors=True)
        return ["train", *cnn, "--out", str(root / f"train-{tag}"), "--json"]

    def train_wide(tag):
        shutil.rmtree(root / f"wide-{tag}", ignore_errors=True)
        return ["train", *wide, "--out", str(root / f"wide-{tag}"), "--json"]

    def top_k(tag):
        return ["analyze", str(root / "cnn"), "--top-k", "5", "--trace", "--json"]

    def surface(tag):
        return ["analyze", str(root / "cnn"), "--slice", "2d", "--grid", "41", "--name", f"s-{tag}", "--json"]

    def connect(tag):
        return ["analyze", str(root / "mlp0"), "--connect", str(root / "mlp1"), "--curve", "bezier",
                "--curve-epochs", "10", "--curve-batch-size", "512", "--curve-lr", "0.001", "--name", f"c-{tag}",
                "--json"]

    setup = [["train", *cnn, "--out", str(root / "cnn")], ["train", *mlp, "--out", str(root / "mlp0")],
             ["train", *mlp, "--seed", "1", "--out", str(root / "mlp1")]]
    return {"train": train, "train-wide": train_wide, "top-k": top_k, "surface": surface, "connect": connect}, setup


def summary(name: str, stdout: str):
    """The numbers to compare between process counts."""
    view = json.loads(stdout)
    if name.startswith("train"):
        return [view["train_loss"], view["test_loss"]]
    if name == "top-k":
        return view["eigenvalues"] + [view["trace"]["estimate"]]
    if name == "surface":
        return view["train_loss"][len(view["train_loss"]) // 2][:5]
    return [view["barrier"], view["fitted"]["training_loss"][-1]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", default="1,2")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", default="train,train-wide,top-k,surface,connect")
    args = parser.parse_args()
    procs = [int(p) for p in args.procs.split(",")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    root = Path(tempfile.mkdtemp(prefix="landscape-scaling-"))
    table, setup = jobs(root)
    for command in setup:
        landscape(command, 1, env)
    selected = args.jobs.split(",")
    times: dict[str, dict[int, list[float]]] = {j: {p: [] for p in procs} for j in selected}
    compute: dict[str, dict[int, list[float]]] = {j: {p: [] for p in procs} for j in selected}
    ceiling: dict[str, dict[int, list[float]]] = {j: {p: [] for p in procs if p > 1} for j in selected}
    values: dict[str, dict[int, list]] = {j: {} for j in selected}
    for r in range(args.rounds):
        for job in selected:
            for p in procs:
                seconds, stdout = landscape(table[job](f"{p}-{r}"), p, env)
                times[job][p].append(seconds)
                compute[job][p].append(json.loads(stdout)["seconds"])
                values[job][p] = summary(job, stdout)
                if p > 1:
                    ceiling[job][p].append(copies([table[job](f"copy{k}-{p}-{r}") for k in range(p)], env))
    rows = []
    for job in selected:
        t1 = statistics.median(times[job][procs[0]])
        c1 = statistics.median(compute[job][procs[0]])
        for p in procs:
            tp = statistics.median(times[job][p])
            cp = statistics.median(compute[job][p])
            ref, got = values[job][procs[0]], values[job][p]
            deviation = max(abs(a - b) / max(abs(a), 1e-12) for a, b in zip(ref, got))
            best = p * t1 / statistics.median(ceiling[job][p]) if p > 1 else 1.0
            rows.append({"job": job, "processes": p, "seconds": tp, "speedup": t1 / tp,
                         "efficiency": t1 / tp / (p / procs[0]), "ceiling_speedup": best,
                         "compute_seconds": cp, "compute_speedup": c1 / cp,
                         "max_relative_deviation": deviation, "rounds": times[job][p]})
            print(f"{job:8s} {p} process(es): {tp:7.1f} s  speed-up {t1 / tp:4.2f}  efficiency "
                  f"{100 * t1 / tp / (p / procs[0]):5.1f}%  (machine ceiling: {best:4.2f}); compute {cp:6.1f} s, "
                  f"speed-up {c1 / cp:4.2f}; deviation from "
                  f"{procs[0]}: {deviation:.1e}", flush=True)
    import torch

    RESULTS.mkdir(exist_ok=True)
    kind = "cuda" if torch.cuda.is_available() else "cpu"  # the commands' --device auto
    (RESULTS / f"scaling_{kind}.json").write_text(json.dumps({"cpu_count": os.cpu_count(), "threads_per_process": 1, "rows": rows}, indent=1))
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
