"""Figures of stored slices and surfaces, and ParaView export.

Kinds: ``slice`` (1-D loss and accuracy, train and test, twin axes), ``contour`` (contour lines at
log-spaced levels), ``surface`` (filled contours, log colour scale), ``heatmap``, ``surface3d``
(3-D surface), ``trajectory`` (contours with the run's checkpoints projected on the plane).
``write_vtp`` writes the surface as VTK PolyData (ASCII ``.vtp``) for ParaView, optionally with
z = ln(loss + 0.1) as loss-landscape's ``h52vtp.py --log`` does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from landscape.atomic import atomic_write_text
from landscape.errors import LandscapeError
from landscape.plotting import pyplot, save_figure
from landscape.runs import Run

from .surface import SurfaceResult

KINDS_2D = ("contour", "surface", "heatmap", "surface3d", "trajectory")
KINDS = ("slice", *KINDS_2D)


def find_surface(run: Run, step: int, dims: int, name: str | None = None) -> Path:
    """The surface file ``name`` of checkpoint ``step``, or its most recent ``dims``-D surface."""
    folder = run.analysis_dir / f"{int(step):08d}"
    if name:
        path = folder / (name if name.endswith(".h5") else f"{name}.h5")
        if not path.exists():
            raise LandscapeError(f"no surface {name!r} for checkpoint {step} (looked for {path})")
        return path
    candidates = sorted(folder.glob("surface-*.h5"), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in candidates:
        try:
            if SurfaceResult.load(path).dims == dims:
                return path
        except LandscapeError:
            continue
    raise LandscapeError(f"no {dims}-D surface for checkpoint {step}: run "
                         f"`landscape analyze {run.path} --slice {dims}d` first")


def _levels(z: np.ndarray, n: int = 20) -> np.ndarray:
    finite = z[np.isfinite(z)]
    lo, hi = float(finite.min()), float(finite.max())
    if lo > 0 and hi / lo > 1.5:
        return np.geomspace(lo, hi, n)
    return np.linspace(lo, hi, n)


def _title(surface: SurfaceResult, metric: str) -> str:
    opts = surface.options
    kind = "between two checkpoints" if opts.get("between") and surface.dims == 1 else f"{opts['directions']} directions"
    return f"{metric.replace('_', ' ')}, checkpoint {surface.checkpoint}, {kind}"


def _axis_labels(surface: SurfaceResult) -> tuple[str, str]:
    info = surface.info
    if "explained_variance_ratio_" in info:
        r = info["explained_variance_ratio_"]
        return f"1st PC: {100 * r[0]:.2f} %", (f"2nd PC: {100 * r[1]:.2f} %" if len(r) > 1 else "y")
    if "eigenvalues" in info:
        ev = info["eigenvalues"]
        return f"eigenvector 1 ({ev[0]:.4g})", (f"eigenvector 2 ({ev[1]:.4g})" if len(ev) > 1 else "y")
    if surface.options.get("between"):
        return "t (0: this checkpoint, 1: the other)", "y"
    return "x", "y"


def plot_surface(surface: SurfaceResult, kind: str, path: str | Path, metric: str = "train_loss") -> Path:
    """Draw a stored surface (:meth:`SurfaceResult.load`)."""
    if kind not in KINDS:
        raise LandscapeError(f"unknown surface figure {kind!r}; choose one of {', '.join(KINDS)}")
    if metric not in surface.metrics():
        raise LandscapeError(f"the surface has no {metric}; it has {', '.join(surface.metrics())}")
    plt = pyplot()
    x = surface.xcoordinates
    xlabel, ylabel = _axis_labels(surface)
    if kind == "slice":
        if surface.dims != 1:
            raise LandscapeError("--kind slice draws 1-D slices; this surface is 2-D (use contour, surface, ...)")
        fig, ax = plt.subplots(figsize=(6, 4))
        for split, style in (("train", "-"), ("test", "--")):
            if f"{split}_loss" in surface.metrics():
                ax.plot(x, surface.metric(f"{split}_loss"), "b" + style, label=f"{split} loss")
        ax.set(xlabel=xlabel, ylabel="loss", title=_title(surface, "loss"))
        if "train_acc" in surface.metrics() or "test_acc" in surface.metrics():
            ax2 = ax.twinx()
            for split, style in (("train", "-"), ("test", "--")):
                if f"{split}_acc" in surface.metrics():
                    ax2.plot(x, 100 * surface.metric(f"{split}_acc"), "r" + style, label=f"{split} accuracy")
            ax2.set_ylabel("accuracy (%)", color="r")
            lines = ax.get_lines() + ax2.get_lines()
            ax.legend(lines, [ln.get_label() for ln in lines], loc="upper center", fontsize=8)
        else:
            ax.legend(fontsize=8)
        return save_figure(fig, path)
    if surface.dims != 2:
        raise LandscapeError(f"--kind {kind} needs a 2-D surface; this one is 1-D (use --kind slice)")
    y = surface.ycoordinates
    z = np.asarray(surface.metric(metric), dtype=float)
    X, Y = np.meshgrid(x, y, indexing="ij")  # z[i, j] = f(x_i, y_j)
    log = metric.endswith("loss")
    if kind == "surface3d":
        fig = plt.figure(figsize=(7, 5.5))
        ax = fig.add_subplot(projection="3d")
        ax.plot_surface(X, Y, np.log10(z) if log and np.nanmin(z) > 0 else z, cmap="coolwarm", linewidth=0)
        ax.set(xlabel=xlabel, ylabel=ylabel, zlabel=("log10 " if log and np.nanmin(z) > 0 else "") + metric,
               title=_title(surface, metric))
        return save_figure(fig, path)
    fig, ax = plt.subplots(figsize=(6, 5))
    if kind == "heatmap":
        from matplotlib.colors import LogNorm

        norm = LogNorm() if log and np.nanmin(z) > 0 else None
        mesh = ax.pcolormesh(X, Y, z, shading="nearest", cmap="viridis", norm=norm)
        fig.colorbar(mesh, ax=ax, label=metric)
    elif kind == "surface":
        from matplotlib.colors import LogNorm

        levels = _levels(z, 30)
        norm = LogNorm(levels[0], levels[-1]) if log and levels[0] > 0 else None
        filled = ax.contourf(X, Y, z, levels=levels, cmap="viridis", norm=norm)
        fig.colorbar(filled, ax=ax, label=metric)
    else:  # contour, trajectory
        cs = ax.contour(X, Y, z, levels=_levels(z), cmap="summer")
        ax.clabel(cs, cs.levels[::2], fontsize=6, fmt="%.3g")
    if kind == "trajectory":
        if surface.proj_xcoord is None:
            raise LandscapeError("this surface has no trajectory projection (the run had fewer than two "
                                 "checkpoints up to this one)")
        px, py = surface.proj_xcoord, surface.proj_ycoord
        ax.plot(px, py, "r-o", markersize=3, linewidth=1, label="checkpoints")
        steps = surface.proj_steps
        if steps is not None and len(steps):
            ax.annotate(str(int(steps[0])), (px[0], py[0]), fontsize=7)
            ax.annotate(str(int(steps[-1])), (px[-1], py[-1]), fontsize=7)
        ax.legend(fontsize=8)
    ax.plot([0], [0], "k*", markersize=8)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=_title(surface, metric))
    return save_figure(fig, path)


def write_vtp(surface: SurfaceResult, path: str | Path, metric: str = "train_loss", log: bool = False) -> Path:
    """The 2-D surface as ASCII VTK PolyData: one point per grid node (x, y, z), z = the metric (or
    ln(metric + 0.1) with ``log``), quads between neighbours, the metric as point data."""
    if surface.dims != 2:
        raise LandscapeError("--format vtp needs a 2-D surface")
    if metric not in surface.metrics():
        raise LandscapeError(f"the surface has no {metric}")
    x, y = surface.xcoordinates, surface.ycoordinates
    z = np.asarray(surface.metric(metric), dtype=float)
    height = np.log(z + 0.1) if log else z
    nx, ny = z.shape
    X, Y = np.meshgrid(x, y, indexing="ij")
    points = " ".join(f"{a:.8g} {b:.8g} {c:.8g}" for a, b, c in zip(X.ravel(), Y.ravel(), height.ravel()))
    idx = np.arange(nx * ny).reshape(nx, ny)
    quads = np.stack([idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]], -1).reshape(-1, 4)
    connectivity = " ".join(str(int(v)) for v in quads.ravel())
    offsets = " ".join(str(4 * (k + 1)) for k in range(len(quads)))
    values = " ".join(f"{v:.8g}" for v in z.ravel())
    text = f"""<?xml version="1.0"?>
<VTKFile type="PolyData" version="0.1" byte_order="LittleEndian">
  <PolyData>
    <Piece NumberOfPoints="{nx * ny}" NumberOfVerts="0" NumberOfLines="0" NumberOfStrips="0" NumberOfPolys="{len(quads)}">
      <PointData Scalars="{metric}">
        <DataArray type="Float64" Name="{metric}" NumberOfComponents="1" format="ascii">{values}</DataArray>
      </PointData>
      <Points>
        <DataArray type="Float64" Name="Points" NumberOfComponents="3" format="ascii">{points}</DataArray>
      </Points>
      <Polys>
        <DataArray type="Int64" Name="connectivity" format="ascii">{connectivity}</DataArray>
        <DataArray type="Int64" Name="offsets" format="ascii">{offsets}</DataArray>
      </Polys>
    </Piece>
  </PolyData>
</VTKFile>
"""
    path = Path(path)
    if path.suffix.lower() != ".vtp":
        raise LandscapeError(f"VTK output file {path} must end in .vtp")
    atomic_write_text(path, text)
    return path
