"""The :class:`Dataset` container shared by every data source."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

from landscape.errors import LandscapeError

TASKS = ("classification", "regression")
LOSSES = ("cross_entropy", "mse", "sum_squares")


@dataclass
class Dataset:
    """Train and test tensors plus what the training loop needs to know about them.

    ``loss`` is the default training loss: ``cross_entropy`` (classification, mean over samples),
    ``mse`` (mean over samples and output entries, as ``torch.nn.MSELoss``) or ``sum_squares``
    (mean over samples of the summed squared residuals, so that a residual model r(w) gives exactly
    f(w) = ||r(w)||^2, as in least-squares test problems). ``meta`` holds problem facts such as the
    known minimiser or the spectrum of a quadratic.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    task: str = "classification"
    num_classes: int | None = None
    loss: str = "cross_entropy"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise LandscapeError(f"data set {self.name!r}: task must be one of {', '.join(TASKS)}")
        if self.loss not in LOSSES:
            raise LandscapeError(f"data set {self.name!r}: loss must be one of {', '.join(LOSSES)}")
        for split, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
                raise LandscapeError(f"data set {self.name!r}: {split} inputs and targets must be tensors")
            if x.shape[0] != y.shape[0]:
                raise LandscapeError(f"data set {self.name!r}: {split} has {x.shape[0]} inputs "
                                     f"but {y.shape[0]} targets")
            if x.shape[0] == 0:
                raise LandscapeError(f"data set {self.name!r}: {split} split is empty")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise LandscapeError(f"data set {self.name!r}: train inputs have shape "
                                 f"{tuple(self.x_train.shape[1:])} but test inputs "
                                 f"{tuple(self.x_test.shape[1:])}")
        if self.task == "classification":
            if self.y_train.dtype not in (torch.int64, torch.int32, torch.uint8, torch.int16, torch.int8):
                raise LandscapeError(f"data set {self.name!r}: classification targets must be integers")
            self.y_train = self.y_train.long()
            self.y_test = self.y_test.long()
            if self.num_classes is None:
                self.num_classes = int(max(self.y_train.max(), self.y_test.max()).item()) + 1
            if int(min(self.y_train.min(), self.y_test.min())) < 0:
                raise LandscapeError(f"data set {self.name!r}: class labels must be >= 0")
        elif self.y_train.ndim == 1:
            self.y_train = self.y_train[:, None]
            self.y_test = self.y_test[:, None]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input sample."""
        return tuple(self.x_train.shape[1:])

    @property
    def output_dim(self) -> int:
        """Number of model outputs the data needs (classes, or regression target size)."""
        if self.task == "classification":
            return int(self.num_classes)
        return int(torch.tensor(self.y_train.shape[1:]).prod().item()) if self.y_train.ndim > 1 else 1

    @property
    def num_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def num_test(self) -> int:
        return int(self.x_test.shape[0])

    def to(self, device: torch.device | str) -> "Dataset":
        """A copy with all tensors on ``device``."""
        return replace(self, x_train=self.x_train.to(device), y_train=self.y_train.to(device),
                       x_test=self.x_test.to(device), y_test=self.y_test.to(device))

    def with_float_dtype(self, dtype: torch.dtype) -> "Dataset":
        """A copy whose floating tensors (inputs, regression targets) have ``dtype`` (the model's)."""
        def cast(t: torch.Tensor) -> torch.Tensor:
            return t.to(dtype) if t.is_floating_point() and t.dtype != dtype else t

        return replace(self, x_train=cast(self.x_train), y_train=cast(self.y_train), x_test=cast(self.x_test),
                       y_test=cast(self.y_test))

    def nbytes(self) -> int:
        return sum(t.element_size() * t.nelement()
                   for t in (self.x_train, self.y_train, self.x_test, self.y_test))

    def subset(self, samples: int, seed: int = 0) -> "Dataset":
        """A fixed, seeded subset of ``samples`` training points (the test set is kept whole)."""
        if samples <= 0:
            raise LandscapeError(f"--samples must be positive, got {samples}")
        if samples > self.num_train:
            raise LandscapeError(f"--samples {samples} exceeds the {self.num_train} training samples "
                                 f"of {self.name!r}")
        generator = torch.Generator().manual_seed(seed)
        index = torch.randperm(self.num_train, generator=generator)[:samples].sort().values
        index = index.to(self.x_train.device)
        return replace(self, x_train=self.x_train[index], y_train=self.y_train[index])
