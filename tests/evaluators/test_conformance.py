"""Every registered evaluator through the documented lifecycle, parametrized over the registry: a newly
registered evaluator is checked here without touching this file.

Each evaluator class ships ``tiny_spec(workdir) -> dict``: a study spec it runs in seconds (tiny models built
from a transformers config, no downloads). The check: the spec loads and names the evaluator; ``for_spec``
(make -> check_params -> bind_spec -> ensure_setup) then ``evaluate`` runs on the candidate a seeded random
sampler proposes first; the result holds every metric ``metrics()`` declares as a finite float, and
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
    for_spec,
    get_evaluator_class,
)
from frontier.spaces import SpecError, spec_from_dict, suggest

# Evaluators whose tiny run takes more than ~20 s on two busy cores (the first pays importing transformers).
SLOW = {"hf-embedding-fidelity", "hf-causal-lm-perplexity", "hf-moe-perplexity"}


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

    evaluator = for_spec(spec)
    assert type(evaluator) is cls

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
        "hf-moe-perplexity",
        "lm-train",
        "tabular",
    }


def test_for_spec_runs_the_lifecycle_once_in_its_documented_order(tmp_path: Path, monkeypatch) -> None:
    from frontier.evaluators._tabular import TabularEvaluator

    calls: list[str] = []
    for hook in ("check_params", "bind_spec", "setup"):
        original = getattr(TabularEvaluator, hook)

        def recorded(self: Any, *args: Any, _hook: str = hook, _original: Any = original) -> Any:
            calls.append(_hook)
            return _original(self, *args)

        monkeypatch.setattr(TabularEvaluator, hook, recorded)
    spec = spec_from_dict(TabularEvaluator.tiny_spec(tmp_path))
    evaluator = for_spec(spec)
    assert calls == ["check_params", "bind_spec", "setup"]
    evaluator.ensure_setup()  # set up once per instance
    assert calls == ["check_params", "bind_spec", "setup"]
    calls.clear()
    for_spec(spec, setup=False)
    assert calls == ["check_params", "bind_spec"]


def test_for_spec_errors_name_the_field(tmp_path: Path) -> None:
    from frontier.evaluators._tabular import TabularEvaluator

    raw = TabularEvaluator.tiny_spec(tmp_path)
    with pytest.raises(
        SpecError, match=r"evaluator\.kind: Unknown evaluator 'nope'\. Available: \[.*'tabular'"
    ):
        for_spec(spec_from_dict({**raw, "evaluator": {"kind": "nope", "options": {}}}))
    digits = {**raw, "evaluator": {"kind": "digits-classifier", "options": {}}}
    with pytest.raises(SpecError, match=r"^space: .*digits-classifier"):
        for_spec(spec_from_dict(digits), setup=False)
