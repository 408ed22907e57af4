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

from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers._tpe.sampler import _split_trials, default_gamma, default_gamma_multiobjective
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

_EVALUATED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)


class UniqueTPESampler(optuna.samplers.TPESampler):
    """:class:`optuna.samplers.TPESampler` whose relative proposals avoid configurations already tried.

    A proposal for a sub-space counts as a repeat only when some earlier trial (finished, failed or
    running) has exactly those parameters and no others, i.e. the same complete configuration; conditional
    sub-spaces are therefore left alone. When every one of the ``n_ei_candidates`` draws is a repeat, up to
    ``redraws`` further batches are drawn; if the space is exhausted the best repeat is returned (the
    search must go on).

    Args:
        redraws: extra candidate batches to draw when a whole batch repeats earlier trials.
        **kwargs: passed to :class:`optuna.samplers.TPESampler`.
    """

    def __init__(self, *, redraws: int = 4, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if redraws < 0:
            raise ValueError(f"redraws must be >= 0, but got {redraws}")
        self._redraws = redraws

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
        n = sum(t.state != TrialState.RUNNING for t in trials)
        below, above = _split_trials(study, trials, self._gamma(n))
        mpe_below = self._build_parzen_estimator(study, search_space, below, handle_below=True)
        mpe_above = self._build_parzen_estimator(study, search_space, above, handle_below=False)
        seen = _seen(study, trial, search_space)

        best: dict[str, Any] | None = None
        for _ in range(1 + self._redraws):
            samples = mpe_below.sample(self._rng.rng, self._n_ei_candidates)
            acq = self._compute_acquisition_func(samples, mpe_below, mpe_above)
            order = np.argsort(-acq, kind="stable")
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
