"""Fully connected models: ``mlp``, ``linear`` and the two-layer linear network ``linear2``."""

from __future__ import annotations

import math
from typing import Sequence

from torch import nn

from .layers import activation as make_activation


def mlp(input_shape: Sequence[int], num_outputs: int, widths: Sequence[int] = (100, 100),
        activation: str = "relu", bias: bool = True,
        batchnorm: bool = False, dropout: float = 0.0) -> nn.Sequential:
    """Multi-layer perceptron: flatten, then [Linear, (BatchNorm1d), act, (Dropout)] per hidden width, Linear.

    The default (two hidden layers of 100 ReLU units) is the MNIST-1D paper's MLP.
    """
    layers: list[nn.Module] = [nn.Flatten()]
    fan_in = int(math.prod(input_shape))
    for width in widths:
        width = int(width)
        if width <= 0:
            raise ValueError("widths must be positive")
        layers.append(nn.Linear(fan_in, width, bias=bias))
        if batchnorm:
            layers.append(nn.BatchNorm1d(width))
        layers.append(make_activation(activation))
        if dropout:
            layers.append(nn.Dropout(dropout))
        fan_in = width
    layers.append(nn.Linear(fan_in, num_outputs, bias=bias))
    return nn.Sequential(*layers)


def linear(input_shape: Sequence[int], num_outputs: int, bias: bool = True) -> nn.Sequential:
    """A single affine layer (logistic / linear regression)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(int(math.prod(input_shape)), num_outputs, bias=bias))


def linear2(input_shape: Sequence[int], num_outputs: int, hidden: int | None = None,
            bias: bool = False) -> nn.Sequential:
    """Two-layer linear network x -> W2 W1 x (Rahimi & Recht 2017; CurveBall paper Sec. 4).

    The product W2 W1 is a linear map, but the factorisation makes the loss non-convex with
    degenerate, ill-conditioned curvature. ``hidden`` defaults to the input dimension.
    """
    fan_in = int(math.prod(input_shape))
    hidden = int(hidden) if hidden else fan_in
    return nn.Sequential(nn.Flatten(), nn.Linear(fan_in, hidden, bias=bias),
                         nn.Linear(hidden, num_outputs, bias=bias))
