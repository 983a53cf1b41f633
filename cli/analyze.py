"""``landscape analyze``."""

from __future__ import annotations

import click

from landscape.analysis import evaluate_checkpoint, load_checkpoint_model, resolve_steps
from landscape.analysis.curvature import CurvatureOptions, curvature_analysis, json_view
from landscape.analysis.pyhessian_backend import pyhessian_analysis
from landscape import distributed
from landscape.errors import LandscapeError
from landscape.runs import Run, save_result, update_result

from landscape.analysis.autoneb import NEBOptions
from landscape.analysis.curves import CurveTraining
from landscape.analysis.paths import ConnectSpec
from landscape.analysis.surface import SurfaceSpec, compute_surface, parse_range

from .common import echo_err, print_checkpoints_json, stderr_is_tty
from .connect_output import run_connect
from .sharpness_output import run_sharpness
from .surface_output import describe_surface, surface_progress, surface_view


def parse_samples(value: str | None) -> int | None:
    if value is None or value.strip().lower() == "all":
        return None
    try:
        n = int(value)
    except ValueError:
        raise LandscapeError(f"--samples must be a positive integer or 'all', got {value!r}") from None
    if n <= 0:
        raise LandscapeError(f"--samples must be positive, got {n}")
    return n


def describe(step: int, result: dict) -> str:
    lines = [f"checkpoint {step}:"]
    if "evaluation" in result:
        ev = result["evaluation"]
        line = f"  train loss {ev['train_loss']:.4g}, test loss {ev['test_loss']:.4g}"
        if "train_acc" in ev:
            line += f", train acc {100 * ev['train_acc']:.2f}%, test acc {100 * ev['test_acc']:.2f}%"
        lines.append(line)
    name = result.get("curvature", "hessian")
    if "eigenvalues" in result:
        lines.append(f"  top {name} eigenvalues: " + ", ".join(f"{v:.6g}" for v in result["eigenvalues"]))
    if "smallest_eigenvalues" in result:
        lines.append("  smallest eigenvalues: " + ", ".join(f"{v:.6g}" for v in result["smallest_eigenvalues"]))
    if "trace" in result:
        tr = result["trace"]
        se = f" +- {tr['stderr']:.3g}" if tr.get("stderr") is not None else ""
        lines.append(f"  trace {tr['estimate']:.6g}{se} ({tr.get('probes', '?')} probes)")
    if "frobenius_squared" in result:
        fr = result["frobenius_squared"]
        lines.append(f"  tr(H^2) {fr['estimate']:.6g} +- {fr['stderr']:.3g}")
    if "diagonal" in result:
        lines.append(f"  diagonal: sum {result['diagonal']['sum']:.6g} ({result['diagonal']['probes']} probes)")
    if "density" in result:
        lines.append(f"  density: {len(result['density']['grid'])} points, negative mass "
                     f"{result['density']['negative_mass']:.3g}")
    for group, layer in result.get("per_layer", {}).items():
        parts = []
        if "eigenvalues" in layer:
            parts.append("eigenvalues " + ", ".join(f"{v:.4g}" for v in layer["eigenvalues"]))
        if "trace" in layer:
            parts.append(f"trace {layer['trace']['estimate']:.4g}")
        lines.append(f"  layer {group} ({layer['parameters']} params): " + "; ".join(parts))
    if "products" in result:
        compiled = result.get("product_calibration", {}).get("compile_seconds")
        lines.append(f"  {result['products']} products in {result['seconds']:.2f} s"
                     + (f" ({result['product_method']})" if "product_method" in result else "")
                     + (f", of which {compiled:.1f} s compiling" if compiled else ""))
    return "\n".join(lines)


