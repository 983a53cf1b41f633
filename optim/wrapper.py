"""Base class for optimizers that wrap another one (Lookahead, iterate averaging, SAM).

The wrapper *shares* the inner optimizer's parameter-group dictionaries, so a schedule or LR
scheduler that sets ``group["lr"]`` on the wrapper reaches the inner optimizer, and the wrapper's
own hyper-parameters (k, alpha, rho, ...) live in the same groups. ``state_dict()`` nests the inner
optimizer's state under ``"inner"``; ``load_state_dict`` restores both and re-shares the groups.
"""

from __future__ import annotations

from typing import Any

import torch


class OptimizerWrapper(torch.optim.Optimizer):
    """Base of optimizers around another one (Lookahead, IterateAveraging, SAM): shares the inner
    optimizer's parameter groups (module docstring) and nests its state under ``"inner"``.

    Args:
        inner: the wrapped ``torch.optim.Optimizer``.
        **defaults: the wrapper's own hyper-parameters, added to the shared groups.
    """

    def __init__(self, inner: torch.optim.Optimizer, **defaults: Any):
        if not isinstance(inner, torch.optim.Optimizer):
            raise TypeError("inner must be a torch.optim.Optimizer")
        self.inner = inner
        super().__init__(inner.param_groups, defaults)  # the same group dicts, defaults added to them

    def _scalars(self) -> dict:
        """Wrapper counters, held in the state of the first parameter (state keys must be parameters)."""
        return self.state[self.param_groups[0]["params"][0]]

    def state_dict(self) -> dict[str, Any]:
        own = super().state_dict()
        return {"state": own["state"], "param_groups": own["param_groups"], "inner": self.inner.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        if "inner" not in state_dict:
            raise ValueError("not the state of a wrapped optimizer (no 'inner' entry)")
        self.inner.load_state_dict(state_dict.pop("inner"))
        inner_groups = self.inner.param_groups  # as the inner optimizer restored them (older names upgraded)
        super().load_state_dict(state_dict)
        for group, inner in zip(self.param_groups, inner_groups):
            group.update({k: v for k, v in inner.items() if k != "params"})
        self.inner.param_groups = self.param_groups  # share the (restored) groups again
