"""Samplers behind ``auto``: TPE that spends no evaluation on a configuration it has already tried.

On the finite spaces Frontier searches (integer, ordinal and categorical parameters: architectures,
bit-widths, recorded tables), TPE (Bergstra et al., NeurIPS 2011; multivariate and grouped as in Falkner
et al., ICML 2018 and Optuna's ``group=True``; multi-objective as MOTPE, Ozaki et al., GECCO 2020 / JAIR
2022) keeps proposing configurations it has already evaluated once its density model sharpens: the
acquisition maximiser picks among ``n_ei_candidates`` draws from the "good" density, and the best of those
is often a point already in the history. Each such proposal costs a full evaluation and teaches nothing on
a deterministic objective. :class:`UniqueTPESampler` keeps TPE's model and acquisition unchanged and takes
the best-scoring candidate that is *new*, drawing more candidates when all are known.

This module touches TPE's private ``_sample`` step (``optuna.samplers._tpe``), pinned by optuna>=5,<6; an
Optuna upgrade that changes it fails ``tests/search/test_auto.py``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution
from optuna.samplers._tpe.sampler import _split_trials, default_gamma, default_gamma_multiobjective
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from frontier.search._pareto import hypervolume, is_feasible, pareto_mask, to_loss

_EVALUATED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)


class UniqueTPESampler(optuna.samplers.TPESampler):
    """:class:`optuna.samplers.TPESampler` whose relative proposals avoid configurations already tried.

    A proposal for a sub-space counts as a repeat only when some earlier trial (finished, failed or
    running) has exactly those parameters and no others, i.e. the same complete configuration; conditional
    sub-spaces are therefore left alone. When every one of the ``n_ei_candidates`` draws is a repeat, up to
    ``redraws`` further batches are drawn; if the space is exhausted the best repeat is returned (the
    search must go on).

    Two additions for noisy objectives and cell-structured spaces (evidence in docs/samplers.md):

    * TPE's split into good and bad trials sees one entry per configuration, its objectives averaged over
      its evaluations (a lucky draw re-measured does not count twice).
    * ``surrogate``: once ``surrogate_after`` trials are complete, and where every parameter is
      categorical or an integer, TPE's candidates are re-ranked by the hypervolume that a ridge regression
      of each objective on the one-hot choices predicts they add to the predicted front (an additive model
      sharing strength across a cell's edges: each choice's effect is estimated from every trial that
      made it). Candidates that add nothing keep TPE's order behind those that do.
    * ``reevaluate_every``: re-measure the front configuration with the fewest evaluations every that many
      trials (off by default: under seed-mean scoring it spent budget without finding better
      configurations; it stops by itself once two repeats came back identical).

    Args:
        redraws: extra candidate batches to draw when a whole batch repeats earlier trials.
        reevaluate_every: every this many trials, re-measure a front configuration (None: never).
        max_evaluations: at most this many evaluations per configuration when re-measuring.
        surrogate: re-rank TPE's candidates with the additive ridge model.
        surrogate_after: complete trials before the surrogate is used.
        surrogate_ridge: the ridge penalty (objectives standardised).
        surrogate_every: use the surrogate on every this-many-th trial only (1: every trial).
        **kwargs: passed to :class:`optuna.samplers.TPESampler`.
    """

    def __init__(
        self,
        *,
        redraws: int = 4,
        reevaluate_every: int | None = None,
        max_evaluations: int = 3,
        surrogate: bool = False,
        surrogate_after: int = 20,
        surrogate_ridge: float = 1.0,
        surrogate_every: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if redraws < 0:
            raise ValueError(f"redraws must be >= 0, but got {redraws}")
        if reevaluate_every is not None and reevaluate_every < 2:
            raise ValueError(f"reevaluate_every must be None (never) or >= 2, but got {reevaluate_every}")
        if max_evaluations < 1:
            raise ValueError(f"max_evaluations must be >= 1, but got {max_evaluations}")
        if surrogate_ridge <= 0:
            raise ValueError(f"surrogate_ridge must be > 0, but got {surrogate_ridge}")
        if surrogate_every < 1:
            raise ValueError(f"surrogate_every must be >= 1, but got {surrogate_every}")
        self._redraws = redraws
        self._reevaluate_every = reevaluate_every
        self._max_evaluations = max_evaluations
        self._surrogate = surrogate
        self._surrogate_after = surrogate_after
        self._surrogate_ridge = surrogate_ridge
        self._surrogate_every = surrogate_every

    def _sample(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        # Mirrors TPESampler._sample (optuna 5.0) up to the choice of the candidate.
        states = [TrialState.COMPLETE, TrialState.PRUNED]
        if self._constant_liar:
            states.append(TrialState.RUNNING)
        trials = study._get_trials(deepcopy=False, states=tuple(states), use_cache=not self._constant_liar)
        if self._constant_liar:
            trials = [t for t in trials if t.number != trial.number]
        if self._gamma is None:
            self._gamma = default_gamma if len(study.directions) <= 1 else default_gamma_multiobjective
        groups = _groups(trials, search_space)
        if self._reevaluate_every is not None:
            again = self._reevaluation(study, trial, groups, search_space)
            if again is not None:
                return again
        # One entry per configuration, its objectives averaged over its evaluations: a lucky draw of a
        # noisy metric must not count as a separate "good" observation each time it is re-measured.
        trials = [_mean_trial(g) for g in groups.values()]
        n = sum(t.state != TrialState.RUNNING for t in trials)
        below, above = _split_trials(study, trials, self._gamma(n))
        mpe_below = self._build_parzen_estimator(study, search_space, below, handle_below=True)
        mpe_above = self._build_parzen_estimator(study, search_space, above, handle_below=False)
        seen = _seen(study, trial, search_space)

        surrogate = (
            _Additive.fit(study, trials, search_space, ridge=self._surrogate_ridge)
            if self._surrogate and n >= self._surrogate_after and trial.number % self._surrogate_every == 0
            else None
        )
        best: dict[str, Any] | None = None
        for _ in range(1 + self._redraws):
            samples = mpe_below.sample(self._rng.rng, self._n_ei_candidates)
            acq = self._compute_acquisition_func(samples, mpe_below, mpe_above)
            order = np.argsort(-acq, kind="stable")
            if surrogate is not None:
                order = surrogate.rank(samples, order)
            if best is None:
                best = {k: v[order[0]] for k, v in samples.items()}
            names = list(search_space)
            for i in order:
                point = {k: samples[k][i] for k in names}
                if _key(_snap(point, search_space), search_space) not in seen:
                    best = point
                    break
            else:
                continue
            break
        assert best is not None
        return {k: d.to_external_repr(best[k]) for k, d in search_space.items()}

    def _reevaluation(
        self,
        study: Study,
        trial: FrozenTrial,
        groups: dict[tuple[Any, ...], list[FrozenTrial]],
        search_space: dict[str, BaseDistribution],
    ) -> dict[str, Any] | None:
        """A front configuration to measure once more, or ``None`` to propose a new one.

        Every ``reevaluate_every``-th trial after the start-up trials re-measures the non-dominated
        configuration (by mean) with the fewest evaluations, up to ``max_evaluations`` each. Once two
        configurations were measured twice with identical results the objective is taken as
        deterministic and nothing is re-measured again.
        """
        every = self._reevaluate_every
        names = set(search_space)
        done = [g for g in groups.values() if g[0].state == TrialState.COMPLETE and set(g[0].params) == names]
        if every is None or sum(len(g) for g in done) < self._n_startup_trials or trial.number % every:
            return None
        repeated = [g for g in done if len(g) > 1]
        if len(repeated) >= 2 and all(t.values == g[0].values for g in repeated for t in g):
            return None
        ok = [g for g in done if all(is_feasible(t) for t in g)]
        if not ok:
            return None
        loss = to_loss(np.asarray([np.mean([t.values for t in g], axis=0) for g in ok]), study.directions)
        front = [
            g for g, on in zip(ok, pareto_mask(loss), strict=True) if on and len(g) < self._max_evaluations
        ]
        if not front:
            return None
        pick = min(front, key=lambda g: (len(g), g[0].number))
        return {k: pick[0].params[k] for k in search_space}


def _snap(internal: dict[str, Any], search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
    """The internal values the trial will actually store (integers rounded to their grid)."""
    return {k: d.to_internal_repr(d.to_external_repr(internal[k])) for k, d in search_space.items()}


def _key(internal: dict[str, Any], search_space: dict[str, BaseDistribution]) -> tuple[float, ...]:
    # Internal representations are floats (categorical: the index); round away float noise from the
    # Parzen estimator's discretisation so equal grid points compare equal.
    return tuple(round(float(internal[k]), 9) for k in search_space)


def _seen(
    study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
) -> set[tuple[float, ...]]:
    names = set(search_space)
    out: set[tuple[float, ...]] = set()
    for t in study._get_trials(deepcopy=False, states=_EVALUATED, use_cache=False):
        if t.number == trial.number or set(t.params) != names:
            continue
        try:
            internal = {k: t.distributions[k].to_internal_repr(t.params[k]) for k in names}
        except (KeyError, ValueError):
            continue
        out.add(_key(internal, search_space))
    return out


def _groups(
    trials: list[FrozenTrial], search_space: dict[str, BaseDistribution]
) -> dict[tuple[Any, ...], list[FrozenTrial]]:
    """Trials by configuration (same parameters, same values); trials outside ``search_space`` stay alone."""
    names = set(search_space)
    out: dict[tuple[Any, ...], list[FrozenTrial]] = {}
    for t in trials:
        if t.state == TrialState.COMPLETE and set(t.params) == names:
            key: tuple[Any, ...] = tuple(sorted(t.params.items(), key=lambda kv: kv[0]))
        else:
            key = ("#trial", t.number)
        out.setdefault(key, []).append(t)
    return out


def _mean_trial(group: list[FrozenTrial]) -> FrozenTrial:
    if len(group) == 1:
        return group[0]
    first = copy.copy(group[0])
    first.values = [float(v) for v in np.mean([t.values for t in group], axis=0)]
    return first


class _Additive:
    """Ridge regression of every objective (and constraint) on one-hot / scaled parameters.

    A model that shares strength across a cell's structure: each choice's effect is estimated from every
    trial that made it, so one noisy observation moves it little. Candidates are ranked by the
    hypervolume their *predicted* objectives add to the *predicted* front of the trials so far (both
    denoised the same way); candidates that add nothing keep TPE's order behind those that do.
    """

    def __init__(
        self,
        encode: Callable[[dict[str, np.ndarray]], np.ndarray],
        coef: np.ndarray,
        predicted: np.ndarray,
        n_obj: int,
    ) -> None:
        # ``predicted``: the model's losses (then constraint values) for the trials so far, which set the
        # normalisation and the front a candidate must add to.
        self.encode, self.coef, self.n_obj = encode, coef, n_obj
        ok = np.all(predicted[:, n_obj:] <= 0.0, axis=1)
        obj = predicted[:, :n_obj]
        self.low = obj.min(axis=0)
        span = obj.max(axis=0) - self.low
        self.span = np.where(span > 0, span, 1.0)
        norm = (obj - self.low) / self.span
        self.reference = np.full(n_obj, 1.1)
        front = norm[ok]
        self.front = front[pareto_mask(front)] if len(front) else front
        self.base = hypervolume(self.front, self.reference) if len(self.front) else 0.0

    @classmethod
    def fit(
        cls,
        study: Study,
        trials: list[FrozenTrial],
        search_space: dict[str, BaseDistribution],
        *,
        ridge: float = 1.0,
    ) -> _Additive | None:
        names = sorted(search_space)
        done = [t for t in trials if t.state == TrialState.COMPLETE and set(t.params) >= set(names)]
        if len(done) < 5 or not all(
            isinstance(search_space[k], CategoricalDistribution | IntDistribution) for k in names
        ):
            return None

        def encode(internal: dict[str, np.ndarray]) -> np.ndarray:
            cols = [np.ones(len(internal[names[0]]))]
            for k in names:
                d, v = search_space[k], np.asarray(internal[k], dtype=float)
                if isinstance(d, CategoricalDistribution):
                    idx = np.rint(v).astype(int)
                    cols += [(idx == i).astype(float) for i in range(len(d.choices))]
                elif isinstance(d, IntDistribution):
                    u = (v - d.low) / max(d.high - d.low, 1)
                    cols += [u, u * u]  # a curve, not a line: effects of a count or size bend
            return np.stack(cols, axis=1)

        x = encode(
            {k: np.asarray([search_space[k].to_internal_repr(t.params[k]) for t in done]) for k in names}
        )
        n_obj = len(study.directions)
        loss = to_loss(np.asarray([t.values for t in done], dtype=float), study.directions)
        cons = [sorted(t.constraints) for t in done]
        if cons[0] and all(c == cons[0] for c in cons):
            loss = np.hstack([loss, np.asarray([[t.constraints[k] for k in cons[0]] for t in done])])
        mu, sd = loss.mean(axis=0), loss.std(axis=0)
        sd = np.where(sd > 0, sd, 1.0)
        y = (loss - mu) / sd
        penalty = np.eye(x.shape[1]) * ridge
        penalty[0, 0] = 0.0  # the intercept is not shrunk
        coef = np.linalg.solve(x.T @ x + penalty, x.T @ y) * sd
        coef[0] += mu
        return cls(encode, coef, x @ coef, n_obj)

    def rank(self, samples: dict[str, np.ndarray], order: np.ndarray) -> np.ndarray:
        pred = self.encode(samples) @ self.coef
        ok = np.all(pred[:, self.n_obj :] <= 0.0, axis=1) if pred.shape[1] > self.n_obj else None
        norm = (pred[:, : self.n_obj] - self.low) / self.span
        gain = np.zeros(len(norm))
        for i in order:
            if ok is not None and not ok[i]:
                continue
            p = norm[i]
            if len(self.front) and np.any(np.all(self.front <= p, axis=1)):
                continue
            if np.any(p >= self.reference):
                continue
            gain[i] = (
                hypervolume(np.vstack([self.front, p[None]]) if len(self.front) else p[None], self.reference)
                - self.base
            )
        pos = np.empty(len(order), dtype=int)
        pos[order] = np.arange(len(order))
        return np.lexsort((pos, -gain))