@click.command(epilog="""\b
Examples:
  landscape analyze runs/cnn                               # loss/accuracy of the last checkpoint
  landscape analyze runs/cnn --top-k 5 --trace --density   # Hessian spectrum, trace, density
  landscape analyze runs/cnn --checkpoint all --top-k 1 --samples 1000 --json
  landscape analyze runs/cnn --curvature ggn --top-k 10 --per-layer
  landscape analyze runs/cnn --top-k 2 --trace --backend pyhessian   # reproduce PyHessian's numbers
  landscape analyze runs/cnn --slice 2d --directions filter --grid 51 --range -1:1
  landscape analyze runs/small --slice 1d --between runs/large --grid 41    # small- vs large-batch line
  landscape analyze runs/cnn --slice 2d --directions pca --grid 31          # then: plot --kind trajectory
  landscape analyze runs/mlp --sharpness keskar,sam,lambda-max,pac-bayes --samples 1000
  landscape analyze runs/mlp-s0 --connect runs/mlp-s1                       # linear path and barrier
  landscape analyze runs/mlp-s0 --connect runs/mlp-s1 --curve bezier --plane-grid 31   # then: plot --kind path|plane
  landscape analyze runs/mlp-s0 --connect runs/mlp-s1 --align --json        # git re-basin barrier
""")
@click.argument("run_dir", metavar="RUN", type=click.Path())
@click.option("--checkpoint", default="last", show_default=True, help="last, first, all or a step number.")
@click.option("--curvature", type=click.Choice(["hessian", "ggn", "fisher"]), default="hessian", show_default=True)
@click.option("--fisher-type", type=click.Choice(["mc", "empirical"]), default="mc", show_default=True,
              help="Monte-Carlo (true) Fisher or empirical Fisher.")
@click.option("--top-k", type=int, default=0, help="Largest K eigenvalues (Lanczos, full reorthogonalization).")
@click.option("--bottom-k", type=int, default=0, help="Smallest (most negative) K eigenvalues.")
@click.option("--trace", is_flag=True, help="Trace by Hutch++ with a standard error.")
@click.option("--frobenius", is_flag=True, help="tr(H^2) = ||H||_F^2 by Hutchinson.")
@click.option("--diag", is_flag=True, help="Diagonal by Hutchinson (Rademacher probes).")
@click.option("--density", is_flag=True, help="Spectral density by stochastic Lanczos quadrature.")
@click.option("--per-layer", is_flag=True, help="Also top-k/trace of each layer's diagonal block.")
@click.option("--samples", default=None, help="Fixed seeded subset of N training samples, or 'all' [default: all].")
@click.option("--batch-size", type=int, default=None, help="Samples per batch in curvature products [default: 1024].")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of probes and of the --samples subset.")
@click.option("--precision", type=click.Choice(["float32", "float64"]), default=None,
              help="Precision of the curvature products [default: the model's own, e.g. float64 for a float64 "
                   "model]; --json reports the one used.")
@click.option("--product-method", type=click.Choice(["auto", "double-backward", "forward-over-reverse"]),
              default="auto", show_default=True, help="Hessian-vector product method (auto: fastest, measured).")
@click.option("--compile", "compile_products", is_flag=True,
              help="torch.compile the forward-over-reverse Hessian-vector product (compiles once, seconds; "
                   "auto keeps it only if it is the faster method).")
@click.option("--tol", type=float, default=1e-5, show_default=True, help="Lanczos relative residual tolerance.")
@click.option("--trace-rtol", type=float, default=1e-2, show_default=True,
              help="Stop trace probes when stderr <= RTOL * |trace|.")
@click.option("--density-runs", type=int, default=10, show_default=True)
@click.option("--density-steps", type=int, default=80, show_default=True)
@click.option("--backend", type=click.Choice(["landscape", "pyhessian"]), default="landscape", show_default=True,
              help="pyhessian: top-k and trace through the pyhessian package.")
@click.option("--slice", "slice_dims", type=click.Choice(["1d", "2d"]), default=None,
              help="Loss slice (1d) or surface (2d) around the checkpoint.")
@click.option("--directions", type=click.Choice(["random", "filter", "pca", "eigen"]), default="filter",
              show_default=True, help="Slice directions: Gaussian, filter-normalized Gaussian, trajectory PCA, "
              "top Hessian eigenvectors.")
@click.option("--norm", type=click.Choice(["filter", "layer", "weight", "none"]), default=None,
              help="Normalization of random directions [default: filter for --directions filter, else none].")
@click.option("--keep-biasbn", is_flag=True, help="Give biases and BatchNorm parameters random directions too "
              "(default: zero, as Li et al.'s --xignore biasbn).")
@click.option("--grid", type=int, default=51, show_default=True, help="Points per axis.")
@click.option("--range", "xrange", default=None, help="Coordinate range A:B [default: -1:1; -0.5:1.5 with "
              "--between; the trajectory's extent for pca].")
@click.option("--y-range", default=None, help="Range of the second axis [default: as --range].")
@click.option("--y-grid", type=int, default=None, help="Points on the second axis [default: --grid].")
@click.option("--between", default=None, metavar="OTHER",
              help="x direction = OTHER - this checkpoint (a run folder, a checkpoint file or a step of RUN).")
