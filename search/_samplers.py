"""Samplers by name. One factory per name; ``auto`` picks among them from what the spec says."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from spaces import CategoricalParam, FloatParam, StudySpec

if TYPE_CHECKING:
    import optuna

SamplerFactory = Callable[[StudySpec], "optuna.samplers.BaseSampler"]
_REGISTRY: dict[str, SamplerFactory] = {}


def register_sampler(name: str) -> Callable[[SamplerFactory], SamplerFactory]:
    def deco(fn: SamplerFactory) -> SamplerFactory:
        _REGISTRY[name] = fn
        return fn

    return deco


def available_samplers() -> list[str]:
    return sorted(_REGISTRY)


def make_sampler(spec: StudySpec) -> optuna.samplers.BaseSampler:
    """Build the sampler a spec names (``search.sampler``), seeded with ``search.seed``."""
    name = spec.search.sampler
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"Unknown sampler '{name}'. Available: {available_samplers()}") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's ExperimentalWarning for multivariate/group TPE
        return factory(spec)


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
    """The ``auto`` rule (documented in docs/samplers.md).

    1. Conditional or categorical parameters -> multivariate TPE with ``group=True`` (it models the
       conditional sub-spaces jointly), constant liar when trials run concurrently.
    2. Otherwise, a small budget (<= 300 trials) with <= 3 objectives -> GP (Optuna's ``GPSampler``:
       log-EHVI for several objectives, constraint-aware), the most sample-efficient on numeric spaces.
    3. Otherwise -> multivariate TPE, whose cost per suggestion stays flat as trials grow.
    """
    params = spec.params
    conditional = any(p.when is not None for p in params)
    categorical = any(isinstance(p, CategoricalParam) for p in params)
    n_obj, n_trials = len(spec.objectives), spec.search.n_trials
    if conditional or categorical:
        why = "conditional" if conditional else "categorical"
        return AutoChoice("tpe-multivariate", f"{why} parameters: TPE models them natively")
    if n_trials <= 300 and n_obj <= 3 and not any(isinstance(p, FloatParam) and p.step for p in params):
        return AutoChoice("gp", f"numeric space, budget {n_trials} <= 300, {n_obj} objective(s)")
    return AutoChoice(
        "tpe-multivariate", f"budget {n_trials} > 300 or {n_obj} objectives: flat cost per trial"
    )


@register_sampler("auto")
def _auto(spec: StudySpec) -> optuna.samplers.BaseSampler:
    import optuna

    choice = auto_choice(spec)
    seed = spec.search.seed
    if choice.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    startup = max(5, min(20, spec.search.n_trials // 10))
    return optuna.samplers.TPESampler(
        seed=seed,
        multivariate=True,
        group=True,
        constant_liar=spec.search.concurrency > 1,
        n_startup_trials=startup,
    )
