"""Training losses, as mean over samples (the objective every optimizer and analysis sees).

- ``cross_entropy``: (1/N) sum_n -log softmax(f(x_n))_{y_n}
- ``mse``: mean over samples and output entries of (f(x) - y)^2, as ``torch.nn.MSELoss``
- ``sum_squares``: (1/N) sum_n ||f(x_n) - y_n||^2, so a residual model r gives ||r||^2 exactly
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from . import distributed
from .errors import LandscapeError


def _match(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if output.shape != target.shape and output.numel() == target.numel():
        return output.reshape(target.shape)
    return output


def cross_entropy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(output, target)


def mse(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # written out rather than F.mse_loss, whose double derivative fails under forward-mode AD
    # ("ZeroTensors are immutable" in jvp(grad(.)) on torch 2.13)
    return (_match(output, target) - target).pow(2).mean()


def sum_squares(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    residual = _match(output, target) - target
    return residual.reshape(residual.shape[0], -1).pow(2).sum(dim=1).mean()


def per_sample(name: str, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample losses l_n whose mean over the batch is the loss ``name``."""
    if name == "cross_entropy":
        return F.cross_entropy(output, target, reduction="none")
    residual = _match(output, target) - target
    squares = residual.reshape(residual.shape[0], -1).pow(2)
    return squares.mean(dim=1) if name == "mse" else squares.sum(dim=1)


def sample_targets(name: str, output: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Targets drawn from the model's predictive distribution, for Monte-Carlo Fisher products.

    The loss is read as a negative log-likelihood: cross-entropy -> Categorical(softmax(f));
    ``mse`` over D outputs -> N(f, D/2 I); ``sum_squares`` -> N(f, I/2). These variances make
    E[grad l grad l^T] equal the loss Hessian in the outputs, so the Fisher equals the GGN in expectation.
    """
    out = output.detach()
    if name == "cross_entropy":
        probs = torch.softmax(out.double(), dim=-1).cpu()
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1).to(out.device)
    dim = out[0].numel()
    var = dim / 2.0 if name == "mse" else 0.5
    noise = torch.randn(out.shape, generator=generator, dtype=out.dtype).to(out.device)
    return out + math.sqrt(var) * noise


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "cross_entropy": cross_entropy, "mse": mse, "sum_squares": sum_squares,
}


def get_loss(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    try:
        return LOSSES[name]
    except KeyError:
        raise LandscapeError(f"unknown loss {name!r}; choose from {', '.join(LOSSES)}") from None


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str,
             batch_size: int = 2048, shard: bool = False) -> dict[str, float]:
    """Mean loss (and accuracy for cross-entropy) over all of (x, y), in batches, in eval mode.

    Batch means are weighted by batch size, so the result is the exact mean over the samples.
    ``shard``: under torchrun each rank evaluates a contiguous block of the batches (the batches are
    those of one process) and the sums are all-reduced (every rank returns the same numbers).
    """
    fn = get_loss(loss)
    was_training = model.training
    model.eval()
    n = x.shape[0]
    first, last = distributed.block((n + batch_size - 1) // batch_size) if shard else (0, None)
    total, correct = 0.0, 0
    try:
        for lo in range(0, n, batch_size)[first:last]:
            xb, yb = x[lo:lo + batch_size], y[lo:lo + batch_size]
            out = model(xb)
            total += float(fn(out, yb)) * xb.shape[0]
            if loss == "cross_entropy":
                correct += int((out.argmax(dim=1) == yb).sum())
    finally:
        model.train(was_training)
    if shard and distributed.world_size() > 1:
        sums = distributed.all_reduce_sum(torch.tensor([total, float(correct)], dtype=torch.float64,
                                                       device=x.device))
        total, correct = float(sums[0]), int(round(float(sums[1])))
    result = {"loss": total / n}
    if loss == "cross_entropy":
        result["acc"] = correct / n
    return result
