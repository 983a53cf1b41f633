"""The CurveBall paper's Table 1 protocol (Henriques et al. 2019, Sec. 4 and appendix B.1) for every
optimizer in the suite: iterations to reach the solution of small degenerate problems.

Problems (the landscape.data objectives): the Rosenbrock function R(u, v) = (1 - u)^2 +
100 eps (v - u^2)^2, deterministic (eps = 1) and stochastic with eps ~ U[0, 1] or U[0, 3] drawn at
*every evaluation* (also inside line searches), from a start drawn uniformly in [-2, 2] x [-1, 3]
per run; and Rahimi & Recht's two-layer linear network fit to y = A x with cond(A) = 1e5 (6 x 6, 200 samples,
full batch, a fresh initialisation per run). Optional extras: ``quadratic`` (cond 1e3) and ``beale`` / ``beale-u05``
(Beale's function, noise U[0.5, 1.5]).

A run *reaches the solution* at the first iteration whose noise-free loss is within tau = 1e-4 of the
minimum (0 for all problems); it fails after ``--max-iter`` iterations or on divergence. One
iteration is one ``optimizer.step`` (a line-search method may evaluate the function several times
in it; ``lbfgs`` runs with max_iter=1 so its steps are iterations too).

Hyper-parameters are grid-searched per problem as in appendix B.1: learning rates
Gamma = {0.1, 0.05, 0.01, 0.005, 0.001, 0.0005, 0.0001} (the paper's list repeats 0.05; these are its 7
distinct values), momentum {0.9, 0.95, 0.99}, Adam beta1 {0.9, 0.99} and beta2 {0.99, 0.999}, and
each method's own knobs listed in GRIDS. The paper picks the setting with the lowest mean error over
the final ten iterations of fixed-length trajectories; we pick the setting with the most successes,
then the fewest iterations (the quantity the table reports), on ``--grid-runs`` seeds disjoint from
the ``--runs`` evaluation seeds. Line-search methods (cg-fr, cg-pr, bfgs, lbfgs) take lr = 1. AdamW is
left out: without weight decay (none of these problems has any) it is Adam, step for step.

    python benchmarks/toy_problems.py [--runs 100] [--json] [--problems ...] [--optimizers ...]
                                      [--figure benchmarks/figures/toy_rosenbrock.png]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from torch.func import functional_call

from landscape.atomic import atomic_path
from landscape.data import load_dataset
from landscape.losses import get_loss
from landscape.models import build_model
from landscape.optim import build_optimizer
from landscape.optim.registry import get_entry

TOLERANCE = 1e-4
GAMMA = [0.1, 0.05, 0.01, 0.005, 0.001, 0.0005, 0.0001]
MOMENTA = [0.9, 0.95, 0.99]
LINE_SEARCH = {"lr": [1.0]}

# per optimizer: option -> values (the Cartesian product is searched)
GRIDS: dict[str, dict[str, list]] = {
    "sgd": {"lr": GAMMA},
    "momentum": {"lr": GAMMA, "momentum": MOMENTA},
    "nesterov": {"lr": GAMMA, "momentum": MOMENTA},
    "adagrad": {"lr": GAMMA},
    "rmsprop": {"lr": GAMMA},
    "adam": {"lr": GAMMA, "betas": [[b1, b2] for b1 in (0.9, 0.99) for b2 in (0.99, 0.999)]},
    "delta-bar-delta": {"lr": GAMMA, "momentum": [0.0, 0.9]},
    "bb": {"lr": GAMMA, "steps_per_epoch": [5, 20], "beta": [0.1, 1.0]},
    "parabola": {"lr": GAMMA, "max_ratio": [10.0, 1000.0]},
    "cg-fr": LINE_SEARCH,
    "cg-pr": LINE_SEARCH,
    "bfgs": LINE_SEARCH,
    "lbfgs": {"lr": [1.0], "max_iter": [1]},
    "lookahead:adam": {"lr": GAMMA, "k": [5], "alpha": [0.5]},
    "polyak:momentum": {"lr": GAMMA, "momentum": MOMENTA, "decay": [0.9]},
    "sam:momentum": {"lr": GAMMA, "momentum": [0.9], "rho": [0.001]},
    # curvature methods (suite II): the papers' defaults, no tuning
    "curveball": {"damping": [10.0, 1.0, 0.1]},  # the initial lambda (paper: 10 without BN, toy value unstated)
    "levenberg-marquardt": {"lr": [1.0]},
    "gauss-newton": {"lr": [1.0]},
    "newton": {"lr": [1.0]},
    "newton-cg": {"lr": [1.0]},
    "hessian-free": {"lr": [1.0]},
    "saddle-free-newton": {"lr": [1.0]},
    "adahessian": {"lr": GAMMA},
    "kfac": {"lr": GAMMA, "damping": [1e-3]},
}

# the paper's Table 1 (mean +- std of iterations over 100 runs)
PAPER = {
    "rosenbrock": {"momentum": (370, 40), "adam": (799, 160.5), "bfgs": (19, 4), "lm": (16, 4),
                   "exact hessian": (14, 1), "curveball": (13, 0.5)},
    "rosenbrock-u01": {"momentum": (846, 217), "adam": (1290, 476), "bfgs": (44, 21), "lm": (14, 3),
                       "exact hessian": (10, 3), "curveball": (12, 1)},
    "rosenbrock-u03": {"momentum": (4069, 565), "adam": (2750, 257), "bfgs": (63, 29), "lm": (17, 4),
                       "exact hessian": (17, 4), "curveball": (13, 1)},
    "rahimi-recht": {"momentum": (95, 2), "adam": (95, 5), "bfgs": (43, 21), "lm": (9, 4),
                     "exact hessian": (9, 0.5), "curveball": (35, 11)},
}
TABLE1 = ["rosenbrock", "rosenbrock-u01", "rosenbrock-u03", "rahimi-recht"]


LINE_SEARCH_MAX_ITER = 2000
# optimizers whose update treats each parameter group on its own: independent runs can share one
# optimizer as separate groups (and one batched forward pass); the others run one at a time
GROUPWISE = {"sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw", "delta-bar-delta", "bb",
             "parabola", "lookahead:adam", "polyak:momentum"}


@dataclass(frozen=True)
class ProblemSpec:
    data: str
    model: Any
    options: dict
    stochastic_point: bool  # a point model whose input is the noise draw (rosenbrock, beale)


PROBLEMS: dict[str, ProblemSpec] = {
    "rosenbrock": ProblemSpec("rosenbrock", "rosenbrock", {"noise": [1.0, 1.0]}, True),
    "rosenbrock-u01": ProblemSpec("rosenbrock", "rosenbrock", {"noise": [0.0, 1.0]}, True),
    "rosenbrock-u03": ProblemSpec("rosenbrock", "rosenbrock", {"noise": [0.0, 3.0]}, True),
    "rahimi-recht": ProblemSpec("rahimi-recht", "linear2", {"train_samples": 200}, False),
    "quadratic": ProblemSpec("quadratic", {"name": "linear", "bias": False}, {"dim": 20, "condition": 1e3}, False),
    "beale": ProblemSpec("beale", "beale", {"noise": [1.0, 1.0]}, True),
    "beale-u05": ProblemSpec("beale", "beale", {"noise": [0.5, 1.5]}, True),
}


class Runs:
    """Independent runs of one problem (one model per seed), evaluated together with ``torch.func.vmap``.

    ``closure()`` draws a fresh noise sample per run (for the stochastic point problems), and
    back-propagates the sum of the runs' losses, so every run's parameters get their own gradient.
    ``exact_losses()`` gives each run's noise-free loss.
    """

    def __init__(self, problem: str, seeds: list[int]):
        spec = PROBLEMS[problem]
        ds = load_dataset(spec.data, **spec.options)
        models = []
        for seed in seeds:
            torch.manual_seed(seed)
            models.append(build_model(spec.model, ds.input_shape, ds.output_dim))
        self.models = models
        self.template = models[0]
        self.names = [n for n, _ in self.template.named_parameters()]
        self.params = [list(m.parameters()) for m in models]
        loss_fn = get_loss(ds.loss)
        self.loss_name = ds.loss
        self.dataset = ds
        self.generator = torch.Generator().manual_seed(1_000_003 * seeds[0] + len(seeds))
        self.spec, self.count = spec, len(seeds)
        if spec.stochastic_point:
            a, b = ds.meta["noise"]
            width = ds.x_train.shape[1]
            self._draw = lambda: a + (b - a) * torch.rand(self.count, 1, width, generator=self.generator)
            self._exact_x = ds.x_test.expand(self.count, *ds.x_test.shape)
            target = ds.y_test
            self._losses = torch.func.vmap(lambda p, x: loss_fn(functional_call(self.template, p, (x,)), target))
        else:
            x, y = ds.x_train, ds.y_train
            self._draw = lambda: None
            self._exact_x = None
            self._losses = torch.func.vmap(lambda p, _: loss_fn(functional_call(self.template, p, (x,)), y),
                                           in_dims=(0, None))

    def _stacked(self) -> dict[str, torch.Tensor]:
        return {n: torch.stack([run[j] for run in self.params]) for j, n in enumerate(self.names)}

    def closure(self) -> torch.Tensor:
        for run in self.params:
            for p in run:
                p.grad = None
        loss = self._losses(self._stacked(), self._draw()).sum()
        loss.backward()
        return loss

    def exact_losses(self) -> torch.Tensor:
        with torch.no_grad():
            return self._losses(self._stacked(), self._exact_x)

    def batch(self, run: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Run ``run``'s mini-batch for a curvature optimizer: a fresh noise draw, or the full data."""
        if self.spec.stochastic_point:
            return self._draw()[run], self.dataset.y_test
        return self.dataset.x_train, self.dataset.y_train

    def point(self, run: int = 0) -> list[float]:
        return self.params[run][0].detach().tolist()


