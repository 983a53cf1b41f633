"""``landscape study``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from landscape.analysis.contract import SpecError
from landscape.analysis.sharpness_analysis import SharpnessSpec
from landscape.analysis.study import run_study
from landscape.analysis.study_spec import StudySpec, parse_vary, training_seed
from landscape.errors import LandscapeError
from landscape.optim.config import load_config_file, merge

from .analyze import parse_samples
from .common import assemble_config, echo_err, parse_pair, print_json, stderr_is_tty, training_options

STUDY_FLAGS = {"vary": "--vary", "shard": "--shard", "measures": "--measures", "measure_samples": "--measure-samples"}


def parse_shard(text: str) -> tuple[int, int]:
    return parse_pair(text, "/", int, f"--shard must look like i/n (e.g. 0/4), got {text!r}")


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
    study_spec = StudySpec.from_toml(spec) if spec else StudySpec()
    base = study_spec.base
    if config_file:
        base = merge(base, load_config_file(config_file))
    base = merge(base, assemble_config(flags, None, assignments))
    names = measures.split(",") if measures else (study_spec.measures.measures if study_spec.measures else ())
    try:
        study_spec = replace(
            study_spec, base=base, vary={**study_spec.vary, **parse_vary(list(vary_items))},
            out=Path(out) if out else study_spec.out, shard=parse_shard(shard),
            measures=SharpnessSpec(measures=tuple(names), seed=training_seed(base)) if names else None,
            measure_samples=parse_samples(measure_samples))
        display = None if quiet else (lambda i, total, message: echo_err(message))
        result = run_study(study_spec, progress=display, training_progress=not quiet and stderr_is_tty())
    except SpecError as exc:
        raise LandscapeError(exc.render(lambda field: STUDY_FLAGS.get(field, field))) from None
    if as_json:
        print_json(result.to_json())
        return
    click.echo(result.summary())
    echo_err(f"table saved to {result.path}")
