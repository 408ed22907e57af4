"""Evaluators by name (``evaluator.kind`` in a spec)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any, TypeVar

from frontier.evaluators._base import Evaluator
from frontier.spaces import SpecError, StudySpec
from frontier.spaces._registry import Registry

if TYPE_CHECKING:
    from frontier.evaluators.latency import MeasurementLane

EVALUATORS: Registry[type[Evaluator]] = Registry(
    "evaluator",
    builtins=(
        "frontier.evaluators._digits",
        "frontier.evaluators._hf_causal_lm",
        "frontier.evaluators._hf_embedding",
        "frontier.evaluators._hf_moe",
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


def for_spec(spec: StudySpec, *, setup: bool = True, lane: MeasurementLane | None = None) -> Evaluator:
    """The spec's evaluator, taken through its documented lifecycle once (:class:`Evaluator`).

    ``make`` (``evaluator.kind`` and ``options``) -> :meth:`~Evaluator.check_params` (the space's parameter
    names) -> :meth:`~Evaluator.bind_spec` (the whole spec) -> :meth:`~Evaluator.ensure_setup` (models and
    data; skipped with ``setup=False``, for a spec check or a driver that only asks about candidates). Every
    caller that needs a study's evaluator (the engine's spec check, warm starts, workers, latency
    calibration and re-measurement, ``frontier apply``) goes through here, so no step is skipped.

    Args:
        spec: the study spec.
        setup: run ``ensure_setup`` last.
        lane: the node's measurement lane: setup holds it shared, as training work does, so loading a model
            never runs while another worker on the node times a candidate.

    Raises:
        SpecError: ``evaluator.kind`` is not registered, ``evaluator.options`` are invalid, or the space does
            not suit the evaluator (``check_params``/``bind_spec`` raised ValueError), naming the field.
    """
    try:
        cls = get_evaluator_class(spec.evaluator.kind)
    except ValueError:
        raise SpecError(
            f"evaluator.kind: Unknown evaluator '{spec.evaluator.kind}'. Available: {available_evaluators()}"
        ) from None
    evaluator = cls.from_spec(spec.evaluator.options)
    try:
        evaluator.check_params({p.name for p in spec.params})
        evaluator.bind_spec(spec)
    except ValueError as exc:
        raise SpecError(f"space: {exc}") from None
    if setup:
        with lane.training() if lane is not None else nullcontext():
            evaluator.ensure_setup()
    return evaluator
