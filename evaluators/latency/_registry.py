"""Latency predictors by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from frontier.evaluators.latency._base import LatencyPredictor
from frontier.spaces._registry import Registry

PREDICTORS: Registry[type[LatencyPredictor]] = Registry(
    "predictor",
    builtins=(
        "frontier.evaluators.latency._device_transfer",
        "frontier.evaluators.latency._linear",
        "frontier.evaluators.latency._lookup_table",
        "frontier.evaluators.latency._regressor",
        "frontier.evaluators.latency._source_mix",
    ),
)
"""Registered latency predictor classes; the built-in ones are in the modules named here."""
P = TypeVar("P", bound=type[LatencyPredictor])


def register_predictor(name: str) -> Callable[[P], P]:
    """Class decorator: make a :class:`LatencyPredictor` available to :func:`get_predictor` as ``name``.

    Raises:
        ValueError: another class already holds ``name``.
    """

    def deco(cls: P) -> P:
        PREDICTORS.add(name, cls)
        cls.name = name
        return cls

    return deco


def available_predictors() -> list[str]:
    return PREDICTORS.available()


def get_predictor_class(name: str) -> type[LatencyPredictor]:
    return PREDICTORS.get(name)


def get_predictor(name: str, **kwargs: Any) -> LatencyPredictor:
    """Create the predictor registered as ``name`` with ``kwargs`` (transfer predictors need ``configs``
    and ``source_latency_ms``).

    Raises:
        ValueError: no predictor has that name.
    """
    return get_predictor_class(name)(**kwargs)