def run_configs(problem: str, name: str, configs: list[dict], seeds: list[int], max_iter: int
                ) -> list[list[tuple[int | None, float]]]:
    """For every config and seed: (iterations to the solution or None, last noise-free loss)."""
    if name not in GROUPWISE:
        return [[_run_alone(problem, name, cfg, seed, min(max_iter, LINE_SEARCH_MAX_ITER)) for seed in seeds]
                for cfg in configs]
    runs = Runs(problem, [seed for _ in configs for seed in seeds])
    k = len(seeds)
    opts = [build_optimizer({"name": name, **cfg}, [{"params": runs.params[c * k + i]} for i in range(k)])
            for c, cfg in enumerate(configs)]
    hit: list[int | None] = [None] * runs.count
    last = torch.full((runs.count,), math.inf, dtype=torch.float64)
    open_runs = torch.ones(runs.count, dtype=torch.bool)
    for it in range(1, max_iter + 1):
        runs.closure()
        for opt in opts:
            opt.step()
        with contextlib.ExitStack() as stack:
            for opt in opts:
                if hasattr(opt, "averaged"):
                    stack.enter_context(opt.averaged())
            exact = runs.exact_losses().double()
        last = torch.where(open_runs, exact, last)
        done = open_runs & (exact <= TOLERANCE)
        for r in torch.nonzero(done).flatten().tolist():
            hit[r] = it
        open_runs &= ~done & torch.isfinite(exact) & (exact <= 1e12)
        if not bool(open_runs.any()):
            break
    return [[(hit[c * k + i], float(last[c * k + i])) for i in range(k)] for c in range(len(configs))]


