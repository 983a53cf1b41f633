"""``landscape analyze``: one checkpoint loop over the library's analysis kinds.

Which kind runs follows from the flags given: ``--slice`` (surface), ``--connect`` (connect),
``--sharpness`` (sharpness), any curvature quantity (curvature), none (evaluation). A flag that
belongs to no requested kind is an error, and so are two kinds at once; the library's
:class:`~landscape.analysis.contract.SpecError` messages name spec fields, mapped here to flags.
"""

from __future__ import annotations

from typing import Any

import click
from click.core import ParameterSource

from landscape import distributed
from landscape.analysis import load_checkpoint_model, resolve_steps
from landscape.analysis.contract import SpecError
from landscape.analysis.curvature import Backend, Curvature, FisherType, Precision, ProductMethod
from landscape.analysis.directions import NORMS
from landscape.analysis.path_result import Curve
from landscape.analysis.surface import BatchNormMode, Directions
from landscape.errors import LandscapeError
from landscape.runs import Run

from .analyze_specs import KINDS, parse_samples
from .common import echo_err, print_checkpoints_json, stderr_is_tty
from .progress import progress_display

COMMON_FLAGS = ("run_dir", "checkpoint", "samples", "seed", "device", "as_json", "batch_size")
TRIGGERS = {"surface": "slice_dims", "connect": "connect_to", "sharpness": "sharpness_names"}


def flag(param: str) -> str:
    """The command-line spelling of a click parameter name."""
    for p in analyze.params:
        if p.name == param:
            return max(p.opts, key=len) if p.opts else param
    return "--" + param.replace("_", "-")


def requested_kind(given: set[str]) -> str:
    """The one analysis kind the given flags ask for (evaluation when they ask for none)."""
    kinds = [kind for kind, trigger in TRIGGERS.items() if trigger in given]
    if given & set(KINDS["curvature"].flags) and not kinds:
        kinds.append("curvature")
    if len(kinds) > 1:
        raise LandscapeError(f"{' and '.join(flag(TRIGGERS[k]) for k in kinds)} are two analyses ({', '.join(kinds)});"
                             " run them as separate commands")
    kind = kinds[0] if kinds else "evaluation"
    stray = sorted(given - set(COMMON_FLAGS) - set(KINDS[kind].flags))
    if stray:
        owner = next(k for k, entry in KINDS.items() if stray[0] in entry.flags)
        raise LandscapeError(f"{flag(stray[0])} belongs to the {owner} analysis, not to this {kind} analysis"
                             + (f" ({flag(TRIGGERS[kind])})" if kind in TRIGGERS else ""))
    return kind


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
@click.option("--curvature", type=click.Choice(Curvature.names()), default="hessian", show_default=True)
@click.option("--fisher-type", type=click.Choice(FisherType.names()), default="mc", show_default=True,
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
@click.option("--precision", type=click.Choice(Precision.names()), default=None,
              help="Precision of the curvature products [default: the model's own, e.g. float64 for a float64 "
                   "model]; --json reports the one used.")
@click.option("--product-method", type=click.Choice(ProductMethod.names()),
              default="auto", show_default=True, help="Hessian-vector product method (auto: fastest, measured).")
@click.option("--compile", "compile_products", is_flag=True,
              help="torch.compile the forward-over-reverse Hessian-vector product (compiles once, seconds; "
                   "auto keeps it only if it is the faster method).")
@click.option("--tol", type=float, default=1e-5, show_default=True, help="Lanczos relative residual tolerance.")
@click.option("--trace-rtol", type=float, default=1e-2, show_default=True,
              help="Stop trace probes when stderr <= RTOL * |trace|.")
@click.option("--density-runs", type=int, default=10, show_default=True)
@click.option("--density-steps", type=int, default=80, show_default=True)
@click.option("--backend", type=click.Choice(Backend.names()), default="landscape", show_default=True,
              help="pyhessian: top-k and trace through the pyhessian package.")
@click.option("--slice", "slice_dims", type=click.Choice(["1d", "2d"]), default=None,
              help="Loss slice (1d) or surface (2d) around the checkpoint.")
@click.option("--directions", type=click.Choice([d for d in Directions.names() if d != "plane"]), default="filter",
              show_default=True, help="Slice directions: Gaussian, filter-normalized Gaussian, trajectory PCA, "
              "top Hessian eigenvectors.")
@click.option("--norm", type=click.Choice(list(NORMS)), default=None,
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
@click.option("--bn", type=click.Choice(BatchNormMode.names()), default=None,
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
@click.option("--curve", type=click.Choice(Curve.names()), default="linear",
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
def analyze(**flags):
    """Analyse checkpoints of a run; results are saved under RUN/analysis/<checkpoint>/.

    Without quantity flags, computes train/test loss and accuracy (and the generalization gap).
    With --slice, computes a loss slice or surface (resumable: rerun the same command after a kill).
    """
    ctx = click.get_current_context()
    given = {name for name in flags if ctx.get_parameter_source(name) != ParameterSource.DEFAULT}
    kind = requested_kind(given)
    entry = KINDS[kind]
    try:
        spec = entry.build(flags)
        spec.validate()
        run = Run.open(flags["run_dir"])
        outputs = _analyze_checkpoints(run, kind, spec, flags)
    except SpecError as exc:
        raise LandscapeError(exc.render(lambda field: flag(entry.fields.get(field, field)))) from None
    if flags["as_json"]:
        print_checkpoints_json(run.path, outputs)
    elif kind in ("evaluation", "curvature", "sharpness"):
        echo_err(f"saved under {run.analysis_dir}")


def _analyze_checkpoints(run: Run, kind: str, spec: Any, flags: dict[str, Any]) -> list[dict[str, Any]]:
    samples, entry = parse_samples(flags["samples"]), KINDS[kind]
    outputs, dataset = [], None
    for step in resolve_steps(run, flags["checkpoint"]):
        loaded = load_checkpoint_model(run, step, device=flags["device"], samples=samples, seed=flags["seed"],
                                       dataset=dataset)
        dataset = loaded.dataset
        with progress_display(not flags["as_json"] and stderr_is_tty()) as progress:
            result = entry.run(loaded, spec, progress, flags)
        if distributed.is_main() and not result.stored_by_run:
            result.save(run)
        outputs.append(result.to_json())
        if not flags["as_json"]:
            click.echo(result.summary())
    return outputs
