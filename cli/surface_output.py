"""What ``landscape analyze --slice`` prints: a summary, a progress bar on stderr, the JSON view."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import numpy as np

METRICS = ("train_loss", "train_acc", "test_loss", "test_acc")
ARRAYS = ("xcoordinates", "ycoordinates", *METRICS, "proj_xcoord", "proj_ycoord", "proj_steps")


def surface_view(result: dict[str, Any]) -> dict[str, Any]:
    """The JSON object of a surface: file, options, axes, metric arrays (rows follow x), info."""
    view: dict[str, Any] = {"surface": result["path"], "dims": result["dims"], "options": result["options"],
                            "axis_order": "values[i][j] = f(xcoordinates[i], ycoordinates[j])"
                            if result["dims"] == 2 else "values[i] = f(xcoordinates[i])"}
    for key in ARRAYS:
        if key in result:
            view[key] = np.asarray(result[key]).tolist()
    view.update(result.get("info", {}))
    view.update(computed_points=result["computed_points"], resumed_points=result["resumed_points"],
                seconds=result["seconds"])
    return view


def describe_surface(step: int, result: dict[str, Any]) -> str:
    xs = result["xcoordinates"]
    grid = f"{len(xs)}" + (f" x {len(result['ycoordinates'])}" if result["dims"] == 2 else "")
    lines = [f"checkpoint {step}: {result['dims']}-D {result['options']['directions']} slice, {grid} points "
             f"on [{xs[0]:g}, {xs[-1]:g}]" + (f" x [{result['ycoordinates'][0]:g}, {result['ycoordinates'][-1]:g}]"
                                              if result["dims"] == 2 else "")]
    for key in METRICS:
        if key in result:
            v = np.asarray(result[key])
            lines.append(f"  {key}: min {np.nanmin(v):.4g}, max {np.nanmax(v):.4g}")
    info = result.get("info", {})
    if "explained_variance_ratio_" in info:
        lines.append("  PCA explained variance: " + ", ".join(f"{100 * r:.2f}%" for r in info["explained_variance_ratio_"]))
    if "eigenvalues" in info:
        lines.append("  Hessian eigenvalues of the directions: " + ", ".join(f"{v:.5g}" for v in info["eigenvalues"]))
    if "distance" in info:
        lines.append(f"  distance to {info['between']}: {info['distance']:.5g}")
    if result["computed_points"] == 0 and result["resumed_points"] == 0:
        lines.append("  (already computed with these options)")
    else:
        resumed = f", {result['resumed_points']} resumed" if result["resumed_points"] else ""
        lines.append(f"  {result['computed_points']} points computed{resumed} in {result['seconds']:.2f} s")
    lines.append(f"  saved {result['path']}")
    return "\n".join(lines)


@contextlib.contextmanager
def surface_progress(show: bool) -> Iterator[Callable[[int, int], None] | None]:
    if not show:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("[bold]surface"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("surface", total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update
