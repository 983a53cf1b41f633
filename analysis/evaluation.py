"""Loss and accuracy of checkpoints on the train and test sets."""

from __future__ import annotations

from landscape.losses import evaluate

from .loading import LoadedCheckpoint


def evaluate_checkpoint(loaded: LoadedCheckpoint, batch_size: int = 2048) -> dict[str, float]:
    """Mean train/test loss (and accuracy for classification) of a loaded checkpoint, in eval mode
    (under torchrun each rank evaluates its block of the samples; the sums are all-reduced)."""
    ds = loaded.dataset
    train = evaluate(loaded.model, ds.x_train, ds.y_train, loaded.loss, batch_size, shard=True)
    test = evaluate(loaded.model, ds.x_test, ds.y_test, loaded.loss, batch_size, shard=True)
    out = {"train_loss": train["loss"], "test_loss": test["loss"], "train_samples": ds.num_train}
    if "acc" in train:
        out.update(train_acc=train["acc"], test_acc=test["acc"],
                   generalization_gap=train["acc"] - test["acc"])
    out["loss_gap"] = test["loss"] - train["loss"]
    return out
