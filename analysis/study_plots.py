"""The figure of a study (``landscape plot STUDY``): for every measure, the measure against the batch
size (one line per other setting), against learning rate / batch size, and the generalization gap
against the measure with Kendall's tau; and Keskar et al.'s 1-D line from the smallest- to the
largest-batch solution when the study computed it."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from landscape.errors import LandscapeError
from landscape.plotting import pyplot, save_figure

from .study import StudyResult
from .surface import SurfaceResult

BATCH, LR = "training.batch_size", "optimizer.lr"


def plot_study(study: StudyResult, path: str | Path) -> Path:
    measures = study.measures
    rows = [r for r in study.rows if r.get("status") == "finished"]
    if not measures and not study.interpolation:
        raise LandscapeError("the study has no measures to draw: rerun it with --measures NAME,...")
    vary = study.vary
    cols = [c for c in ("batch", "ratio", "gap") if c != "batch" or BATCH in vary]
    cols = [c for c in cols if c != "ratio" or (BATCH in vary and LR in vary)]
    nrows = len(measures) + (1 if study.interpolation else 0)
    plt = pyplot()
    fig, axes = plt.subplots(nrows, len(cols), figsize=(4.2 * len(cols), 3.2 * nrows), squeeze=False)
    others = [k for k in vary if k != BATCH]
    for i, m in enumerate(measures):
        for j, col in enumerate(cols):
            ax = axes[i, j]
            if col == "batch":
                groups: dict[str, list[dict]] = {}
                for r in rows:
                    groups.setdefault(", ".join(f"{k.partition('.')[2]}={r[k]}" for k in others), []).append(r)
                for label, g in groups.items():
                    g = sorted(g, key=lambda r: r[BATCH])
                    ax.plot([r[BATCH] for r in g], [r.get(m, math.nan) for r in g], "o-", label=label or None)
                sizes = sorted({r[BATCH] for r in rows})
                ax.set(xscale="log", xlabel="batch size", ylabel=m)
                ax.set_xticks(sizes, [str(b) for b in sizes])
                ax.minorticks_off()
                if others:
                    ax.legend(fontsize=6)
            elif col == "ratio":
                ax.scatter([r[LR] / r[BATCH] for r in rows], [r.get(m, math.nan) for r in rows], s=14)
                ax.set(xscale="log", xlabel="learning rate / batch size", ylabel=m)
            else:
                ax.scatter([r.get(m, math.nan) for r in rows], [100 * r["generalization_gap"] for r in rows], s=14)
                tau = (study.correlations or {}).get(m, {}).get("overall")
                ax.set(xlabel=m, ylabel="generalization gap (points)",
                       title=f"Kendall tau {tau:+.2f}" if tau is not None else "")
            ax.grid(alpha=0.3)
    if study.interpolation:
        line = SurfaceResult.load(study.interpolation)
        ax = axes[-1, 0]
        x = line.xcoordinates
        for split, style in (("train", "-"), ("test", "--")):
            ax.plot(x, line.metric(f"{split}_loss"), "b" + style, label=f"{split} loss")
        ax.set(xlabel="t (0: smallest batch, 1: largest batch)", ylabel="loss", title="small- to large-batch line")
        if line.train_acc is not None:
            twin = ax.twinx()
            for split, style in (("train", "-"), ("test", "--")):
                twin.plot(x, 100 * np.asarray(line.metric(f"{split}_acc")), "r" + style, label=f"{split} accuracy")
            twin.set_ylabel("accuracy (%)", color="r")
        ax.legend(fontsize=7, loc="upper left")
        for extra in axes[-1, 1:]:
            extra.axis("off")
    fig.tight_layout()
    return save_figure(fig, path)