@click.option("--bn", type=click.Choice(["eval", "recompute"]), default=None,
              help="BatchNorm at each point: stored statistics, or re-estimated from the training data "
              "[default: eval for --slice, recompute for --connect].")
@click.option("--metrics", default="train,test", show_default=True, help="Data sets to evaluate: train,test.")
@click.option("--name", default=None, help="Result name [default: surface-<1d|2d>-<directions>].")
@click.option("--chunk-points", type=int, default=None, help="Grid points per batched evaluation [default: by memory].")
@click.option("--bf16", is_flag=True, help="Surface forward passes under bfloat16 autocast (for GPUs); the "
              "largest loss error against full precision at three grid points is stored as bf16_max_relative_error.")
@click.option("--save-every", type=float, default=10.0, show_default=True,
              help="Store finished surface points at most every SECONDS (a kill loses at most that much work).")
@click.option("--sharpness", "sharpness_names", default=None, metavar="NAME,...",
              help="Sharpness measures: keskar, keskar-subspace, sam, sam-multistep, adaptive-worst, "
              "adaptive-average, lambda-max, trace, frobenius, logdet, pac-bayes, pac-bayes-magnitude, "
              "fisher-rao, local-entropy, or all.")
@click.option("--sharpness-eps", type=float, default=1e-3, show_default=True, help="Keskar box size.")
@click.option("--sharpness-rho", type=float, default=0.05, show_default=True, help="SAM radius.")
@click.option("--sharpness-m", type=int, default=None, help="m-sharpness: SAM measures averaged over m-sample chunks.")
@click.option("--connect", "connect_to", default=None, metavar="OTHER",
              help="Mode connectivity to OTHER (a run folder, a checkpoint file or a step of RUN).")
@click.option("--curve", type=click.Choice(["linear", "bezier", "polychain", "autoneb"]), default="linear",
              show_default=True, help="Path between the two minima.")
@click.option("--align", is_flag=True, help="Permute OTHER's hidden units to match RUN first (weight matching).")
@click.option("--points", type=int, default=41, show_default=True, help="Points along the path.")
@click.option("--curve-epochs", type=int, default=50, show_default=True, help="Epochs of bend training.")
@click.option("--curve-optimizer", default="adam", show_default=True, help="Optimizer of the bend.")
@click.option("--curve-lr", type=float, default=1e-3, show_default=True, help="Learning rate of the bend.")
@click.option("--curve-batch-size", type=int, default=128, show_default=True)
@click.option("--ensemble-points", type=int, default=10, show_default=True,
              help="Points of the curve whose predictions are averaged (test accuracy of the ensemble).")
@click.option("--plane-grid", type=int, default=0, help="Also the loss on the plane through both minima and "
              "the bend, N x N points.")
