"""Pareto sets and hypervolume over Optuna trials, using Optuna's own code.

Optuna exposes these only privately; they come through :mod:`search._optuna_private`, the one module that
touches Optuna's private API (pinned optuna>=5,<6; tests/search/test_pareto.py checks the results against
hand-computed cases).
"""

from __future__ import annotations

import copy
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
# set on a merged trial (mean_trials): how many evaluations of the configuration its values average
N_EVALUATIONS_ATTR = "frontier.n_evaluations"


def is_feasible(trial: FrozenTrial) -> bool:
    return all(v <= 0.0 for v in trial.constraints.values())


def pareto_trials(trials: Sequence[FrozenTrial], directions: Sequence[Any]) -> list[FrozenTrial]:
    """Complete, feasible, non-dominated configurations, in trial-number order.

    A configuration evaluated more than once (a re-evaluation on another seed, or a sampler proposing it
    again) competes with the mean of its evaluations, as one trial (see :func:`mean_trials`).
    """
    dirs = [_direction(d) for d in directions]
    front = pareto_front_trials(mean_trials(trials), dirs, consider_constraint=True)
    return sorted(front, key=lambda t: t.number)


def _configuration(trial: FrozenTrial) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, repr(v)) for k, v in trial.params.items()))


def mean_trials(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """``trials`` with each configuration's complete evaluations merged into one trial.

    The merged trial keeps the number (and parameters) of the configuration's first complete evaluation;
    its objective values, constraint values and metrics are the means over all complete evaluations, and
    ``user_attrs[N_EVALUATIONS_ATTR]`` says how many there were (configurations evaluated once are returned
    as they are, without the attribute). Other trials pass through unchanged.
    """
    groups: dict[tuple[tuple[str, str], ...], list[FrozenTrial]] = {}
    out: list[FrozenTrial] = []
    for t in trials:
        if t.state != TrialState.COMPLETE or not t.values or not t.params:  # no configuration to match
            out.append(t)
            continue
        group = groups.setdefault(_configuration(t), [])
        if not group:
            out.append(t)
        group.append(t)
    merged = {g[0].number: _merge(g) for g in groups.values() if len(g) > 1}
    return [merged.get(t.number, t) for t in out]


def _merge(group: list[FrozenTrial]) -> FrozenTrial:
    # deepcopy: set_constraint and set_user_attr write into dicts a shallow copy would share.
    out = copy.deepcopy(group[0])
    out.values = [float(v) for v in np.mean([t.values for t in group], axis=0)]
    for name in group[0].constraints:
        # set_constraint keeps a value already set: drop the copied one (under the key it writes) first.
        out.system_attrs.pop(_constraint_key(name), None)
        out.set_constraint(name, float(np.mean([t.constraints.get(name, math.nan) for t in group])))
    per = [trial_metrics(t) for t in group]
    keys = set().union(*per)
    metrics = {k: float(np.mean([m[k] for m in per if k in m])) for k in keys}
    out.set_user_attr(METRICS_ATTR, metrics)
    out.set_user_attr(N_EVALUATIONS_ATTR, len(group))
    return out


def _constraint_key(name: str) -> str:
    """The system attribute ``FrozenTrial.set_constraint(name, ...)`` writes (learnt through the API)."""
    probe = optuna.trial.create_trial(state=TrialState.COMPLETE, values=[0.0])
    probe.set_constraint(name, 0.0)
    return next(iter(probe.system_attrs))


def n_evaluations(trial: FrozenTrial) -> int:
    """How many evaluations a (possibly merged, :func:`mean_trials`) trial stands for."""
    return int(trial.user_attrs.get(N_EVALUATIONS_ATTR, 1))


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
