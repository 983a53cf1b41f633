"""Dimension-generic building blocks shared by the model families.

Inputs of rank 1 (L,) are treated as one-channel sequences (1, L); rank 2 (C, L) as sequences;
rank 3 (C, H, W) as images. Convolutional models pick Conv1d/Conv2d accordingly, so the same
architecture runs on MNIST-1D and on CIFAR.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

ACTIVATIONS = {
    "relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "sigmoid": nn.Sigmoid, "elu": nn.ELU,
    "softplus": nn.Softplus, "leaky_relu": nn.LeakyReLU, "silu": nn.SiLU, "identity": nn.Identity,
    "linear": nn.Identity,
}


def activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r} (choose from {', '.join(ACTIVATIONS)})") from None


def spatial_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    """(channels, *spatial) for a conv model; rank-1 inputs gain a channel axis."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 1:
        return (1,) + shape
    if len(shape) in (2, 3):
        return shape
    raise ValueError(f"convolutional models need inputs of shape (L,), (C, L) or (C, H, W); got {shape}")


def conv(ndim: int, *args, **kwargs) -> nn.Module:
    return (nn.Conv1d if ndim == 1 else nn.Conv2d)(*args, **kwargs)


def batchnorm(ndim: int, channels: int) -> nn.Module:
    return (nn.BatchNorm1d if ndim == 1 else nn.BatchNorm2d)(channels)


def maxpool(ndim: int, kernel: int, stride: int, padding: int = 0) -> nn.Module:
    return (nn.MaxPool1d if ndim == 1 else nn.MaxPool2d)(kernel, stride, padding, ceil_mode=False)


def global_avgpool(ndim: int) -> nn.Module:
    return (nn.AdaptiveAvgPool1d if ndim == 1 else nn.AdaptiveAvgPool2d)(1)


def pooled_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class AddChannel(nn.Module):
    """Reshape (N, L) to (N, 1, L) so that flat sequences feed a Conv1d."""

    def __init__(self, shape: Sequence[int]):
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)


def output_numel(module: nn.Module, input_shape: Sequence[int]) -> int:
    """Number of features per sample that ``module`` produces for ``input_shape`` (one dry run)."""
    with torch.no_grad():
        was_training = module.training
        module.eval()
        out = module(torch.zeros(1, *input_shape))
        module.train(was_training)
    return int(math.prod(out.shape[1:]))
