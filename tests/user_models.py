"""Models given to the CLI as file.py:function (as a user would): a layer without forward-mode
derivatives and a TransformerEncoderLayer model."""

import torch


class Square(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x * g


class SquareLayer(torch.nn.Module):
    def forward(self, x):
        return Square.apply(x)


class Encoder(torch.nn.Module):
    def __init__(self, num_outputs):
        super().__init__()
        self.embed = torch.nn.Linear(4, 8)
        self.layer = torch.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
        self.head = torch.nn.Linear(8, num_outputs)

    def forward(self, x):
        return self.head(self.layer(self.embed(x.reshape(x.shape[0], 10, 4))).mean(1))


def square(input_shape, num_outputs):
    return torch.nn.Sequential(torch.nn.Linear(40, 8), SquareLayer(), torch.nn.Linear(8, num_outputs))


def encoder(input_shape, num_outputs):
    return Encoder(num_outputs)
