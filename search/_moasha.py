"""MO-ASHA: multi-objective asynchronous successive halving, as a Ray Tune trial scheduler.

The promotion rule is the pure function :func:`moasha_decide` (numpy only, testable without Ray); the
scheduler :class:`MOASHAScheduler` does the bookkeeping (brackets, rungs, records) around it, following the
structure of Ray's ``AsyncHyperBandScheduler``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from ray.tune.schedulers.trial_scheduler import FIFOScheduler, TrialScheduler

if TYPE_CHECKING:
    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.experiment import Trial

logger = logging.getLogger(__name__)

MODES = ("min", "max")
_STATE_VERSION = 1


# Non-dominated sorting is written here rather than taken from Optuna's private
# ``optuna.study._multi_objective._fast_non_domination_rank``: that helper is not public and has changed
# signature between releases, and the Ray adapter should not break on an Optuna upgrade (STYLE.md habit 12).
# Rungs hold tens to a few hundred trials, so the O(n^2 m) vectorised peel below is fast enough; a test
# checks it against Optuna's on random data.
def non_dominated_ranks(points: np.ndarray) -> np.ndarray:
    """Pareto front number of each point (0 = non-dominated), minimisation convention.

    Fast non-dominated sorting as in NSGA-II (Deb et al., "A fast and elitist multiobjective genetic
    algorithm: NSGA-II", IEEE TEVC 2002). ``p`` dominates ``q`` when ``p <= q`` in every objective and
    ``p < q`` in at least one; equal points share a front.

    Args:
        points: objective values, shape ``(n, m)``; lower is better.

    Returns:
        Integer ranks, shape ``(n,)``.
    """
    pts = np.asarray(points, dtype=float)
    n = pts.shape[0]
    ranks = np.full(n, -1, dtype=int)
    if n == 0:
        return ranks
    le = np.all(pts[:, None, :] <= pts[None, :, :], axis=-1)
    lt = np.any(pts[:, None, :] < pts[None, :, :], axis=-1)
    dominates = le & lt  # dominates[i, j]: i dominates j
    remaining = np.ones(n, dtype=bool)
    front = 0
    while remaining.any():
        dominated = (dominates & remaining[:, None]).any(axis=0)
        current = remaining & ~dominated
        ranks[current] = front
        remaining &= ~current
        front += 1
    return ranks


def crowding_distance(points: np.ndarray) -> np.ndarray:
    """NSGA-II crowding distance of each point within one front (larger = more isolated).

    Per objective, the two boundary points get ``inf`` and interior points the gap between their
    neighbours divided by the objective's range; an objective with zero or non-finite range adds nothing
    to interior points.

    Args:
        points: objective values of one front, shape ``(n, m)``.
    """
    pts = np.asarray(points, dtype=float)
    n, m = pts.shape
    distance = np.zeros(n)
    if n <= 2:
        distance[:] = np.inf
        return distance
    for j in range(m):
        order = np.argsort(pts[:, j], kind="stable")
        col = pts[order, j]
        distance[order[0]] = distance[order[-1]] = np.inf
        span = col[-1] - col[0]
        if not np.isfinite(span) or span <= 0:
            continue
        distance[order[1:-1]] += (col[2:] - col[:-2]) / span
    return distance


def moasha_decide(rung_records: np.ndarray, candidate: np.ndarray, reduction_factor: float) -> bool:
    """MO-ASHA's promotion rule at one rung: should ``candidate`` continue? Minimisation convention.

    Schmucker, Donini, Zafar, Salinas and Archambeau, "Multi-objective Asynchronous Successive Halving",
    arXiv 2106.12639, 2021: ASHA (Li et al., MLSys 2020) whose "top 1/eta" is taken by multi-objective
    ranking. Here the ranking is NSGA-II's (the paper's ``NSGA-II`` variant): Pareto front number first,
    then, within a front, larger crowding distance first. The candidate continues iff fewer than
    ``floor(n / reduction_factor)`` of the ``n = len(rung_records) + 1`` points (itself included) are
    strictly ahead of it. So it wins ties, as in Ray's ASHA (a trial equal to the cutoff continues); in
    particular a boundary point of the front that reaches the quota (infinite crowding distance) continues,
    as NSGA-II always keeps boundary solutions. Judging each point of a full rung in turn therefore keeps at
    least ``floor(n / reduction_factor)`` of them, more only through such ties. While the rung holds fewer
    than ``reduction_factor`` other records the candidate always continues (asynchronous promotion). NaN
    counts as the worst value of its objective.

    Args:
        rung_records: objective vectors already recorded at the rung (other trials), shape ``(n, m)``.
        candidate: the arriving trial's objective vector, shape ``(m,)``.
        reduction_factor: ASHA's eta, ``> 1``.

    Returns:
        True to continue the trial, False to stop it.
    """
    if not reduction_factor > 1:
        raise ValueError(f"The 'reduction_factor' must be > 1. Got {reduction_factor!r} instead.")
    cand = np.asarray(candidate, dtype=float).reshape(-1)
    records = np.asarray(rung_records, dtype=float)
    if records.size == 0:
        records = records.reshape(0, cand.size)
    if records.ndim != 2 or records.shape[1] != cand.size:
        raise ValueError(
            f"The 'rung_records' must have shape (n, {cand.size}) to match the candidate's {cand.size} "
            f"objectives. Got shape {records.shape} instead."
        )
    if len(records) < reduction_factor:
        return True
    points = np.vstack([cand[None, :], records])  # the candidate is row 0
    points = np.where(np.isnan(points), np.inf, points)
    quota = max(1, math.floor(len(points) / reduction_factor))
    ranks = non_dominated_ranks(points)
    crowd = np.zeros(len(points))
    for front in np.unique(ranks[ranks <= ranks[0]]):
        members = np.flatnonzero(ranks == front)
        crowd[members] = crowding_distance(points[members])
    # np.lexsort's primary key is the last: front, then crowding (descending), then the row, so the
    # candidate (row 0) comes first among the points it ties with.
    order = np.lexsort((np.arange(len(points)), -crowd, ranks))
    position = int(np.flatnonzero(order == 0)[0])
    return position < quota


def rung_milestones(
    grace_period: float, max_t: float, reduction_factor: float, bracket: int = 0
) -> list[float]:
    """Rung levels ``grace_period * rf**(k + bracket)`` for k = 0, 1, ... that do not exceed ``max_t``."""
    out: list[float] = []
    k = bracket
    while True:
        level = grace_period * reduction_factor**k
        if level > max_t * (1 + 1e-9):
            return out
        out.append(level)
        k += 1


@dataclass
class _Rung:
    milestone: float
    records: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class _Bracket:
    rungs: list[_Rung]  # ascending milestones

    def on_result(self, trial_id: str, t: float, values: list[float], reduction_factor: float) -> bool | None:
        """Judge at the highest rung ``t`` has reached, once per rung; None when there is nothing to judge."""
        for rung in reversed(self.rungs):
            if t < rung.milestone:
                continue
            if trial_id in rung.records:
                return None
            records = np.asarray(list(rung.records.values()), dtype=float).reshape(-1, len(values))
            keep = moasha_decide(records, np.asarray(values), reduction_factor)
            rung.records[trial_id] = values
            return keep
        return None


class MOASHAScheduler(FIFOScheduler):
    """Multi-objective asynchronous successive halving (MO-ASHA) for Ray Tune.

    Schmucker, Donini, Zafar, Salinas and Archambeau, "Multi-objective Asynchronous Successive Halving",
    arXiv 2106.12639, 2021; built on ASHA (Li et al., "A System for Massively Parallel Hyperparameter
    Tuning", MLSys 2020). Rungs sit at ``grace_period * reduction_factor**k`` (``<= max_t``) of
    ``time_attr``. When a trial first reaches a rung its objective vector is recorded there, and it continues
    iff it is in the top ``1 / reduction_factor`` of that rung by non-dominated sorting with crowding
    distance ties (:func:`moasha_decide`); until the rung holds ``reduction_factor`` other records it
    continues. With several brackets each new trial joins one at random, as in Ray's ASHA. A result that
    lacks ``time_attr`` or any objective is not judged (the trial continues).

    Tune's single ``metric``/``mode`` cannot express several objectives, so pass them here and leave
    ``TuneConfig(metric=..., mode=...)`` unset, or set to one of these objectives with its own mode (or to
    the same lists, as for a multi-objective ``OptunaSearch``). The ``metric`` property stays ``None`` so
    Tune's strict metric check does not reject intermediate results that carry only some objectives.

    Args:
        metrics: objective names in the reported results, e.g. ``["val_loss", "latency_ms"]``.
        modes: ``"min"`` or ``"max"`` for each objective.
        time_attr: monotonically increasing progress key (``"training_iteration"``, a step count...).
        grace_period: first rung; no trial stops before it.
        max_t: last rung; trials are stopped there when ``stop_last_trials``.
        reduction_factor: eta; a rung keeps ``1 / reduction_factor`` of its trials.
        brackets: number of ASHA brackets (bracket ``s`` starts at ``grace_period * rf**s``).
        stop_last_trials: stop trials once they reach ``max_t``.
        seed: seeds the bracket draw.

    Example:
        >>> sched = MOASHAScheduler(["loss", "latency_ms"], ["min", "min"], max_t=27, grace_period=1)
        >>> tuner = tune.Tuner(train, tune_config=tune.TuneConfig(scheduler=sched))  # doctest: +SKIP
    """

    def __init__(
        self,
        metrics: Sequence[str],
        modes: Sequence[str],
        *,
        time_attr: str = "training_iteration",
        grace_period: float = 1,
        max_t: float = 100,
        reduction_factor: float = 3,
        brackets: int = 1,
        stop_last_trials: bool = True,
        seed: int | None = None,
    ) -> None:
        owner = type(self).__name__
        self._metrics, self._modes = _check_objectives(owner, metrics, modes)
        if not isinstance(time_attr, str):
            raise TypeError(f"The 'time_attr' parameter of {owner} must be a str. Got {time_attr!r} instead.")
        if not time_attr:
            raise ValueError(
                f"The 'time_attr' parameter of {owner} must name a result key, e.g. 'training_iteration'. "
                "Got '' instead."
            )
        for name, value in (
            ("grace_period", grace_period),
            ("max_t", max_t),
            ("reduction_factor", reduction_factor),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise TypeError(
                    f"The '{name}' parameter of {owner} must be a finite number. Got {value!r} instead."
                )
        if grace_period <= 0:
            raise ValueError(
                f"The 'grace_period' parameter of {owner} must be > 0. Got {grace_period} instead."
            )
        if max_t < grace_period:
            raise ValueError(
                f"The 'max_t' parameter of {owner} must be >= grace_period. Got max_t={max_t} with "
                f"grace_period={grace_period} instead."
            )
        if reduction_factor <= 1:
            raise ValueError(
                f"The 'reduction_factor' parameter of {owner} must be > 1. Got {reduction_factor} instead."
            )
        max_brackets = len(rung_milestones(grace_period, max_t, reduction_factor))
        if isinstance(brackets, bool) or not isinstance(brackets, int) or not 1 <= brackets <= max_brackets:
            raise ValueError(
                f"The 'brackets' parameter of {owner} must be an int in [1, {max_brackets}] (bracket s "
                f"starts at grace_period * reduction_factor**s <= max_t). Got {brackets!r} instead."
            )
        super().__init__()
        self._time_attr = time_attr
        self._grace_period = grace_period
        self._max_t = max_t
        self._reduction_factor = reduction_factor
        self._stop_last_trials = bool(stop_last_trials)
        self._signs = [1.0 if mode == "min" else -1.0 for mode in self._modes]
        self._brackets = [
            _Bracket([_Rung(m) for m in rung_milestones(grace_period, max_t, reduction_factor, s)])
            for s in range(brackets)
        ]
        self._trial_bracket: dict[str, int] = {}
        self._rng = np.random.default_rng(seed)
        self._num_stopped = 0
        self._num_judged = 0

    @property
    def metrics(self) -> tuple[str, ...]:
        return self._metrics

    @property
    def modes(self) -> tuple[str, ...]:
        return self._modes

    def set_search_properties(
        self, metric: str | Sequence[str] | None, mode: str | Sequence[str] | None, **spec: Any
    ) -> bool:
        # Objectives are fixed at construction; accept only what agrees with them, so Tune raises its
        # "scheduler already has metric/mode" error on a conflict instead of silently ignoring it.
        if metric is None:
            return mode is None
        names, dirs = _as_tuple(metric), None if mode is None else _as_tuple(mode)
        if names == self._metrics:
            return dirs is None or dirs == self._modes
        if len(names) == 1 and names[0] in self._metrics:
            return dirs is None or dirs == (self._modes[self._metrics.index(names[0])],)
        return False

    def on_trial_add(self, tune_controller: TuneController | None, trial: Trial) -> None:
        self._assign(trial.trial_id)

    def _assign(self, trial_id: str) -> int:
        sizes = np.array([len(b.rungs) for b in self._brackets], dtype=float)
        probs = np.exp(sizes - sizes.max())
        index = self._trial_bracket[trial_id] = int(
            self._rng.choice(len(self._brackets), p=probs / probs.sum())
        )
        return index

    def replay(self, trial_id: str, results: Iterable[Mapping[str, Any]]) -> None:
        """Record a finished trial's intermediate results at the rungs they reached, deciding nothing.

        How a resumed study rebuilds its rungs from its storage (the trials' stored steps, in trial order):
        replaying every trial this scheduler saw, in the order it saw them, gives the rungs (and bracket
        draws) an uninterrupted run has at that point, so later trials are judged as they would have been.
        Each result is read as :meth:`on_trial_result` reads it (``time_attr`` and the objectives).
        """
        bracket = self._brackets[self._assign(trial_id)]
        for result in results:
            parsed = self._parse(result)
            if parsed is not None and parsed[0] < self._max_t:  # as live: a trial at max_t is not judged
                bracket.on_result(trial_id, parsed[0], parsed[1], self._reduction_factor)
        self._trial_bracket.pop(trial_id, None)

    def on_trial_result(
        self, tune_controller: TuneController | None, trial: Trial, result: dict[str, Any]
    ) -> str:
        parsed = self._parse(result)
        if parsed is None:
            return TrialScheduler.CONTINUE
        t, values = parsed
        if t >= self._max_t:
            # A trial at the full budget has nothing left to save: stop it (stop_last_trials) or let it
            # finish and return its final result, but never judge it as if it were still a candidate.
            return TrialScheduler.STOP if self._stop_last_trials else TrialScheduler.CONTINUE
        if trial.trial_id not in self._trial_bracket:
            self.on_trial_add(tune_controller, trial)  # a trial Tune did not add first
        bracket = self._brackets[self._trial_bracket[trial.trial_id]]
        keep = bracket.on_result(trial.trial_id, t, values, self._reduction_factor)
        if keep is None:
            return TrialScheduler.CONTINUE
        self._num_judged += 1
        if keep:
            return TrialScheduler.CONTINUE
        self._num_stopped += 1
        return TrialScheduler.STOP

    def on_trial_complete(
        self, tune_controller: TuneController | None, trial: Trial, result: dict[str, Any]
    ) -> None:
        # Like ASHA: record a final result that reached a new rung, without deciding anything more.
        parsed = self._parse(result) if result else None
        index = self._trial_bracket.pop(trial.trial_id, None)
        if parsed is not None and index is not None:
            self._brackets[index].on_result(trial.trial_id, parsed[0], parsed[1], self._reduction_factor)

    def on_trial_remove(self, tune_controller: TuneController | None, trial: Trial) -> None:
        self._trial_bracket.pop(trial.trial_id, None)

    def _parse(self, result: Mapping[str, Any]) -> tuple[float, list[float]] | None:
        try:
            t = float(result[self._time_attr])
            values = [
                sign * float(result[name]) for sign, name in zip(self._signs, self._metrics, strict=True)
            ]
        except (KeyError, TypeError, ValueError):
            return None
        return t, values

    def debug_string(self) -> str:
        lines = [
            f"Using MO-ASHA: objectives={dict(zip(self._metrics, self._modes, strict=True))}, "
            f"num_judged={self._num_judged}, num_stopped={self._num_stopped}"
        ]
        for s, bracket in enumerate(self._brackets):
            rungs = " | ".join(f"{_fmt(r.milestone)}: {len(r.records)} recorded" for r in bracket.rungs)
            lines.append(f"Bracket {s}: {rungs}")
        return "\n".join(lines)

    def get_state(self) -> dict[str, Any]:
        """All mutable state plus the settings it belongs to, as a JSON-compatible dict."""
        return {
            "version": _STATE_VERSION,
            "settings": self._settings(),
            "brackets": [
                [{"milestone": r.milestone, "records": dict(r.records)} for r in b.rungs]
                for b in self._brackets
            ],
            "trial_bracket": dict(self._trial_bracket),
            "rng": self._rng.bit_generator.state,
            "num_stopped": self._num_stopped,
            "num_judged": self._num_judged,
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`get_state` returned, into a scheduler built with the same settings."""
        if state.get("version") != _STATE_VERSION:
            raise ValueError(
                f"MOASHAScheduler state has version {state.get('version')!r}; this code reads version "
                f"{_STATE_VERSION}. Re-run the study or restore with a matching Frontier version."
            )
        saved = {k: tuple(v) if isinstance(v, list) else v for k, v in state["settings"].items()}
        if saved != self._settings():
            diff = {k: (saved.get(k), v) for k, v in self._settings().items() if saved.get(k) != v}
            raise ValueError(
                f"MOASHAScheduler state was saved with other settings; (saved, current) per field: {diff}. "
                "Construct the scheduler with the saved settings before restoring."
            )
        self._brackets = [
            _Bracket(
                [
                    _Rung(float(r["milestone"]), {k: list(map(float, v)) for k, v in r["records"].items()})
                    for r in b
                ]
            )
            for b in state["brackets"]
        ]
        self._trial_bracket = {str(k): int(v) for k, v in state["trial_bracket"].items()}
        self._rng.bit_generator.state = state["rng"]
        self._num_stopped = int(state["num_stopped"])
        self._num_judged = int(state["num_judged"])

    def _settings(self) -> dict[str, Any]:
        return {
            "metrics": self._metrics,
            "modes": self._modes,
            "time_attr": self._time_attr,
            "grace_period": self._grace_period,
            "max_t": self._max_t,
            "reduction_factor": self._reduction_factor,
            "brackets": len(self._brackets),
            "stop_last_trials": self._stop_last_trials,
        }


def _check_objectives(owner: str, metrics: object, modes: object) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if isinstance(metrics, str) or not isinstance(metrics, Sequence):
        raise TypeError(
            f"The 'metrics' parameter of {owner} must be a list of result keys, e.g. "
            f"['val_loss', 'latency_ms']. Got {metrics!r} instead."
        )
    if isinstance(modes, str) or not isinstance(modes, Sequence):
        raise TypeError(
            f"The 'modes' parameter of {owner} must be a list of 'min'/'max', one per metric. "
            f"Got {modes!r} instead."
        )
    names, dirs = tuple(metrics), tuple(modes)
    if not names or not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
        raise ValueError(
            f"The 'metrics' parameter of {owner} must be a non-empty list of distinct non-empty str. "
            f"Got {list(names)!r} instead."
        )
    if len(dirs) != len(names) or any(d not in MODES for d in dirs):
        raise ValueError(
            f"The 'modes' parameter of {owner} must give one of {list(MODES)} per metric "
            f"({len(names)} metrics). Got {list(dirs)!r} instead."
        )
    return names, dirs


def _as_tuple(value: str | Sequence[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"
