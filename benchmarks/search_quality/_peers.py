"""The strongest peers, run on the same tables with the same scoring as ``auto``.

* ``gp``: Optuna's ``GPSampler`` (log-EHVI, constraint-aware; Ament et al., NeurIPS 2023), under a per-run
  time limit: a run that does not reach the budget in time is reported as not finished.
* ``autosampler``: OptunaHub's AutoSampler decision rule (``samplers/auto_sampler``; the package is fetched
  from GitHub at run time, which this machine cannot reach), re-implemented from its published source:
  random first trial; multi-objective: multivariate TPE with the constant liar when any parameter is
  categorical or conditional or there are >= 4 objectives, else ``GPSampler``, while fewer than 250 trials
  are complete, then NSGA-II (NSGA-III from 4 objectives); one objective: TPE for categorical/conditional
  spaces, else GP below 250 trials, then CMA-ES (TPE when constrained).
* ``morea`` / ``ehvi``: Syne Tune's multi-objective regularized evolution (Real et al., AAAI 2019, with
  non-dominated-sort priority) and its BoTorch EHVI searcher (Daulton et al., NeurIPS 2020), driven through
  their searchers' ``suggest`` / ``on_trial_complete`` (the loop ``AskTellScheduler`` wraps). Syne Tune
  has no constraints: on constrained problems they see the objectives only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import BaseSampler
from optuna.search_space import IntersectionSearchSpace
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from benchmarks.search_quality._problems import Problem
from frontier.search._pareto import to_loss
from frontier.search._workers import trial_seed
from frontier.spaces import StudySpec

Key = tuple[Any, ...]
SYNE_TUNE = ("morea", "ehvi")
OPTUNA_PEERS = ("gp", "autosampler")
PEERS = (*OPTUNA_PEERS, *SYNE_TUNE)
_GP_BUDGET = 250  # AutoSampler's _MAX_BUDGET_FOR_{SINGLE_GP,MULTI_GP_AND_TPE}


class AutoSamplerRule(BaseSampler):
    """OptunaHub AutoSampler's choice of sampler, re-decided before every trial (see the module docstring)."""

    def __init__(self, *, seed: int | None = None) -> None:
        self._seed = seed
        self._sampler: BaseSampler = optuna.samplers.RandomSampler(seed=seed)

    def _tpe(self) -> BaseSampler:
        if not isinstance(self._sampler, optuna.samplers.TPESampler):
            # AutoSampler also passes warn_independent_sampling=False, deprecated since Optuna 4.9 (it
            # only silences a warning).
            self._sampler = optuna.samplers.TPESampler(seed=self._seed, multivariate=True, constant_liar=True)
        return self._sampler

    def _decide(self, study: Study, space: dict[str, BaseDistribution]) -> None:
        done = study._get_trials(deepcopy=False, states=(TrialState.COMPLETE,), use_cache=True)
        if not done:
            return
        conditional = any(set(t.params) != set(done[0].params) for t in done)
        categorical = any(isinstance(d, CategoricalDistribution) for d in space.values())
        n_obj = len(study.directions)
        if conditional or (len(done) < _GP_BUDGET and (categorical or n_obj >= 4)):
            self._tpe()
        elif len(done) < _GP_BUDGET:
            if not isinstance(self._sampler, optuna.samplers.GPSampler):
                self._sampler = optuna.samplers.GPSampler(seed=self._seed)
        elif n_obj == 1:
            if not isinstance(self._sampler, optuna.samplers.CmaEsSampler):
                self._sampler = optuna.samplers.CmaEsSampler(seed=self._seed)
        elif not isinstance(self._sampler, optuna.samplers.NSGAIISampler | optuna.samplers.NSGAIIISampler):
            cls = optuna.samplers.NSGAIISampler if n_obj < 4 else optuna.samplers.NSGAIIISampler
            self._sampler = cls(seed=self._seed)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._decide(study, IntersectionSearchSpace().calculate(study))
        self._sampler.before_trial(study, trial)

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._sampler.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self._sampler.sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self._sampler.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self, study: Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        self._sampler.after_trial(study, trial, state, values)


def optuna_peer(name: str) -> Callable[[StudySpec], BaseSampler]:
    """``factory(spec)`` of an Optuna-based peer (for ``run_inprocess``)."""
    if name == "gp":
        return lambda spec: optuna.samplers.GPSampler(seed=spec.search.seed)
    if name == "autosampler":
        return lambda spec: AutoSamplerRule(seed=spec.search.seed)
    raise ValueError(f"Unknown Optuna peer '{name}'. Available: {list(OPTUNA_PEERS)}")


def _syne_space(problem: Problem) -> dict[str, Any]:
    from syne_tune.config_space import choice, randint

    out: dict[str, Any] = {}
    for p in problem.space:
        out[p["name"]] = randint(p["low"], p["high"]) if p["kind"] == "int" else choice(list(p["choices"]))
    return out


def run_syne_tune(
    problem: Problem,
    lookup: Callable[[Key, int], dict[str, float]],
    *,
    method: str,
    n_trials: int,
    seed: int,
    time_limit: float | None = None,
    normalise: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[list[Key | None], float, list[float]]:
    """Syne Tune's ``method`` searcher on the table: ``(keys, seconds, ask_seconds)``, cut at ``time_limit``.

    The searcher minimises the objectives as losses (maximised ones negated), passed through ``normalise``
    when given; each trial observes the same seed's row the Optuna loop would (``trial_seed(seed, number)``).
    """
    if method == "morea":
        from syne_tune.optimizer.schedulers.multiobjective.multi_objective_regularized_evolution import (
            MultiObjectiveRegularizedEvolution,
        )

        searcher: Any = MultiObjectiveRegularizedEvolution(_syne_space(problem), random_seed=seed)
    elif method == "ehvi":
        from syne_tune.optimizer.schedulers.multiobjective.expected_hyper_volume_improvement import (
            ExpectedHyperVolumeImprovement,
        )

        # double_precision=False: with True, Syne Tune 0.16 hands BoTorch 0.18 a float64 model and float32
        # observations, and qLogEHVI fails ("expected scalar type Double but found Float").
        searcher = ExpectedHyperVolumeImprovement(
            _syne_space(problem), random_seed=seed, double_precision=False
        )
    else:
        raise ValueError(f"Unknown Syne Tune method '{method}'. Available: {list(SYNE_TUNE)}")
    names = [o["name"] for o in problem.objectives]
    keys: list[Key | None] = []
    asks: list[float] = []
    start = time.perf_counter()
    for number in range(n_trials):
        if time_limit is not None and time.perf_counter() - start > time_limit:
            break
        t0 = time.perf_counter()
        config = searcher.suggest()
        asks.append(time.perf_counter() - t0)
        key = tuple(_plain(config[p]) for p in problem.params)
        metrics = lookup(key, trial_seed(seed, number))
        loss = to_loss(np.asarray([[metrics[n] for n in names]]), problem.directions)[0]
        if normalise is not None:
            loss = normalise(loss)
        searcher.on_trial_complete(number, config, [float(v) for v in loss])
        keys.append(key)
    return keys, time.perf_counter() - start, asks


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
