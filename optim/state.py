"""Loading optimizer checkpoints written before an option existed."""

from __future__ import annotations

from typing import Any, Callable


def load_keeping_new_options(optimizer, load: Callable[[dict], None], state_dict: dict[str, Any]) -> None:
    """``load(state_dict)`` (torch's ``load_state_dict``, which replaces every group by the saved one), then
    give each group back the options it was built with that the saved group lacks: a checkpoint written
    before an option existed keeps the value of the run's configuration."""
    built = [dict(group) for group in optimizer.param_groups]
    load(state_dict)
    for group, before in zip(optimizer.param_groups, built):
        for key, value in before.items():
            group.setdefault(key, value)


def load_moving_decoupled_decay(optimizer, load: Callable[[dict], None], state_dict: dict[str, Any]) -> None:
    """``load(state_dict)``; a checkpoint written before ``decoupled_weight_decay`` existed (AdaHessian,
    K-FAC) stored that decay as ``weight_decay``: it is moved to its new name (and the coupled one is 0)."""
    legacy = any("decoupled_weight_decay" not in group for group in state_dict["param_groups"])
    load(state_dict)
    for group in optimizer.param_groups if legacy else ():
        group["decoupled_weight_decay"], group["weight_decay"] = group["weight_decay"], 0.0
