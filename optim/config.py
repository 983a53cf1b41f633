"""Training configuration: defaults, TOML files, ``--set key=value`` overrides and validation.

A configuration has four sections (the same in TOML files, ``--set`` keys and ``run.h5``)::

    [data]       name = "mnist1d", samples, data_dir, and the data set's own options
    [model]      name = "mlp", and the model's options (widths = [100, 100], ...)
    [optimizer]  name = "sgd", lr, weight_decay, and the optimizer's options (momentum, betas, ...)
    [training]   epochs | steps, batch_size, schedule, seed, device, eval_every, checkpoint_every, ...

Precedence: defaults < --config file < command-line flags < --set.
"""

from __future__ import annotations

import copy
import math
import sys
from pathlib import Path
from typing import Any, Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from landscape.errors import LandscapeError

from .schedules import validate_schedule

SECTIONS = ("data", "model", "optimizer", "training")

TRAINING_DEFAULTS: dict[str, Any] = {
    "epochs": None,            # default 10 when neither epochs nor steps is given
    "steps": None,
    "batch_size": 128,
    "schedule": "constant",
    "milestones": [0.5, 0.75],
    "gamma": 0.1,
    "min_factor": 0.0,
    "warmup_steps": 0,
    "seed": 0,
    "device": "auto",
    "eval_every": None,        # steps; default: every epoch (at most ~200 evaluations)
    "checkpoint_every": None,  # steps; default: about 20 checkpoints, on evaluation steps
    "eval_batch_size": 2048,
    "loss": None,              # default: the data set's loss
    "track_curvature_every": None,  # steps: record lambda_max of the training-loss Hessian
    "track_trace": False,           # also its trace (Hutchinson / GGN control variate)
    "track_samples": 2048,          # fixed seeded subset of the training set for the tracked Hessian
    "bf16": False,                  # forward passes of training steps under bfloat16 autocast (GPUs)
    "sync_batchnorm": False,        # under torchrun on GPUs: BatchNorm statistics over the global batch
}

DEFAULT_CONFIG: dict[str, Any] = {
    "data": {"name": "mnist1d"},
    "model": {},
    "optimizer": {"name": "sgd"},
    "training": {},
}


def default_config() -> dict[str, Any]:
    return copy.deepcopy(DEFAULT_CONFIG)


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Section-wise merge; changing a section's ``name`` drops that section's old options."""
    out = copy.deepcopy(dict(base))
    for section, values in override.items():
        if section not in SECTIONS:
            raise LandscapeError(f"unknown config section {section!r}; sections are {', '.join(SECTIONS)}")
        if not isinstance(values, Mapping):
            raise LandscapeError(f"config section {section!r} must be a table of key = value")
        current = dict(out.get(section, {}))
        if section != "training" and "name" in values and values["name"] != current.get("name"):
            keep = {"samples", "data_dir"} if section == "data" else {"lr", "weight_decay"} if section == "optimizer" else set()
            current = {k: v for k, v in current.items() if k in keep}
        current.update(copy.deepcopy(dict(values)))
        out[section] = current
    return out


def load_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise LandscapeError(f"config file {path} not found")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise LandscapeError(f"config file {path} is not valid TOML: {exc}") from None
    return merge({}, data)


def parse_value(text: str) -> Any:
    """A ``--set`` value: any TOML value (numbers, booleans, [lists], "strings"), else the raw text."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_assignment(item: str) -> tuple[str, str, Any]:
    """``section.key=value`` -> (section, key, value)."""
    if "=" not in item:
        raise LandscapeError(f"--set expects section.key=value, got {item!r}")
    key, _, text = item.partition("=")
    section, dot, name = key.strip().partition(".")
    if not dot or not name:
        raise LandscapeError(f"--set key must look like section.key (e.g. model.widths), got {key.strip()!r}")
    if section not in SECTIONS:
        raise LandscapeError(f"--set: unknown section {section!r}; sections are {', '.join(SECTIONS)}")
    return section, name, parse_value(text.strip())


def apply_assignments(config: Mapping[str, Any], items: list[str]) -> dict[str, Any]:
    out = copy.deepcopy(dict(config))
    for item in items:
        section, name, value = parse_assignment(item)
        out = merge(out, {section: {name: value}})
    return out


