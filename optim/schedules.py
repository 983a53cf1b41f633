"""Learning-rate schedules as pure functions of the step (nothing to save for exact resume).

lr(t) = base_lr * warmup(t) * factor(t) for t = 0 .. T-1 steps:

- ``constant``: factor 1
- ``step``: factor gamma^k, k = number of milestones (fractions of T) already passed
- ``cosine``: factor min_factor + (1 - min_factor) (1 + cos(pi t / T)) / 2 (Loshchilov & Hutter 2017)
- ``warmup_steps`` W > 0 multiplies by (t + 1) / W for t < W (linear warm-up).
"""

from __future__ import annotations

import math
from typing import Sequence

from landscape.errors import LandscapeError

SCHEDULES = ("constant", "step", "cosine")


def lr_factor(step: int, total_steps: int, schedule: str = "constant", milestones: Sequence[float] = (0.5, 0.75),
              gamma: float = 0.1, min_factor: float = 0.0, warmup_steps: int = 0) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based) of ``total_steps``."""
    if schedule == "constant":
        factor = 1.0
    elif schedule == "step":
        passed = sum(1 for m in milestones if step >= int(round(m * total_steps)))
        factor = gamma ** passed
    elif schedule == "cosine":
        factor = min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * step / max(total_steps, 1)))
    else:
        raise LandscapeError(f"unknown schedule {schedule!r}; choose from {', '.join(SCHEDULES)}")
    if warmup_steps and step < warmup_steps:
        factor *= (step + 1) / warmup_steps
    return factor


def validate_schedule(schedule: str, milestones: Sequence[float], gamma: float, min_factor: float,
                      warmup_steps: int) -> None:
    if schedule not in SCHEDULES:
        raise LandscapeError(f"unknown schedule {schedule!r}; choose from {', '.join(SCHEDULES)}")
    if any(not (0.0 < float(m) < 1.0) for m in milestones):
        raise LandscapeError("schedule milestones must be fractions of the run in (0, 1)")
    if not gamma > 0:
        raise LandscapeError("schedule gamma must be positive")
    if not 0.0 <= min_factor <= 1.0:
        raise LandscapeError("schedule min_factor must be in [0, 1]")
    if warmup_steps < 0:
        raise LandscapeError("warmup_steps must be >= 0")
