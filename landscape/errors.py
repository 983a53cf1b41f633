"""User-facing errors.

Every mistake a user can make (unknown name, bad number, missing or corrupt file, shape mismatch,
diverged run) raises :class:`LandscapeError` with a one-line message. The CLI prints it as
``Error: <message>`` and exits with status 1 and no traceback; library users catch it like any
other exception.
"""

from __future__ import annotations


class LandscapeError(Exception):
    """A problem the user can fix; its message is a single line meant for humans."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class TrainingDiverged(LandscapeError):
    """The training loss became non-finite; the last good checkpoint is kept."""

    def __init__(self, step: int, lr: float):
        self.step = step
        self.lr = lr
        super().__init__(f"training diverged at step {step} (lr={lr:g}); "
                         "the last good checkpoint is kept, lower the learning rate")
