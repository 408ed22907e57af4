"""Every registered evaluator through the documented lifecycle, parametrized over the registry: a newly
registered evaluator is checked here without touching this file.

Each evaluator class ships ``tiny_spec(workdir) -> dict``: a study spec it runs in seconds (tiny models built
from a transformers config, no downloads). The check: the spec loads and names the evaluator;
``make_evaluator -> check_params -> bind_spec -> ensure_setup -> evaluate`` runs on the candidate a seeded
random sampler proposes first; the result holds every metric ``metrics()`` declares as a finite float, and
every objective and constraint of the tiny spec is among them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna
import pytest

from frontier.evaluators import (
    EvalContext,
    Evaluator,
    available_evaluators,
    get_evaluator_class,
    make_evaluator,
)
from frontier.spaces import spec_from_dict, suggest

# Evaluators whose tiny run takes more than ~20 s on two busy cores (the first pays importing transformers).
SLOW = {"hf-embedding-fidelity", "hf-causal-lm-perplexity"}


def run_conformance(name: str, workdir: Path) -> dict[str, float]:
    """The conformance check for the evaluator registered as ``name``; returns its metrics."""
    cls = get_evaluator_class(name)
    assert issubclass(cls, Evaluator) and cls.name == name
    hook = getattr(cls, "tiny_spec", None)
    assert callable(hook), (
        f"evaluator '{name}' ({cls.__module__}.{cls.__qualname__}) ships no tiny_spec(workdir) classmethod; "
        "add one returning a study spec it runs in seconds"
    )
    spec = spec_from_dict(hook(workdir))
    assert spec.evaluator.kind == name, f"{name}'s tiny_spec names evaluator '{spec.evaluator.kind}'"

    evaluator = make_evaluator(spec.evaluator.kind, spec.evaluator.options)
    assert type(evaluator) is cls
    evaluator.check_params({p.name for p in spec.params})
    evaluator.bind_spec(spec)
    evaluator.ensure_setup()

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    candidate = suggest(study.ask(), spec.params)
    metrics = evaluator.evaluate(candidate, EvalContext(seed=0, threads=1))

    declared = set(evaluator.metrics())
    assert declared, f"evaluator '{name}' declares no metrics()"
    missing = sorted(declared - set(metrics))
    assert not missing, f"evaluator '{name}' did not return its declared metrics {missing}"
    for metric in declared:
        value: Any = metrics[metric]
        assert isinstance(value, float | int) and not isinstance(value, bool), (metric, value)
        assert math.isfinite(float(value)), f"evaluator '{name}' returned {metric}={value}"
    wanted = {o.name for o in spec.objectives} | {c.metric for c in spec.constraints}
    assert wanted <= declared, f"{name}'s tiny_spec optimises {sorted(wanted - declared)}, not metrics of it"
    return {k: float(v) for k, v in metrics.items() if k in declared}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in available_evaluators()]
)
def test_evaluator_conformance(name: str, tmp_path: Path) -> None:
    run_conformance(name, tmp_path)


def test_every_builtin_evaluator_is_registered() -> None:
    assert set(available_evaluators()) >= {
        "digits-classifier",
        "hf-causal-lm-perplexity",
        "hf-embedding-fidelity",
        "lm-train",
        "tabular",
    }