def _stepper(runs: Runs, name: str, options: dict) -> Callable[[], Any]:
    """One iteration of optimizer ``name`` on the single run in ``runs``."""
    model = runs.models[0]
    opt = build_optimizer({"name": name, **options}, runs.params[0], model=model, loss=runs.loss_name)
    if get_entry(name).needs_model:
        return lambda: opt.step(batch=runs.batch())
    return lambda: opt.step(runs.closure)


def _run_alone(problem: str, name: str, options: dict, seed: int, max_iter: int) -> tuple[int | None, float]:
    runs = Runs(problem, [seed])
    step = _stepper(runs, name, options)
    loss = math.inf
    for it in range(1, max_iter + 1):
        step()
        loss = float(runs.exact_losses()[0])
        if not math.isfinite(loss) or loss > 1e12:
            return None, math.inf
        if loss <= TOLERANCE:
            return it, loss
    return None, loss


def settings(name: str) -> list[dict]:
    grid = GRIDS[name]
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def grid_search(problem: str, name: str, seeds: list[int], max_iter: int) -> dict:
    """The setting with the most successes, then the fewest mean iterations, then the lowest final loss."""
    configs = settings(name)
    outcomes = run_configs(problem, name, configs, seeds, max_iter)

    def key(rows: list[tuple[int | None, float]]) -> tuple:
        its = [i for i, _ in rows if i is not None]
        finals = [f if math.isfinite(f) else 1e300 for _, f in rows]
        return (-len(its), statistics.mean(its) if its else math.inf, statistics.mean(finals))

    return configs[min(range(len(configs)), key=lambda c: key(outcomes[c]))]


