"""Model registry. A model is described by a JSON-able spec ``{"name": ..., **options}`` and rebuilt
from it (never unpickled). Names: ``mlp``, ``linear``, ``linear2``, ``cnn``, ``conv1d``, ``lenet``,
``resnet20``, ``resnet32``, ``resnet56``, ``vgg11``, ``random-cnn``, ``rosenbrock``, ``beale``, or a custom
``module:factory`` / ``path/to/file.py:factory`` called as ``factory(input_shape=..., num_outputs=...,
**options)`` (the two shape arguments only where the factory accepts them).

>>> from landscape.models import build_model
>>> model = build_model({"name": "mlp", "widths": [32]}, input_shape=(40,), num_outputs=10)
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from ..errors import LandscapeError
from ..imports import is_import_spec, resolve_callable
from ..options import call_with_options
from . import conv, dense, objectives, resnet

MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": dense.mlp,
    "linear": dense.linear,
    "linear2": dense.linear2,
    "cnn": conv.cnn,
    "conv1d": conv.conv1d,
    "lenet": conv.lenet,
    "vgg11": conv.vgg11,
    "random-cnn": conv.random_cnn,
    "resnet20": resnet.resnet20,
    "resnet32": resnet.resnet32,
    "resnet56": resnet.resnet56,
    "rosenbrock": objectives.rosenbrock,
    "beale": objectives.beale,
}


def available_models() -> list[str]:
    return sorted(MODELS)


def normalize_spec(spec: str | Mapping[str, Any]) -> dict[str, Any]:
    """``"mlp"`` or ``{"name": "mlp", ...}`` -> a plain dict with a ``name`` key."""
    if isinstance(spec, str):
        return {"name": spec}
    if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
        raise LandscapeError("a model spec needs a 'name' (e.g. {\"name\": \"mlp\", \"widths\": [100, 100]})")
    return dict(spec)


def build_model(spec: str | Mapping[str, Any], input_shape: Sequence[int], num_outputs: int) -> nn.Module:
    """Instantiate the model described by ``spec`` for inputs of ``input_shape`` and ``num_outputs`` outputs."""
    spec = normalize_spec(spec)
    name = spec.pop("name")
    if name in MODELS:
        factory = MODELS[name]
    elif is_import_spec(name):
        factory = resolve_callable(name, "model factory")
    else:
        raise LandscapeError(f"unknown model {name!r}; choose from {', '.join(available_models())} "
                             "or give module:factory")
    try:
        model = call_with_options(factory, f"model {name!r}", spec, input_shape=tuple(input_shape),
                                  num_outputs=int(num_outputs))
    except LandscapeError:
        raise
    except Exception as exc:  # user factories may raise anything
        raise LandscapeError(f"building model {name!r} failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise LandscapeError(f"model factory {name!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def check_model_fits(model: nn.Module, sample: torch.Tensor, num_outputs: int, model_name: str,
                     data_name: str) -> None:
    """Run one sample through ``model`` (eval mode, no grad) and check it yields ``num_outputs`` values."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(sample[:1].to(floating_dtype(model)) if sample.is_floating_point() else sample[:1])
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LandscapeError(f"model {model_name!r} does not fit data set {data_name!r} with input shape "
                             f"{tuple(sample.shape[1:])}: {first}") from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.ndim < 1 or out.shape[0] != 1 or out[0].numel() != num_outputs:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise LandscapeError(f"model {model_name!r} gives outputs of shape {shape} but data set "
                             f"{data_name!r} needs {num_outputs} per sample")


def floating_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's first floating parameter (or buffer); float32 for a model without any."""
    for t in [*model.parameters(), *model.buffers()]:
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def has_batchnorm(model: nn.Module) -> bool:
    """Whether any submodule is a BatchNorm layer (1-D, 2-D or 3-D)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["MODELS", "available_models", "build_model", "check_model_fits", "count_parameters", "floating_dtype",
           "normalize_spec"]
