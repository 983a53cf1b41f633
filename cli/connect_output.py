"""``landscape analyze RUN --connect OTHER``: run the connection, print a summary or the JSON view."""

from __future__ import annotations

from typing import Any

import click
import numpy as np

from landscape.analysis import load_checkpoint_model, resolve_steps
from landscape.analysis.paths import ConnectSpec, connect
from landscape.runs import Run

from .common import echo_err, print_checkpoints_json, stderr_is_tty

PATH_KEYS = ("t", "train_loss", "train_acc", "test_loss", "test_acc")


def _path_view(path: dict[str, Any]) -> dict[str, Any]:
    out = {k: np.asarray(path[k]).tolist() for k in PATH_KEYS if k in path}
    out["barrier"] = path["barrier"]
    for key in ("pivots", "length", "training_loss"):
        if key in path:
            out[key] = np.asarray(path[key]).tolist() if key == "training_loss" else path[key]
    return out


def connect_view(result: dict[str, Any]) -> dict[str, Any]:
    """Top level: the requested path (t, losses, accuracies) and its train-loss barrier; then details."""
    main = result.get("fitted", result["linear"])
    view: dict[str, Any] = {k: np.asarray(main[k]).tolist() for k in PATH_KEYS if k in main}
    view["barrier"] = main["barrier"]["train_loss"]["barrier"]
    view["barrier_midpoint"] = main["barrier"]["train_loss"]["barrier_midpoint"]
    view = {**view, "curve": result["kind"], "other": result["other"], "aligned": result["aligned"],
            "bn": result["bn"], "distance": result["distance"], "linear": _path_view(result["linear"]),
            "ensemble": result["ensemble"], "result": result["path"], "seconds": result["seconds"]}
    if "fitted" in result:
        view["fitted"] = _path_view(result["fitted"])
        view["barrier_ratio_curve_to_linear"] = (view["fitted"]["barrier"]["train_loss"]["barrier"]
                                                 / max(result["linear"]["barrier"]["train_loss"]["barrier"], 1e-12))
    if "saddle_train_loss" in result:
        view["saddle_train_loss"] = result["saddle_train_loss"]
    if "plane" in result:
        view["plane"] = {"surface": result["plane"]["surface"], "bend": result["plane"]["bend"],
                         "w1": result["plane"]["w1"]}
    return view


def describe(step: int, result: dict[str, Any]) -> str:
    lin = result["linear"]
    lines = [f"checkpoint {step} -> {result['other']}{' (aligned)' if result['aligned'] else ''}: "
             f"distance {result['distance']:.4g}, BatchNorm {result['bn']}"]

    def row(label: str, path: dict[str, Any]) -> str:
        b = path["barrier"]
        text = (f"  {label:8s} train loss max {b['train_loss']['max']:.4g} (barrier {b['train_loss']['barrier']:.4g}, "
                f"midpoint barrier {b['train_loss']['barrier_midpoint']:.4g})")
        if "test_error" in b:
            text += f", test error barrier {100 * b['test_error']['barrier']:.2f} points"
        return text

    lines.append(row("linear", lin))
    if "fitted" in result:
        lines.append(row(result["kind"], result["fitted"]))
        ratio = (result["fitted"]["barrier"]["train_loss"]["barrier"]
                 / max(lin["barrier"]["train_loss"]["barrier"], 1e-12))
        lines.append(f"  curve barrier / linear barrier = {ratio:.3g}")
    ens = result["ensemble"]
    if "endpoint_0_test_acc" in ens:
        text = (f"  test accuracy: endpoints {100 * ens['endpoint_0_test_acc']:.2f}% / {100 * ens['endpoint_1_test_acc']:.2f}%, "
                f"their ensemble {100 * ens['endpoints_test_acc']:.2f}%")
        if "curve_test_acc" in ens:
            text += f", {ens['curve_points']} points of the curve {100 * ens['curve_test_acc']:.2f}%"
        lines.append(text)
    if "plane" in result:
        lines.append(f"  plane: {result['plane']['surface']}")
    lines.append(f"  saved {result['path']} ({result['seconds']:.1f} s)")
    return "\n".join(lines)


def run_connect(run_dir: str, checkpoint: str, spec: ConnectSpec, device: str, samples: int | None, seed: int,
                as_json: bool) -> None:
    run = Run.open(run_dir)
    outputs = []
    log = echo_err if (not as_json and stderr_is_tty()) else None
    for step in resolve_steps(run, checkpoint):
        loaded = load_checkpoint_model(run, step, device=device, samples=samples, seed=seed)
        result = connect(loaded, spec, progress=log)
        outputs.append({"checkpoint": step, **connect_view(result)})
        if not as_json:
            click.echo(describe(step, result))
    if as_json:
        print_checkpoints_json(run.path, outputs)
