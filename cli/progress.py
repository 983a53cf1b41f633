"""The one progress display of the CLI: a bar on stderr for counted work, a line for each new stage."""

from __future__ import annotations

import contextlib
from typing import Iterator

from landscape.analysis.contract import Progress

from .common import echo_err


@contextlib.contextmanager
def progress_display(show: bool, label: str = "progress") -> Iterator[Progress | None]:
    """A :data:`~landscape.analysis.contract.Progress` callback drawing on stderr (None when not ``show``):
    ``total`` known draws a transient bar, a message without one prints a line."""
    if not show:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeRemainingColumn

    with contextlib.ExitStack() as stack:
        state: dict = {}

        def update(done: int, total: int | None, message: str = "") -> None:
            if total is None:
                if message:
                    echo_err(message)
                return
            if "bar" not in state:
                state["bar"] = stack.enter_context(Bar(TextColumn(f"[bold]{message or label}"), BarColumn(),
                                                       MofNCompleteColumn(), TimeRemainingColumn(),
                                                       console=Console(stderr=True), transient=True))
                state["task"] = state["bar"].add_task(message or label, total=total)
            state["bar"].update(state["task"], completed=done, total=total)

        yield update
