"""``landscape study``."""

from __future__ import annotations

import math
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

import click

from landscape.analysis.sharpness import measure_names
from landscape.analysis.study import MeasureOptions, canonical_key, run_study
from landscape.errors import LandscapeError
from landscape.optim.config import load_config_file, merge

from .analyze import parse_samples
from .common import assemble_config, echo_err, print_json, stderr_is_tty, training_options


def read_spec(path: str) -> tuple[dict, dict, list[str]]:
    """A study TOML: the usual [data]/[model]/[optimizer]/[training] tables plus [study] vary = {...}
    and optionally measures = [...]."""
    try:
        raw = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise LandscapeError(f"study spec {path} not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise LandscapeError(f"study spec {path} is not valid TOML: {exc}") from None
    study = raw.pop("study", {})
    vary = study.get("vary", {})
    if not isinstance(vary, dict):
        raise LandscapeError("[study] vary must be a table of key = [values]")
    parsed = {}
    for key, values in vary.items():
        if not isinstance(values, list) or not values:
            raise LandscapeError(f"[study] vary.{key} must be a non-empty list")
        parsed[canonical_key(key)] = values
    measures = study.get("measures", [])
    if not isinstance(measures, list) or not all(isinstance(m, str) for m in measures):
        raise LandscapeError("[study] measures must be a list of measure names")
    return merge({}, raw), parsed, measures


def _fmt(value) -> str:
    return "-" if value is None else f"{value:+.3f}"


def parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise LandscapeError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    return i, n


@click.command(epilog="""\b
Examples:
  landscape study --vary batch-size=32,128,1024 --vary lr=0.1,0.01 --epochs 20 --out studies/bs
  landscape study spec.toml --out studies/bs --shard 0/4     # job arrays
Spec file: the [data], [model], [optimizer], [training] tables of a config plus
  [study]
  vary = { "training.batch_size" = [32, 128, 1024], "optimizer.lr" = [0.1, 0.01] }
  measures = ["keskar", "lambda-max", "sam"]          # optional, as --measures
""")
@click.argument("spec", required=False, type=click.Path(dir_okay=False))
@click.option("--vary", "vary_items", multiple=True, metavar="KEY=V1,V2,...",
              help="Vary a hyper-parameter (batch-size, lr, optimizer, seed, weight-decay, or section.key).")
@click.option("--out", type=click.Path(file_okay=False), help="Study folder [default: studies/<spec name> or studies/study].")
@click.option("--shard", default="0/1", show_default=True, help="Train only combinations i, i+n, ... (i/n).")
@click.option("--measures", default=None, metavar="NAME,...",
              help="Sharpness measures of every final checkpoint (see analyze --sharpness), with their Kendall "
              "correlation to the generalization gap.")
@click.option("--measure-samples", default="1000", show_default=True,
              help="Training samples the measures use (a fixed seeded subset), or 'all'.")
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON on stdout.")
@click.option("--quiet", "-q", is_flag=True, help="Less output.")
@training_options
def study(spec, vary_items, out, shard, measures, measure_samples, as_json, quiet, config_file, assignments,
          **flags):
    """Train every combination of varied hyper-parameters (resumable) and tabulate the outcomes."""
    from landscape.analysis.study import parse_vary

    base, vary, spec_measures = read_spec(spec) if spec else ({}, {}, [])
    if config_file:
        base = merge(base, load_config_file(config_file))
    base = merge(base, assemble_config(flags, None, assignments))
    vary.update(parse_vary(list(vary_items)))
    if out is None:
        out = Path("studies") / (Path(spec).stem if spec else "study")
    log = None if quiet else echo_err
    names = measure_names(measures.split(",") if measures else spec_measures)
    opts = MeasureOptions(names=names, samples=parse_samples(measure_samples),
                          seed=int(base.get("training", {}).get("seed", 0) or 0)) if names else None
    result = run_study(base, vary, out, parse_shard(shard), progress=(not quiet and stderr_is_tty()), log=log,
                       measures=opts)
    if as_json:
        print_json({"study": str(result.path), "rows": result.rows, "correlations": result.correlations,
                    "interpolation": result.interpolation})
        return
    keys = list(vary)
    header = [k.partition(".")[2] for k in keys] + ["status", "train acc", "test acc", "gap", "train loss", "test loss",
                                                    *names]
    lines = ["  ".join(f"{h:>12}" for h in header)]
    for row in result.rows:
        cells = [str(row[k]) for k in keys] + [row["status"]]
        for key, pct in (("train_acc", True), ("test_acc", True), ("generalization_gap", True),
                         ("train_loss", False), ("test_loss", False)):
            v = row.get(key, math.nan)
            cells.append("-" if v != v else (f"{100 * v:.2f}%" if pct else f"{v:.4g}"))
        cells += [f"{row.get(n, math.nan):.4g}" for n in names]
        lines.append("  ".join(f"{c:>12}" for c in cells))
    if result.correlations:
        lines.append("")
        lines.append("Kendall tau with the generalization gap: overall, per hyper-parameter, Psi (their mean)")
        for n, c in result.correlations.items():
            per = ", ".join(f"{k.partition('.')[2]} {_fmt(v)}" for k, v in c["granulated"].items())
            lines.append(f"  {n:20s} {_fmt(c['overall'])}   [{per}]   Psi {_fmt(c['psi'])}")
    click.echo("\n".join(lines))
    echo_err(f"table saved to {result.path}")
