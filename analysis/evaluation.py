"""Loss and accuracy of checkpoints on the train and test sets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from landscape.losses import evaluate

from .contract import Progress, Result, attrs_field, jsonable, require
from .loading import LoadedCheckpoint


@dataclass
class EvaluationSpec:
    """Mean loss (and accuracy for classification) on the train and test sets, ``batch_size`` samples
    per forward pass."""

    batch_size: int = 2048

    def validate(self) -> None:
        require(self.batch_size > 0, self, "batch_size", f"must be positive, got {self.batch_size}")


@dataclass
class EvaluationResult(Result):
    """Train/test loss, accuracy (classification), generalization gap (train acc - test acc) and loss gap
    (test loss - train loss) of one checkpoint, in eval mode."""

    kind: ClassVar[str] = "evaluation"
    checkpoint: int
    train_loss: float
    test_loss: float
    train_samples: int
    loss_gap: float
    train_acc: float | None = None
    test_acc: float | None = None
    generalization_gap: float | None = None
    attrs: dict[str, Any] = attrs_field()

    def to_json(self) -> dict[str, Any]:
        return {"checkpoint": self.checkpoint, "evaluation": jsonable(self.to_tree())}

    def line(self) -> str:
        text = f"train loss {self.train_loss:.4g}, test loss {self.test_loss:.4g}"
        if self.train_acc is not None:
            text += f", train acc {100 * self.train_acc:.2f}%, test acc {100 * self.test_acc:.2f}%"
        return text

    def summary(self) -> str:
        return f"checkpoint {self.checkpoint}:\n  {self.line()}"


def evaluate_checkpoint(loaded: LoadedCheckpoint, spec: EvaluationSpec | None = None,
                        progress: Progress | None = None, *, local: bool = False) -> EvaluationResult:
    """Mean train/test loss (and accuracy for classification) of a loaded checkpoint, in eval mode
    (under torchrun each rank evaluates its block of the samples and the sums are all-reduced, unless
    ``local``: this process alone)."""
    spec = spec or EvaluationSpec()
    spec.validate()
    ds = loaded.dataset
    train = evaluate(loaded.model, ds.x_train, ds.y_train, loaded.loss, spec.batch_size, shard=not local)
    test = evaluate(loaded.model, ds.x_test, ds.y_test, loaded.loss, spec.batch_size, shard=not local)
    accuracy = {}
    if "acc" in train:
        accuracy = dict(train_acc=train["acc"], test_acc=test["acc"], generalization_gap=train["acc"] - test["acc"])
    return EvaluationResult(checkpoint=loaded.step, train_loss=train["loss"], test_loss=test["loss"],
                            train_samples=ds.num_train, loss_gap=test["loss"] - train["loss"], **accuracy,
                            attrs=loaded.subset)
