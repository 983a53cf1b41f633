"""Derivatives the installed PyTorch does not have: recognise the error and name the layer behind it.

Curvature products differentiate a model twice, or in forward mode; a layer built on a kernel without
such a rule (a fused custom op, an extension) fails deep inside autograd with a traceback that names an
``aten::`` kernel, not the user's layer. :func:`missing_derivative_error` turns it into a one-line
:class:`~landscape.errors.LandscapeError` naming the layer that was running when the forward pass failed
(found by running the failing call once more under module hooks), or the kernel when it failed in the
backward pass.
"""

from __future__ import annotations

import re
from typing import Callable

import torch

from .errors import LandscapeError

_MISSING = re.compile(r"derivative|forward ad|forward-mode|batching rule|vmap|not implemented|does not support",
                      re.IGNORECASE)


def is_missing_derivative(exc: BaseException) -> bool:
    """True for the errors PyTorch raises when an op lacks a (forward-mode, double or batched) derivative."""
    return isinstance(exc, (NotImplementedError, RuntimeError)) and bool(_MISSING.search(str(exc)))


def running_layer(model: torch.nn.Module, call: Callable[[], object]) -> str | None:
    """``call()`` under forward hooks on every module of ``model``: the innermost module (name and type)
    running when it raised, or None if it did not raise inside a module's forward."""
    names = {module: name for name, module in model.named_modules()}
    stack: list[torch.nn.Module] = []
    handles = []
    for module in names:
        handles.append(module.register_forward_pre_hook(lambda m, args: stack.append(m)))
        handles.append(module.register_forward_hook(lambda m, args, out: stack.pop()))
    try:
        call()
    except Exception:
        inner = [m for m in stack if names.get(m)]  # the model itself is not a layer
        if inner:
            return f"{names[inner[-1]]} ({type(inner[-1]).__name__})"
        return None
    finally:
        for handle in handles:
            handle.remove()
    return None


def missing_derivative_error(exc: BaseException, what: str, model: torch.nn.Module,
                             rerun: Callable[[], object]) -> LandscapeError:
    """The one-line error for ``exc``, raised while computing ``what`` (e.g. "GGN products")."""
    detail = " ".join(str(exc).split())
    detail = detail[:200] + ("..." if len(detail) > 200 else "")
    layer = running_layer(model, rerun)
    where = f"layer {layer}" if layer else "a layer of the model (in the backward pass)"
    return LandscapeError(f"{what} need derivatives that PyTorch {torch.__version__.split('+')[0]} does not have "
                          f"for {where}: {detail}")
