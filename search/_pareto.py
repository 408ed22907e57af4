"""Pareto sets and hypervolume over Optuna trials, using Optuna's own code.

Optuna exposes these only privately; they come through :mod:`search._optuna_private`, the one module that
touches Optuna's private API (pinned optuna>=5,<6; tests/search/test_pareto.py checks the results against
hand-computed cases).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from frontier.search._optuna_private import compute_hypervolume, is_pareto_front, pareto_front_trials

METRICS_ATTR = "frontier.metrics"
ERROR_ATTR = "frontier.error"
BASELINE_ATTR = "frontier.baseline"


def is_feasible(trial: FrozenTrial) -> bool:
    return all(v <= 0.0 for v in trial.constraints.values())


def pareto_trials(trials: Sequence[FrozenTrial], directions: Sequence[Any]) -> list[FrozenTrial]:
    """Complete, feasible, non-dominated trials, in trial-number order."""
    dirs = [_direction(d) for d in directions]
    front = pareto_front_trials(list(trials), dirs, consider_constraint=True)
    return sorted(front, key=lambda t: t.number)


def _direction(d: Any) -> optuna.study.StudyDirection:
    if isinstance(d, optuna.study.StudyDirection):
        return d
    return (
        optuna.study.StudyDirection.MAXIMIZE
        if str(d).lower() == "maximize"
        else (optuna.study.StudyDirection.MINIMIZE)
    )


def to_loss(values: np.ndarray, directions: Sequence[Any]) -> np.ndarray:
    """Flip maximised objectives so that every column is minimised."""
    signs = np.array(
        [-1.0 if _direction(d) == optuna.study.StudyDirection.MAXIMIZE else 1.0 for d in directions]
    )
    return np.asarray(values, dtype=float) * signs


def pareto_mask(loss: np.ndarray) -> np.ndarray:
    """Boolean mask of the non-dominated rows of a minimisation matrix (duplicates all kept)."""
    loss = np.asarray(loss, dtype=float)
    if len(loss) == 0:
        return np.zeros(0, dtype=bool)
    return is_pareto_front(loss, assume_unique_lexsorted=False)


def hypervolume(loss: np.ndarray, reference: np.ndarray) -> float:
    """Hypervolume dominated by the rows of ``loss`` (minimised) and bounded by ``reference``."""
    loss = np.asarray(loss, dtype=float)
    reference = np.asarray(reference, dtype=float)
    if len(loss) == 0:
        return 0.0
    inside = loss[np.all(loss < reference, axis=1)]
    if len(inside) == 0:
        return 0.0
    front = inside[pareto_mask(inside)]
    return float(compute_hypervolume(front, reference, assume_pareto=False))


def default_reference(loss: np.ndarray) -> np.ndarray:
    """Nadir of ``loss`` pushed out by 10 % of each objective's range (or of its magnitude)."""
    worst, best = loss.max(axis=0), loss.min(axis=0)
    span = worst - best
    pad = np.where(span > 0, 0.1 * span, np.maximum(0.1 * np.abs(worst), 1e-9))
    return worst + pad


# the study attribute holding the reference point fixed once from the first feasible trials
REFERENCE_ATTR = "frontier.hv_reference"


def reference_point(
    spec: Any, loss: np.ndarray, stored: Sequence[float] | None, *, min_rows: int = 1
) -> np.ndarray | None:
    """The study's hypervolume reference point, in loss space (every column minimised): the spec's
    ``objectives[].reference`` when all are given, else the one stored on the study (``REFERENCE_ATTR``),
    else :func:`default_reference` of ``loss`` (None with fewer than ``min_rows`` rows)."""
    if all(o.reference is not None for o in spec.objectives):
        return to_loss(np.array([[o.reference for o in spec.objectives]]), spec.directions)[0]
    if stored is not None:
        return np.asarray(stored, dtype=float)
    if len(loss) < min_rows:
        return None
    return default_reference(np.asarray(loss, dtype=float))


def study_hypervolume(spec: Any, rows: Sequence[Any], stored: Sequence[float] | None) -> float | None:
    """Hypervolume of the feasible complete trial rows (:class:`~search.TrialRow`) with the study's
    reference point (:func:`reference_point`, the one MLflow logging uses); None without such a trial."""
    values = [
        [r.values[o.name] for o in spec.objectives] for r in rows if r.state == "complete" and r.feasible
    ]
    if not values:
        return None
    loss = to_loss(np.asarray(values, dtype=float), spec.directions)
    ref = reference_point(spec, loss, stored)
    return None if ref is None else hypervolume(loss, ref)


def finished(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    return [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)]


def trial_metrics(trial: FrozenTrial) -> dict[str, float]:
    metrics = trial.user_attrs.get(METRICS_ATTR) or {}
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and math.isfinite(v)}