def _positive_int(value: Any, what: str, allow_none: bool = True) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value <= 0:
        raise LandscapeError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def normalize(config: Mapping[str, Any]) -> dict[str, Any]:
    """Fill defaults and validate everything that does not need the data set."""
    cfg = merge(default_config(), config)
    training = dict(TRAINING_DEFAULTS)
    unknown = sorted(set(cfg["training"]) - set(TRAINING_DEFAULTS))
    if unknown:
        raise LandscapeError(f"unknown training option {unknown[0]!r} (options: {', '.join(TRAINING_DEFAULTS)})")
    training.update(cfg["training"])
    if training["epochs"] is not None and training["steps"] is not None:
        raise LandscapeError("give either --epochs or --steps, not both")
    training["epochs"] = _positive_int(training["epochs"], "--epochs")
    training["steps"] = _positive_int(training["steps"], "--steps")
    if training["epochs"] is None and training["steps"] is None:
        training["epochs"] = 10
    training["batch_size"] = _positive_int(training["batch_size"], "--batch-size", allow_none=False)
    training["eval_batch_size"] = _positive_int(training["eval_batch_size"], "eval_batch_size", allow_none=False)
    training["eval_every"] = _positive_int(training["eval_every"], "--eval-every")
    training["checkpoint_every"] = _positive_int(training["checkpoint_every"], "--checkpoint-every")
    training["track_curvature_every"] = _positive_int(training["track_curvature_every"], "--track-curvature-every")
    training["track_samples"] = _positive_int(training["track_samples"], "--track-samples", allow_none=False)
    for flag in ("bf16", "sync_batchnorm", "track_trace"):
        if not isinstance(training[flag], bool):
            raise LandscapeError(f"{flag} must be true or false, got {training[flag]!r}")
    seed = training["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise LandscapeError(f"--seed must be a non-negative integer, got {seed!r}")
    for key in ("gamma", "min_factor"):
        if isinstance(training[key], bool) or not isinstance(training[key], (int, float)) \
                or not math.isfinite(training[key]):
            raise LandscapeError(f"{key} must be a number, got {training[key]!r}")
    if not isinstance(training["milestones"], list):
        raise LandscapeError("milestones must be a list of fractions, e.g. [0.5, 0.75]")
    training["warmup_steps"] = int(training["warmup_steps"] or 0)
    validate_schedule(training["schedule"], training["milestones"], training["gamma"], training["min_factor"],
                      training["warmup_steps"])
    cfg["training"] = training
    samples = cfg["data"].get("samples")
    if samples is not None:
        cfg["data"]["samples"] = _positive_int(samples, "--samples")
    for section in ("data", "optimizer"):
        if not isinstance(cfg[section].get("name"), str) or not cfg[section]["name"]:
            raise LandscapeError(f"{section} name must be a non-empty string")
    return cfg


RESUMABLE_CHANGES = {("training", "epochs"), ("training", "steps"), ("training", "device")}

# optimizers whose decoupled decay was stored as ``weight_decay`` before ``decoupled_weight_decay`` existed
RENAMED_DECOUPLED = ("adamw", "adahessian", "kfac")


def upgrade_stored(stored: Mapping[str, Any]) -> dict[str, Any]:
    """A stored configuration in today's option names. Runs of adamw, adahessian and kfac (also wrapped)
    written before ``decoupled_weight_decay`` existed have no such key and called that decay ``weight_decay``:
    it moves to ``decoupled_weight_decay`` (the coupled ``weight_decay`` is then 0), so they resume unchanged."""
    out = copy.deepcopy(dict(stored))
    optimizer = out.get("optimizer", {})
    base = str(optimizer.get("name", "")).rpartition(":")[2]
    if base in RENAMED_DECOUPLED and "decoupled_weight_decay" not in optimizer:
        optimizer["decoupled_weight_decay"] = optimizer.pop("weight_decay", 0.0) or 0.0
        optimizer["weight_decay"] = 0.0
    return out


def resume_config(stored: Mapping[str, Any], requested: Mapping[str, Any]) -> dict[str, Any]:
    """The stored configuration with the few changes a resume may make (longer training, device).

    Anything else that differs is an error: a resumed run must continue the same experiment. Older option
    names are upgraded first (:func:`upgrade_stored`).
    """
    out = upgrade_stored(stored)
    for section, values in requested.items():
        for key, value in values.items():
            if out.get(section, {}).get(key) == value:
                continue
            if (section, key) not in RESUMABLE_CHANGES:
                raise LandscapeError(f"--resume continues the stored configuration; {section}.{key} cannot change "
                                     f"(stored {out.get(section, {}).get(key)!r}, given {value!r})")
            out[section][key] = value
            if key == "epochs" and value is not None:
                out["training"]["steps"] = None
            if key == "steps" and value is not None:
                out["training"]["epochs"] = None
    return out
