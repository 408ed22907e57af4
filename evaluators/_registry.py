"""Evaluators by name (``evaluator.kind`` in a spec)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from frontier.evaluators._base import Evaluator
from frontier.spaces._registry import Registry

EVALUATORS: Registry[type[Evaluator]] = Registry(
    "evaluator",
    builtins=(
        "frontier.evaluators._digits",
        "frontier.evaluators._hf_causal_lm",
        "frontier.evaluators._hf_embedding",
        "frontier.evaluators._lm_train",
        "frontier.evaluators._tabular",
    ),
)
"""Registered evaluator classes; the built-in ones are in the modules named here (imported on first use)."""
E = TypeVar("E", bound=type[Evaluator])


def register_evaluator(name: str) -> Callable[[E], E]:
    """Class decorator: make an :class:`Evaluator` available to specs as ``evaluator.kind: NAME``.

    Raises:
        ValueError: another class already holds ``name``.
    """

    def deco(cls: E) -> E:
        EVALUATORS.add(name, cls)
        cls.name = name
        return cls

    return deco


def available_evaluators() -> list[str]:
    return EVALUATORS.available()


def get_evaluator_class(name: str) -> type[Evaluator]:
    """The class registered as ``name``.

    Raises:
        ValueError: ``Unknown evaluator 'x'. Available: [...]``.
    """
    return EVALUATORS.get(name)


def make_evaluator(kind: str, options: Mapping[str, Any]) -> Evaluator:
    return get_evaluator_class(kind).from_spec(options)
