"""Latency predictors by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from frontier.evaluators.latency._base import LatencyPredictor

_REGISTRY: dict[str, type[LatencyPredictor]] = {}
P = TypeVar("P", bound=type[LatencyPredictor])


def register_predictor(name: str) -> Callable[[P], P]:
    """Class decorator: make a :class:`LatencyPredictor` available to :func:`get_predictor` as ``name``."""

    def deco(cls: P) -> P:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(
                f"latency predictor '{name}' is already registered by {_REGISTRY[name].__qualname__}"
            )
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def available_predictors() -> list[str]:
    return sorted(_REGISTRY)


def get_predictor_class(name: str) -> type[LatencyPredictor]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"Unknown predictor '{name}'. Available: {available_predictors()}") from None


def get_predictor(name: str, **kwargs: Any) -> LatencyPredictor:
    """Create the predictor registered as ``name`` with ``kwargs`` (transfer predictors need ``configs``
    and ``source_latency_ms``).

    Raises:
        ValueError: no predictor has that name.
    """
    return get_predictor_class(name)(**kwargs)