def evaluate(problem: str, name: str, options: dict, runs: int, max_iter: int) -> dict:
    """Iteration statistics over the seeds 0 .. runs-1 (for one-at-a-time optimizers: stopped after
    10 runs when none of them reached the solution)."""
    seeds = list(range(runs))
    rows = []
    if name not in GROUPWISE and runs > 10:
        rows = run_configs(problem, name, [options], seeds[:10], max_iter)[0]
        seeds = seeds[10:] if any(i is not None for i, _ in rows) else []
    rows += run_configs(problem, name, [options], seeds, max_iter)[0] if seeds else []
    runs = len(rows)
    its = [i for i, _ in rows if i is not None]
    return {"mean": statistics.mean(its) if its else None,
            "std": statistics.pstdev(its) if len(its) > 1 else (0.0 if its else None),
            "success": len(its) / runs, "runs": runs, "settings": options,
            "max_iter": max_iter if name in GROUPWISE else min(max_iter, LINE_SEARCH_MAX_ITER)}


def format_cell(entry: dict | None) -> str:
    if entry is None:
        return "n/a"
    if entry["mean"] is None:
        return "never"
    cell = f"{entry['mean']:.0f} ± {entry['std']:.0f}"
    if entry["success"] < 1:
        cell += f" ({100 * entry['success']:.0f}%)"
    return cell


