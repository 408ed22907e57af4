from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from frontier.evaluators._base import Evaluator

_REGISTRY: dict[str, type[Evaluator]] = {}
E = TypeVar("E", bound=type[Evaluator])


def register_evaluator(name: str) -> Callable[[E], E]:
    """Class decorator: make an :class:`Evaluator` available to specs as ``evaluator.kind: NAME``."""

    def deco(cls: E) -> E:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"evaluator '{name}' is already registered by {_REGISTRY[name].__qualname__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def available_evaluators() -> list[str]:
    return sorted(_REGISTRY)


def get_evaluator_class(name: str) -> type[Evaluator]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"Unknown evaluator '{name}'. Available: {available_evaluators()}") from None


def make_evaluator(kind: str, options: Mapping[str, Any]) -> Evaluator:
    return get_evaluator_class(kind).from_spec(options)