@click.option("--neb-cycles", type=int, default=4, show_default=True, help="AutoNEB insertion cycles.")
@click.option("--neb-steps", type=int, default=100, show_default=True, help="AutoNEB steps per cycle.")
@click.option("--neb-lr", type=float, default=0.01, show_default=True, help="AutoNEB step size.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON on stdout.")
def analyze(run_dir, checkpoint, curvature, fisher_type, top_k, bottom_k, trace, frobenius, diag, density,
            per_layer, samples, batch_size, seed, precision, product_method, compile_products, tol, trace_rtol,
            density_runs, density_steps, backend, slice_dims, directions, norm, keep_biasbn, grid, xrange, y_range,
            y_grid, between, bn, metrics, name, chunk_points, bf16, save_every, sharpness_names, sharpness_eps,
            sharpness_rho, sharpness_m, connect_to, curve, align, points, curve_epochs, curve_optimizer, curve_lr,
            curve_batch_size, ensemble_points, plane_grid, neb_cycles, neb_steps, neb_lr,
            device, as_json):
    """Analyse checkpoints of a run; results are saved under RUN/analysis/<checkpoint>/.

    Without quantity flags, computes train/test loss and accuracy (and the generalization gap).
    With --slice, computes a loss slice or surface (resumable: rerun the same command after a kill).
    """
    if sharpness_names is not None:
        run_sharpness(run_dir, checkpoint, sharpness_names.split(","), device, parse_samples(samples), seed, sharpness_eps,
                      sharpness_rho, sharpness_m, batch_size, as_json)
        return
    if connect_to is not None:
        spec = ConnectSpec(other=connect_to, curve=curve, points=points, align=align, bn=bn,
                           training=CurveTraining(epochs=curve_epochs, batch_size=curve_batch_size, seed=seed,
                                                  optimizer={"name": curve_optimizer, "lr": curve_lr}),
                           neb=NEBOptions(cycles=neb_cycles, steps=neb_steps, lr=neb_lr, seed=seed),
                           ensemble_points=ensemble_points, plane_grid=plane_grid,
                           batch_size=batch_size or 1000, name=name)
        run_connect(run_dir, checkpoint, spec, device, parse_samples(samples), seed, as_json)
        return
    if slice_dims is not None:
        bn = bn or "eval"
        spec = SurfaceSpec(dims=int(slice_dims[0]), directions=directions, norm=norm, ignore_biasbn=not keep_biasbn,
                           xrange=parse_range(xrange) if xrange else None, xnum=grid,
                           yrange=parse_range(y_range) if y_range else None, ynum=y_grid, between=between, bn=bn,
                           seed=seed, splits=tuple(s.strip() for s in metrics.split(",") if s.strip()), name=name,
                           bf16=bf16)
        spec.validate()
        if chunk_points is not None and chunk_points <= 0:
            raise LandscapeError(f"--chunk-points must be positive, got {chunk_points}")
        if not save_every >= 0:
            raise LandscapeError(f"--save-every must be >= 0 seconds, got {save_every}")
        if batch_size is not None and batch_size <= 0:
            raise LandscapeError(f"--batch-size must be positive, got {batch_size}")
        run = Run.open(run_dir)
        n = parse_samples(samples)
        outputs, dataset = [], None
        for step in resolve_steps(run, checkpoint):
            loaded = load_checkpoint_model(run, step, device=device, samples=n, seed=seed, dataset=dataset)
            dataset = loaded.dataset
            with surface_progress(not as_json and stderr_is_tty()) as progress:
                result = compute_surface(loaded, spec, points_per_chunk=chunk_points, batch_size=batch_size,
                                         save_every=save_every, progress=progress)
            view = {"checkpoint": step, **surface_view(result)}
            outputs.append(view)
            if not as_json:
                click.echo(describe_surface(step, result))
        if as_json:
            print_checkpoints_json(run.path, outputs)
        return
    opts = CurvatureOptions(curvature=curvature, fisher_type=fisher_type, top_k=top_k, bottom_k=bottom_k,
                            trace=trace, frobenius=frobenius, diag=diag, density=density, per_layer=per_layer,
                            seed=seed, batch_size=batch_size, precision=precision, product_method=product_method,
                            compile=compile_products, tol=tol, trace_rtol=trace_rtol, density_runs=density_runs,
                            density_steps=density_steps)
    opts.validate()
    if batch_size is not None and batch_size <= 0:
        raise LandscapeError(f"--batch-size must be positive, got {batch_size}")
    if backend == "pyhessian" and distributed.world_size() > 1:
        raise LandscapeError("`landscape analyze --backend pyhessian` (the peer's code) does not run under torchrun; "
                             "run it as one process")
    if backend == "pyhessian" and (curvature != "hessian" or bottom_k or frobenius or diag or per_layer):
        raise LandscapeError("--backend pyhessian computes only the Hessian's --top-k and --trace")
    run = Run.open(run_dir)
    n = parse_samples(samples)
    steps = resolve_steps(run, checkpoint)
    outputs, dataset = [], None
    for step in steps:
        loaded = load_checkpoint_model(run, step, device=device, samples=n, seed=seed, dataset=dataset)
        dataset = loaded.dataset
        options = {"samples": n, "seed": seed}
        if backend == "pyhessian":
            result = pyhessian_analysis(loaded, top_k=top_k, trace=trace, density=density, batch_size=batch_size,
                                        seed=seed)
            update_result(run, step, "pyhessian", result, **options)
        elif opts.wants_curvature():
            result = curvature_analysis(loaded, opts)
            if distributed.is_main():
                update_result(run, step, curvature, result, **options, precision=result["precision"])
        else:
            result = {"evaluation": evaluate_checkpoint(loaded)}
            if distributed.is_main():
                save_result(run, step, "evaluation", result["evaluation"], **options)
        view = {"checkpoint": step, **json_view(result)}
        outputs.append(view)
        if not as_json:
            click.echo(describe(step, view))
    if as_json:
        print_checkpoints_json(run.path, outputs)
    else:
        echo_err(f"saved under {run.analysis_dir}")
