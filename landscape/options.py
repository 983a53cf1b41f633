"""Call registered factories with user-supplied options, turning mistakes into one-line errors."""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping

from .errors import LandscapeError


def accepted_options(fn: Callable, fixed: tuple[str, ...] = ()) -> list[str] | None:
    """Keyword options ``fn`` accepts (excluding ``fixed`` ones); ``None`` if it takes ``**kwargs``."""
    params = inspect.signature(fn).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params
            if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
            and p.name not in fixed]


def call_with_options(fn: Callable, what: str, options: Mapping[str, Any], **fixed: Any) -> Any:
    """Call ``fn(**fixed, **options)`` after checking every option name; wrap bad values as LandscapeError.

    ``fixed`` arguments are only passed where ``fn`` accepts them (user factories may ignore
    ``input_shape`` or ``num_outputs``).
    """
    allowed = accepted_options(fn, tuple(fixed))
    if allowed is not None:
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            hint = ", ".join(allowed) if allowed else "none"
            raise LandscapeError(f"{what} has no option {unknown[0]!r} (options: {hint})")
    sig = inspect.signature(fn).parameters
    takes_any = allowed is None
    passed = {k: v for k, v in fixed.items() if takes_any or k in sig}
    try:
        return fn(**passed, **dict(options))
    except LandscapeError:
        raise
    except (TypeError, ValueError) as exc:
        raise LandscapeError(f"{what}: {exc}") from exc
