"""Option parsers for plug-in authors: turn a CLI string or a typed value into a checked one.

Options reach a Strategy or Scorer as keyword arguments, either from the command line
(`--strategy-opt lr=0.02` gives the text "0.02") or from Python (`lr=0.02`). These helpers accept
both and raise `InputError` with one line that names the option and says what to give instead, so
bad input ends in a clear message, never a traceback:

    from voicesearch.options import opt_number, opt_choice

    class MyWalk(Strategy):
        def __init__(self, *args, step: Any = 0.5, mode: Any = "fast", **kwargs):
            super().__init__(*args, **kwargs)
            self.step = opt_number(step, "step", float, low=0.0)
            self.mode = opt_choice(mode, "mode", ("fast", "careful"))
"""
from __future__ import annotations

from typing import Any

from .errors import InputError

__all__ = ["opt_bool", "opt_choice", "opt_list", "opt_number"]


def opt_bool(value: Any, name: str) -> bool:
    """A boolean from `True`/`False` or the text 1/0, true/false, yes/no, on/off (any case)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise InputError(f"option {name}={value!r} is not a boolean; use true or false")


def opt_number(value: Any, name: str, cast: type = float, low: float | None = None, high: float | None = None) -> Any:
    """A number (`cast=int` for a whole number: "3" and 3.0 pass, 2.5 does not) within [low, high] where given."""
    try:
        number = float(value)
        if cast is int:
            if number != int(number):
                raise ValueError
            number = int(number)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"option {name}={value!r} is not {'an integer' if cast is int else 'a number'}") from None
    if (low is not None and number < low) or (high is not None and number > high):
        span = f"≥ {low}" if high is None else f"between {low} and {high}"
        raise InputError(f"option {name}={value!r} is out of range; use a value {span}")
    return number


def opt_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    """One of `choices` (lower-case), matched case-insensitively."""
    text = str(value).strip().lower()
    if text not in choices:
        raise InputError(f"option {name}={value!r} is not one of: {', '.join(choices)}")
    return text


def opt_list(value: Any) -> list[str]:
    """`"a,b"`, `["a", "b"]` or a single number -> list of strings (empty entries of a text dropped)."""
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value]
    return [part.strip() for part in str(value).split(",") if part.strip()]
