"""Shared conformance test: every registered sampler, driven through Frontier's ask/tell path."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest

from frontier.search import auto_choice, available_samplers, make_sampler, pareto_trials
from frontier.search._optuna import tell_result
from frontier.spaces import spec_from_dict, suggest

SPACE = [
    {"name": "depth", "kind": "int", "low": 1, "high": 3},
    {"name": "width", "kind": "ordinal", "choices": [8, 16, 32, 64], "per": "depth"},
    {"name": "lr", "kind": "float", "low": 1e-3, "high": 1.0, "log": True},
    {"name": "act", "kind": "categorical", "choices": ["relu", "gelu"]},
]


def make(sampler: str, n_trials: int = 24, seed: int | None = 0, **search):
    return spec_from_dict(
        {
            "name": f"conf-{sampler}",
            "evaluator": {"kind": "tabular"},
            "space": SPACE,
            "objectives": [
                {"name": "err", "direction": "minimize"},
                {"name": "size", "direction": "minimize"},
            ],
            "constraints": [{"metric": "size", "op": "<=", "value": 80}],
            "search": {"sampler": sampler, "n_trials": n_trials, "seed": seed, **search},
        }
    )


def toy(params):
    widths = [params[f"width_{i}"] for i in range(1, params["depth"] + 1)]
    size = float(sum(widths))
    err = (
        1.0 / (1 + size)
        + abs(math.log10(params["lr"]) + 1.5) * 0.1
        + (0.05 if params["act"] == "relu" else 0)
    )
    return {"err": err, "size": size}


def drive(spec, evaluate=toy):
    study = optuna.create_study(directions=spec.directions, sampler=make_sampler(spec))
    for _ in range(spec.search.n_trials):
        trial = study.ask()
        cand = suggest(trial, spec.params)
        try:
            metrics = evaluate(dict(cand.params))
        except Exception as exc:
            tell_result(study, trial, spec, None, error=repr(exc))
        else:
            tell_result(study, trial, spec, metrics)
    return study


def test_registry_matches_spec_names():
    assert available_samplers() == ["auto", "gp", "nsga2", "nsga3", "random", "tpe"]
    spec = make("tpe")
    bogus = spec.model_copy(update={"search": spec.search.model_construct(sampler="x")})
    with pytest.raises(ValueError, match=r"Unknown sampler 'x'. Available: \['auto', 'gp'"):
        make_sampler(bogus)


@pytest.mark.parametrize("name", available_samplers())
class TestSamplerConformance:
    def test_valid_candidates_and_conditions(self, name):
        spec = make(name, n_trials=16)
        study = drive(spec)
        assert len(study.trials) == 16
        for t in study.trials:
            depth = t.params["depth"]
            assert 1 <= depth <= 3
            assert {k for k in t.params if k.startswith("width_")} == {
                f"width_{i}" for i in range(1, depth + 1)
            }
            assert 1e-3 <= t.params["lr"] <= 1.0

    def test_seeded_runs_are_reproducible(self, name):
        a = [t.params for t in drive(make(name, n_trials=12, seed=3)).trials]
        b = [t.params for t in drive(make(name, n_trials=12, seed=3)).trials]
        assert a == b

    def test_failed_and_nan_trials_are_recorded_and_search_goes_on(self, name):
        calls = {"n": 0}

        def flaky(params):
            calls["n"] += 1
            if calls["n"] % 4 == 0:
                raise RuntimeError("boom")
            if calls["n"] % 5 == 0:
                return {"err": float("nan"), "size": 1.0}
            return toy(params)

        study = drive(make(name, n_trials=20), flaky)
        states = [t.state for t in study.trials]
        assert len(states) == 20
        fails = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
        assert len(fails) == 8  # calls 4, 5, 8, 10, 12, 15, 16, 20
        assert any("boom" in t.user_attrs["frontier.error"] for t in fails)
        assert any("is nan, not a finite number" in t.user_attrs["frontier.error"] for t in fails)

    def test_constraints_reach_the_sampler_and_infeasible_never_on_front(self, name):
        study = drive(make(name, n_trials=20))
        for t in study.trials:
            assert "size<=80" in t.constraints  # stored where Optuna's samplers read them
            assert (t.constraints["size<=80"] <= 0) == (toy_size(t) <= 80)
        front = pareto_trials(study.trials, ["minimize", "minimize"])
        assert front and all(t.constraints["size<=80"] <= 0 for t in front)


def toy_size(t):
    return sum([8, 16, 32, 64][t.params[f"width_{i}"]] for i in range(1, t.params["depth"] + 1))


def test_constrained_tpe_learns_to_stay_feasible():
    """Statistical: with constraints reaching TPE, later trials are feasible far more often than random."""
    rates = {}
    for sampler in ("tpe", "random"):
        feasible = []
        for seed in range(3):
            study = drive(make(sampler, n_trials=60, seed=seed, concurrency=1))
            late = study.trials[30:]
            feasible.append(np.mean([t.constraints["size<=80"] <= 0 for t in late]))
        rates[sampler] = float(np.mean(feasible))
    assert rates["tpe"] > rates["random"] + 0.1, rates


def test_auto_rule_choices():
    assert auto_choice(make("auto")).sampler == "tpe-multivariate"  # conditional + categorical
    numeric = spec_from_dict(
        {
            "name": "n",
            "evaluator": {"kind": "tabular"},
            "space": [
                {"name": "a", "kind": "float", "low": 0, "high": 1},
                {"name": "b", "kind": "int", "low": 0, "high": 9},
            ],
            "objectives": [{"name": "m", "direction": "minimize"}],
            "search": {"n_trials": 100},
        }
    )
    assert auto_choice(numeric).sampler == "gp"
    big = numeric.model_copy(update={"search": numeric.search.model_copy(update={"n_trials": 1000})})
    assert auto_choice(big).sampler == "tpe-multivariate"
    assert isinstance(make_sampler(big), optuna.samplers.TPESampler)
    assert isinstance(make_sampler(numeric), optuna.samplers.GPSampler)
