"""Parameter rules, declared once, with the one error format used across ``kernels``.

"The 'bits' parameter of WeightOnlyQuantConfig must be an int in [2, 8]. Got 9 instead."
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any


def param_error(owner: str, name: str, rule: str, got: Any, *, fix: str = "") -> ValueError:
    """A ``ValueError`` naming the parameter, its owner, the rule and what was received."""
    msg = f"The '{name}' parameter of {owner} must be {rule}. Got {got!r} instead."
    return ValueError(f"{msg} {fix}" if fix else msg)


def check_int(owner: str, name: str, value: object, *, low: int, high: int | None = None) -> int:
    """Return ``value`` if it is an int in ``[low, high]`` (bool is not an int here)."""
    rule = f"an int in [{low}, {high}]" if high is not None else f"an int >= {low}"
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"The '{name}' parameter of {owner} must be {rule}. Got {value!r} instead.")
    if value < low or (high is not None and value > high):
        raise param_error(owner, name, rule, value)
    return value


def check_ratio(
    owner: str, name: str, value: object, *, allow_zero: bool = True, allow_one: bool = False
) -> float:
    """Return ``value`` as a float if it is a fraction in the stated (half-)open unit interval."""
    rule = f"a float in {'[' if allow_zero else '('}0, 1{']' if allow_one else ')'}"
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(f"The '{name}' parameter of {owner} must be {rule}. Got {value!r} instead.")
    v = float(value)
    lo_ok = v >= 0.0 if allow_zero else v > 0.0
    hi_ok = v <= 1.0 if allow_one else v < 1.0
    if not (lo_ok and hi_ok):
        raise param_error(owner, name, rule, value)
    return v


def check_choice(owner: str, name: str, value: object, choices: Collection[object]) -> Any:
    """Return ``value`` if it is one of ``choices``."""
    if value not in choices:
        raise param_error(owner, name, f"one of {sorted(choices, key=str)}", value)
    return value


def check_bool(owner: str, name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"The '{name}' parameter of {owner} must be a bool. Got {value!r} instead.")
    return value
