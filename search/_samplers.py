"""Samplers by name. One factory per name; ``auto`` picks among them from what the spec says."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from frontier.spaces import FloatParam, StudySpec
from frontier.spaces._samplers import SAMPLERS, SamplerFactory
from frontier.spaces._samplers import available_samplers as available_samplers

if TYPE_CHECKING:
    import optuna


def register_sampler(name: str) -> Callable[[SamplerFactory], SamplerFactory]:
    """Register ``factory(spec) -> optuna.samplers.BaseSampler`` as ``search.sampler: NAME``.

    The registry lives in ``frontier.spaces`` so specs check ``search.sampler`` against it; register before
    loading a spec that names the sampler.

    Raises:
        ValueError: another factory already holds ``name``.
    """
    return SAMPLERS.register(name)


def make_sampler(spec: StudySpec) -> optuna.samplers.BaseSampler:
    """Build the sampler a spec names (``search.sampler``), seeded with ``search.seed``.

    Raises:
        ValueError: ``Unknown sampler 'x'. Available: [...]``.
    """
    factory = SAMPLERS.get(spec.search.sampler)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's ExperimentalWarning for multivariate/group TPE
        sampler: optuna.samplers.BaseSampler = factory(spec)
        return sampler


@register_sampler("tpe")
def _tpe(spec: StudySpec) -> optuna.samplers.BaseSampler:
    import optuna

    return optuna.samplers.TPESampler(seed=spec.search.seed)


@register_sampler("nsga2")
def _nsga2(spec: StudySpec) -> optuna.samplers.BaseSampler:
    import optuna

    return optuna.samplers.NSGAIISampler(seed=spec.search.seed)


@register_sampler("nsga3")
def _nsga3(spec: StudySpec) -> optuna.samplers.BaseSampler:
    import optuna

    return optuna.samplers.NSGAIIISampler(seed=spec.search.seed)


@register_sampler("gp")
def _gp(spec: StudySpec) -> optuna.samplers.BaseSampler:
    import optuna

    return optuna.samplers.GPSampler(seed=spec.search.seed)


@register_sampler("random")
def _random(spec: StudySpec) -> optuna.samplers.BaseSampler:
    import optuna

    return optuna.samplers.RandomSampler(seed=spec.search.seed)


@dataclass(frozen=True)
class AutoChoice:
    """What ``auto`` chose and why (logged with the study)."""

    sampler: str
    reason: str


def auto_choice(spec: StudySpec) -> AutoChoice:
    """The ``auto`` rule (evidence in docs/samplers.md, from benchmarks/bench_search_quality.py).

    1. A finite space (int, ordinal, categorical and stepped float parameters, with or without conditions)
       -> duplicate-free multivariate TPE (:class:`search._auto.UniqueTPESampler`, ``group=True`` so
       conditional sub-spaces are modelled jointly): TPE's model, but no evaluation spent twice on one
       configuration; from 20 complete trials on, TPE's candidates are re-ranked by the hypervolume an
       additive ridge model of each objective (one-hot choices) predicts they add, a model that shares
       strength across a cell's structure and averages noise out (docs/samplers.md has the evidence).
    2. Continuous parameters, one objective, <= 8 parameters and a budget <= 300 trials -> GP (Optuna's
       ``GPSampler``, constraint-aware), the most sample-efficient there; its cost per suggestion grows
       with trials, dimensions and objectives, which is why the other cases avoid it.
    3. Otherwise -> multivariate TPE, whose cost per suggestion stays flat as trials grow.

    Concurrency (``search.concurrency > 1``) turns on the constant liar for TPE (Optuna's default is on;
    ``auto`` keeps it off for sequential studies, where it has nothing to do).
    """
    params = spec.params
    n_obj, n_trials = len(spec.objectives), spec.search.n_trials
    continuous = [p.name for p in params if isinstance(p, FloatParam) and p.step is None]
    if not continuous:
        kinds = sorted({p.kind for p in params})
        return AutoChoice(
            "tpe-multivariate",
            f"finite space ({', '.join(kinds)}): multivariate TPE that never repeats a configuration, "
            "candidates ranked by an additive surrogate",
        )
    if n_obj == 1 and len(params) <= 8 and n_trials <= 300:
        return AutoChoice(
            "gp", f"continuous space, {len(params)} parameters, budget {n_trials} <= 300, 1 objective"
        )
    return AutoChoice(
        "tpe-multivariate",
        f"continuous space with {n_obj} objectives, {len(params)} parameters, budget {n_trials}: "
        "flat cost per trial",
    )


def _startup_trials(n_trials: int) -> int:
    """Random trials before TPE's model takes over: 5 (benchmarked better than Optuna's 10 at budgets of
    50-200 on finite spaces), fewer for tiny budgets."""
    return max(2, min(5, n_trials // 10))


@register_sampler("auto")
def _auto(spec: StudySpec) -> optuna.samplers.BaseSampler:
    import optuna

    from frontier.search._auto import UniqueTPESampler

    choice = auto_choice(spec)
    seed = spec.search.seed
    if choice.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    return UniqueTPESampler(
        seed=seed,
        multivariate=True,
        group=True,
        n_ei_candidates=64,
        constant_liar=spec.search.concurrency > 1,
        n_startup_trials=_startup_trials(spec.search.n_trials),
        surrogate=True,  # used only where every parameter is categorical or an integer
    )