def table(results: dict, problems: list[str], optimizers: list[str]) -> str:
    lines = ["| optimizer | " + " | ".join(problems) + " |", "|---" * (len(problems) + 1) + "|"]
    for name in optimizers:
        lines.append(f"| {name} | " + " | ".join(format_cell(results[p].get(name)) for p in problems) + " |")
    paper_rows = sorted({k for p in problems for k in PAPER.get(p, {})})
    for row in paper_rows:
        cells = []
        for p in problems:
            v = PAPER.get(p, {}).get(row)
            cells.append(f"{v[0]:g} ± {v[1]:g}" if v else "")
        lines.append(f"| *paper: {row}* | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figure(results: dict, path: str, max_iter: int) -> None:
    """Trajectories of the grid-chosen settings on the deterministic Rosenbrock from (-1.2, 1)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from landscape.plotting import save_figure

    chosen = results["rosenbrock"]
    names = [n for n in ("momentum", "adam", "delta-bar-delta", "bfgs", "curveball", "levenberg-marquardt", "newton")
             if n in chosen and chosen[n]["mean"] is not None]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.4))
    u, v = np.meshgrid(np.linspace(-2, 2, 400), np.linspace(-2.5, 3, 400))
    r = (1 - u) ** 2 + 100 * (v - u ** 2) ** 2
    ax.contourf(u, v, np.log10(r + 1e-3), levels=30, cmap="Greys")
    for n in names:
        runs = Runs("rosenbrock", [0])
        with torch.no_grad():
            runs.params[0][0].copy_(torch.tensor([-1.2, 1.0]))
        step = _stepper(runs, n, chosen[n]["settings"])
        pts, losses = [runs.point()], [float(runs.exact_losses()[0])]
        for _ in range(max_iter):
            step()
            pts.append(runs.point())
            losses.append(float(runs.exact_losses()[0]))
            if losses[-1] <= TOLERANCE or not math.isfinite(losses[-1]):
                break
        pts = np.array(pts)
        line, = ax.plot(pts[:, 0], pts[:, 1], lw=1.2, label=f"{n} ({len(pts) - 1})")
        ax2.semilogy(np.maximum(losses, 1e-12), color=line.get_color(), lw=1.2, label=n)
    ax.plot([1], [1], "r*", ms=12)
    ax.set(xlabel="u", ylabel="v", title="Rosenbrock from (-1.2, 1): iterations to 1e-4")
    ax.legend(fontsize=8, loc="lower left")
    ax2.axhline(TOLERANCE, color="k", ls=":", lw=0.8)
    ax2.set(xscale="log", xlabel="iteration", ylabel="loss", title="loss per iteration")
    fig.tight_layout()
    save_figure(fig, path)


def report(files: list[str], figure_path: str | None) -> None:
    """The combined table of several --save files (e.g. the first-order and the curvature runs)."""
    merged: dict[str, dict] = {}
    runs = max_iter = None
    for path in files:
        with open(path) as fh:
            data = json.load(fh)
        runs, max_iter = data["runs"], data["max_iter"]
        for p, rows in data["results"].items():
            merged.setdefault(p, {}).update(rows)
    problems = [p for p in TABLE1 if p in merged] + [p for p in merged if p not in TABLE1]
    optimizers = [o for o in dict.fromkeys(o for p in problems for o in merged[p]) if o in GRIDS]
    print(f"iterations to the solution (tolerance {TOLERANCE:g}), mean ± std over {runs} runs; "
          f"(x%) = share of runs that got there within {max_iter} iterations "
          f"({LINE_SEARCH_MAX_ITER} for one-at-a-time methods)")
    print(table(merged, problems, optimizers))
    if figure_path and "rosenbrock" in merged:
        figure(merged, figure_path, max_iter)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--grid-runs", type=int, default=10)
    parser.add_argument("--max-iter", type=int, default=10000)
    parser.add_argument("--problems", default=",".join(TABLE1), help=f"from {', '.join(PROBLEMS)}")
    parser.add_argument("--optimizers", default=",".join(GRIDS))
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--save", help="write the results as JSON to this file after every entry; a rerun "
                                       "with the same settings resumes from it")
    parser.add_argument("--figure", help="draw Rosenbrock trajectories of the chosen settings to this file")
    parser.add_argument("--report", nargs="+", metavar="FILE",
                        help="print the table (and draw --figure) from files written by --save, then stop")
    args = parser.parse_args()
    if args.report:
        report(args.report, args.figure)
        return
    torch.set_num_threads(1)
    problems = args.problems.split(",")
    optimizers = args.optimizers.split(",")
    for p in problems:
        if p not in PROBLEMS:
            sys.exit(f"Error: unknown problem {p!r}; choose from {', '.join(PROBLEMS)}")
    for o in optimizers:
        if o not in GRIDS:
            sys.exit(f"Error: no grid for optimizer {o!r}; known: {', '.join(GRIDS)}")
    results: dict[str, dict] = {p: {} for p in problems}
    header = {"runs": args.runs, "max_iter": args.max_iter, "grid_runs": args.grid_runs}
    if args.save and Path(args.save).exists():  # resume: keep the entries a killed run already finished
        with open(args.save) as fh:
            saved = json.load(fh)
        if {k: saved.get(k) for k in header} == header:
            for p in problems:
                results[p].update(saved["results"].get(p, {}))
    grid_seeds = list(range(10_000, 10_000 + args.grid_runs))
    t0 = time.perf_counter()
    for p in problems:
        for o in optimizers:
            if o in results[p]:
                continue
            if o == "kfac" and PROBLEMS[p].stochastic_point:
                results[p][o] = None  # a point model has no Linear/Conv layer: K-FAC would be plain momentum
                continue
            chosen = grid_search(p, o, grid_seeds, args.max_iter)
            results[p][o] = evaluate(p, o, chosen, args.runs, args.max_iter)
            print(f"[{time.perf_counter() - t0:7.1f}s] {p:15s} {o:16s} {format_cell(results[p][o]):>22s}  {chosen}",
                  file=sys.stderr, flush=True)
            if args.save:
                with atomic_path(Path(args.save)) as tmp, open(tmp, "w") as fh:
                    json.dump({**header, "results": results}, fh, indent=1)
    if args.figure and "rosenbrock" in results:
        figure(results, args.figure, args.max_iter)
    if args.json:
        print(json.dumps(results))
    else:
        print(f"iterations to the solution (tolerance {TOLERANCE:g}), mean ± std over {args.runs} runs; "
              f"(x%) = share of runs that got there within {args.max_iter} iterations")
        print(table(results, problems, optimizers))


if __name__ == "__main__":
    main()
