"""CIFAR ResNets (He et al. 2016, Sec. 4.2): ``resnet20``, ``resnet32``, ``resnet56``.

Three stages of n basic blocks (n = 3, 5, 9) with 16, 32, 64 channels (times ``width``);
stride-2 downsampling at the start of stages 2 and 3 with a 1x1 projection shortcut.
``bn=False`` and ``residual=False`` give the variants without BatchNorm / without skip connections
studied in the PyHessian paper. Convolutions are 1-D for sequence data and 2-D for images.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .layers import AddChannel, batchnorm, conv, global_avgpool, spatial_shape


class BasicBlock(nn.Module):
    def __init__(self, nd: int, c_in: int, c_out: int, stride: int, bn: bool, residual: bool):
        super().__init__()
        self.residual = residual
        self.conv1 = conv(nd, c_in, c_out, 3, stride=stride, padding=1, bias=not bn)
        self.bn1 = batchnorm(nd, c_out) if bn else nn.Identity()
        self.conv2 = conv(nd, c_out, c_out, 3, padding=1, bias=not bn)
        self.bn2 = batchnorm(nd, c_out) if bn else nn.Identity()
        self.shortcut: nn.Module = nn.Identity()
        if residual and (stride != 1 or c_in != c_out):
            self.shortcut = nn.Sequential(conv(nd, c_in, c_out, 1, stride=stride, bias=not bn),
                                          batchnorm(nd, c_out) if bn else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.residual:
            out = out + self.shortcut(x)
        return torch.relu(out)


class ResNet(nn.Module):
    def __init__(self, input_shape: Sequence[int], num_outputs: int, blocks: int, width: float = 1.0,
                 bn: bool = True, residual: bool = True):
        super().__init__()
        shape = spatial_shape(input_shape)
        nd = len(shape) - 1
        widths = [max(1, int(round(c * width))) for c in (16, 32, 64)]
        self.front = AddChannel(shape) if len(input_shape) == 1 else nn.Identity()
        self.stem = conv(nd, shape[0], widths[0], 3, padding=1, bias=not bn)
        self.stem_bn = batchnorm(nd, widths[0]) if bn else nn.Identity()
        stages, c_in = [], widths[0]
        for s, c_out in enumerate(widths):
            for b in range(blocks):
                stages.append(BasicBlock(nd, c_in, c_out, 2 if (s > 0 and b == 0) else 1, bn, residual))
                c_in = c_out
        self.blocks = nn.Sequential(*stages)
        self.pool = global_avgpool(nd)
        self.fc = nn.Linear(c_in, num_outputs)
        for m in self.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem_bn(self.stem(self.front(x))))
        x = self.pool(self.blocks(x))
        return self.fc(torch.flatten(x, 1))


def resnet20(input_shape: Sequence[int], num_outputs: int, width: float = 1.0, bn: bool = True,
             residual: bool = True) -> ResNet:
    """ResNet-20: 3 blocks per stage, 0.27 M parameters at width 1."""
    return ResNet(input_shape, num_outputs, 3, width, bn, residual)


def resnet32(input_shape: Sequence[int], num_outputs: int, width: float = 1.0, bn: bool = True,
             residual: bool = True) -> ResNet:
    """ResNet-32: 5 blocks per stage."""
    return ResNet(input_shape, num_outputs, 5, width, bn, residual)


def resnet56(input_shape: Sequence[int], num_outputs: int, width: float = 1.0, bn: bool = True,
             residual: bool = True) -> ResNet:
    """ResNet-56: 9 blocks per stage."""
    return ResNet(input_shape, num_outputs, 9, width, bn, residual)
