"""Convolutional models: ``cnn`` (CurveBall basic CNN), ``conv1d`` (MNIST-1D CNN), ``lenet``,
``vgg11`` (small VGG) and ``random-cnn`` (CurveBall appendix B.3 random architectures)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from torch import nn

from .layers import (AddChannel, batchnorm, conv, global_avgpool, maxpool, output_numel,
                     pooled_size, spatial_shape)
from .layers import activation as make_activation


def _front(input_shape: Sequence[int]) -> tuple[list[nn.Module], tuple[int, ...], int]:
    """Reshape layer (for flat sequences), the (C, *spatial) shape and the conv dimensionality."""
    shape = spatial_shape(input_shape)
    front: list[nn.Module] = [AddChannel(shape)] if len(input_shape) == 1 else []
    return front, shape, len(shape) - 1


def cnn(input_shape: Sequence[int], num_outputs: int, channels: Sequence[int] = (32, 32, 64, 64),
        kernel_size: int = 5, bn: bool = False) -> nn.Sequential:
    """The CurveBall paper's "basic CNN" (Henriques et al. 2019, footnote 5).

    5x5 convolutions with ReLU, 3x3 max-pooling with stride 2 after each of the first three, output
    channels (32, 32, 64, 64, classes); the last convolution spans the remaining spatial extent and
    acts as the classifier. ``bn=True`` adds BatchNorm after every convolution but the last.
    """
    front, shape, nd = _front(input_shape)
    layers = list(front)
    c_in, size = shape[0], list(shape[1:])
    for i, c_out in enumerate(channels):
        layers.append(conv(nd, c_in, int(c_out), kernel_size, padding=kernel_size // 2, bias=not bn))
        if bn:
            layers.append(batchnorm(nd, int(c_out)))
        layers.append(nn.ReLU())
        if i < 3 and min(size) > 1:
            layers.append(maxpool(nd, 3, 2, 1))
            size = [pooled_size(s, 3, 2, 1) for s in size]
        c_in = int(c_out)
    layers.append(conv(nd, c_in, num_outputs, tuple(size) if nd > 1 else size[0]))
    layers.append(nn.Flatten())
    return nn.Sequential(*layers)


def conv1d(input_shape: Sequence[int], num_outputs: int, channels: int = 25) -> nn.Sequential:
    """The MNIST-1D paper's CNN (Greydanus & Kobak 2020): three Conv1d layers, ReLU, linear head.

    conv(1->c, k=5, s=2, p=1), conv(c->c, k=3, s=2, p=1), conv(c->c, k=3, s=2, p=1), Linear.
    """
    shape = spatial_shape(input_shape)
    if len(shape) != 2:
        raise ValueError(f"conv1d needs sequence inputs (L,) or (C, L); got {tuple(input_shape)}")
    front = [AddChannel(shape)] if len(input_shape) == 1 else []
    features = nn.Sequential(*front,
                             nn.Conv1d(shape[0], channels, 5, stride=2, padding=1), nn.ReLU(),
                             nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
                             nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
                             nn.Flatten())
    return nn.Sequential(*features, nn.Linear(output_numel(features, input_shape), num_outputs))


def lenet(input_shape: Sequence[int], num_outputs: int, activation: str = "relu") -> nn.Sequential:
    """LeNet-5 layout (LeCun et al. 1998): conv6-pool-conv16-pool-fc120-fc84-fc.

    Both 5x5 convolutions use 'same' padding and the 2x2 pools round up, so any input of at least
    4 pixels per side fits (8x8 digits included).
    """
    front, shape, nd = _front(input_shape)
    pool = (nn.MaxPool1d if nd == 1 else nn.MaxPool2d)(2, 2, ceil_mode=True)
    pool2 = (nn.MaxPool1d if nd == 1 else nn.MaxPool2d)(2, 2, ceil_mode=True)
    features = nn.Sequential(*front, conv(nd, shape[0], 6, 5, padding=2), make_activation(activation), pool,
                             conv(nd, 6, 16, 5, padding=2), make_activation(activation), pool2, nn.Flatten())
    n = output_numel(features, input_shape)
    return nn.Sequential(*features, nn.Linear(n, 120), make_activation(activation), nn.Linear(120, 84),
                         make_activation(activation), nn.Linear(84, num_outputs))


VGG11 = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


def vgg11(input_shape: Sequence[int], num_outputs: int, width: float = 0.125, bn: bool = True) -> nn.Sequential:
    """VGG-11 (Simonyan & Zisserman 2015, configuration A) with channels scaled by ``width``.

    The default width 1/8 (8-64 channels) gives a CPU-sized model; width 1 is the original.
    Pools are skipped once the spatial size reaches 1; a global average pool feeds the classifier.
    """
    front, shape, nd = _front(input_shape)
    layers = list(front)
    c_in, size = shape[0], list(shape[1:])
    for item in VGG11:
        if item == "M":
            if min(size) > 1:
                layers.append(maxpool(nd, 2, 2))
                size = [s // 2 for s in size]
            continue
        c_out = max(1, int(round(item * width)))
        layers.append(conv(nd, c_in, c_out, 3, padding=1, bias=not bn))
        if bn:
            layers.append(batchnorm(nd, c_out))
        layers.append(nn.ReLU())
        c_in = c_out
    layers += [global_avgpool(nd), nn.Flatten(), nn.Linear(c_in, num_outputs)]
    return nn.Sequential(*layers)


def random_cnn_layout(seed: int, min_layers: int = 3, max_layers: int = 10, min_channels: int = 32,
                      max_channels: int = 256) -> list[dict]:
    """The layer list of a random architecture (CurveBall appendix B.3), a pure function of ``seed``.

    Depth ~ U{min_layers..max_layers}; channels ~ 2^U{log2 min..log2 max}; each layer but the last
    is followed by a max-pool with probability 1/2.
    """
    if not (1 <= min_layers <= max_layers):
        raise ValueError("need 1 <= min_layers <= max_layers")
    lo, hi = int(np.log2(min_channels)), int(np.log2(max_channels))
    if 2 ** lo != min_channels or 2 ** hi != max_channels or lo > hi:
        raise ValueError("min_channels and max_channels must be powers of two with min <= max")
    rng = np.random.default_rng(seed)
    depth = int(rng.integers(min_layers, max_layers + 1))
    return [{"channels": int(2 ** rng.integers(lo, hi + 1)), "pool": bool(rng.random() < 0.5)}
            for _ in range(depth)]


def random_cnn(input_shape: Sequence[int], num_outputs: int, seed: int = 0, min_layers: int = 3,
               max_layers: int = 10, min_channels: int = 32, max_channels: int = 256,
               channel_scale: float = 1.0) -> nn.Sequential:
    """Random CNN of the CurveBall paper (appendix B.3), fixed by ``seed``.

    3x3 convolutions; after each but the last: ReLU, BatchNorm and (with probability 1/2) a 3x3
    max-pool with stride 2. The last convolution outputs the classes and is globally averaged.
    ``channel_scale`` shrinks all widths for CPU-scale experiments.
    """
    layout = random_cnn_layout(seed, min_layers, max_layers, min_channels, max_channels)
    front, shape, nd = _front(input_shape)
    layers = list(front)
    c_in, size = shape[0], list(shape[1:])
    for i, layer in enumerate(layout):
        last = i == len(layout) - 1
        c_out = num_outputs if last else max(1, int(round(layer["channels"] * channel_scale)))
        layers.append(conv(nd, c_in, c_out, 3, padding=1))
        if not last:
            layers += [nn.ReLU(), batchnorm(nd, c_out)]
            if layer["pool"] and min(size) > 1:
                layers.append(maxpool(nd, 3, 2, 1))
                size = [pooled_size(s, 3, 2, 1) for s in size]
        c_in = c_out
    layers += [global_avgpool(nd), nn.Flatten()]
    return nn.Sequential(*layers)
