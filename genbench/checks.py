"""Value checks shared by every config validator: one test and one wording per kind of value.

Python's ``bool`` is a subclass of ``int``, so ``isinstance(True, int)`` holds: a check written as
``isinstance(v, int) and v >= 1`` lets ``model.latent_dim=true`` through as 1. Every check here
refuses booleans where a count or a number is expected, and NaN where a number must be positive.
"""

from __future__ import annotations

from typing import Any


def is_int(v: Any, lo: int | None = None) -> bool:
    """``v`` is an integer (not a bool), and ``>= lo`` when ``lo`` is given."""
    return isinstance(v, int) and not isinstance(v, bool) and (lo is None or v >= lo)


def is_number(v: Any) -> bool:
    """``v`` is an int or a float (not a bool)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def integer_errors(prefix: str, *checks: tuple[str, Any, int]) -> list[str]:
    """``key=value: must be an integer >= lo`` for each ``(key, value, lo)`` that is not."""
    return [f"{prefix}{key}={v!r}: must be an integer >= {lo}" for key, v, lo in checks if not is_int(v, lo)]


def positive_errors(prefix: str, *checks: tuple[str, Any]) -> list[str]:
    """``key=value: must be a number > 0`` for each ``(key, value)`` that is not (NaN is not)."""
    return [f"{prefix}{key}={v!r}: must be a number > 0" for key, v in checks if not (is_number(v) and v > 0)]


def nonnegative_errors(prefix: str, *checks: tuple[str, Any]) -> list[str]:
    """``key=value: must be a number >= 0`` for each ``(key, value)`` that is not (NaN is not)."""
    return [f"{prefix}{key}={v!r}: must be a number >= 0" for key, v in checks if not (is_number(v) and v >= 0)]
