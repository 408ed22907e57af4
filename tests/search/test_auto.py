"""The ``auto`` rule's choices, and the duplicate-free TPE it picks for finite spaces."""

from __future__ import annotations

import itertools

import numpy as np
import optuna
import pytest

from frontier.search import auto_choice, make_sampler
from frontier.search._auto import UniqueTPESampler
from frontier.search._optuna import tell_result
from frontier.spaces import spec_from_dict, suggest

FINITE = [
    {"name": "op1", "kind": "categorical", "choices": ["none", "skip", "conv1", "conv3"]},
    {"name": "op2", "kind": "categorical", "choices": ["none", "skip", "conv1", "conv3"]},
    {"name": "bits", "kind": "ordinal", "choices": [2, 4, 8]},
]


def spec(space, *, n_obj=2, n_trials=100, concurrency=1, constraints=()):
    return spec_from_dict(
        {
            "name": "auto",
            "evaluator": {"kind": "tabular"},
            "space": space,
            "objectives": [{"name": f"m{i}", "direction": "minimize"} for i in range(n_obj)],
            "constraints": list(constraints),
            "search": {"sampler": "auto", "n_trials": n_trials, "seed": 0, "concurrency": concurrency},
        }
    )


CONTINUOUS = [{"name": "lr", "kind": "float", "low": 1e-4, "high": 1.0, "log": True}]


@pytest.mark.parametrize(
    ("space", "n_obj", "n_trials", "expected"),
    [
        (FINITE, 2, 100, "tpe-multivariate"),  # architecture-style categorical space
        (FINITE, 3, 50, "tpe-multivariate"),
        ([{"name": "w", "kind": "float", "low": 0, "high": 1, "step": 0.25}], 1, 50, "tpe-multivariate"),
        (
            [
                {"name": "depth", "kind": "int", "low": 1, "high": 3},
                {"name": "width", "kind": "ordinal", "choices": [8, 16], "per": "depth"},
            ],
            2,
            100,
            "tpe-multivariate",
        ),  # conditional, finite
        (CONTINUOUS, 1, 100, "gp"),  # small continuous single-objective study
        (CONTINUOUS, 1, 1000, "tpe-multivariate"),  # GP's cost grows with trials
        (CONTINUOUS, 2, 100, "tpe-multivariate"),  # multi-objective GP too slow per suggestion
        (CONTINUOUS + FINITE, 1, 100, "gp"),
        (
            [{"name": f"x{i}", "kind": "float", "low": 0, "high": 1} for i in range(9)],
            1,
            100,
            "tpe-multivariate",
        ),
    ],
)
def test_rule_choices(space, n_obj, n_trials, expected):
    choice = auto_choice(spec(space, n_obj=n_obj, n_trials=n_trials))
    assert choice.sampler == expected
    assert choice.reason


def test_finite_space_gets_unique_tpe_with_the_benchmarked_settings():
    sampler = make_sampler(spec(FINITE))
    assert isinstance(sampler, UniqueTPESampler)
    assert sampler._n_ei_candidates == 64 and sampler._n_startup_trials == 5
    assert not sampler._constant_liar
    assert make_sampler(spec(FINITE, concurrency=4))._constant_liar  # parallel workers: constant liar
    assert make_sampler(spec(FINITE, n_trials=12))._n_startup_trials == 2
    assert isinstance(make_sampler(spec(CONTINUOUS, n_obj=1)), optuna.samplers.GPSampler)


def _drive(s, n, values):
    study = optuna.create_study(directions=s.directions, sampler=make_sampler(s))
    for _ in range(n):
        trial = study.ask()
        cand = suggest(trial, s.params)
        tell_result(study, trial, s, values(dict(cand.params)))
    return study


def _toy(p):
    cost = {"none": 0, "skip": 0.1, "conv1": 1, "conv3": 3}
    c = cost[p["op1"]] + cost[p["op2"]] + p["bits"] / 8
    return {"m0": c, "m1": 1 / (1 + c) + 0.01 * p["bits"]}


def test_never_repeats_a_configuration_until_the_space_is_exhausted():
    s = spec(FINITE, n_trials=60)  # 4 * 4 * 3 = 48 configurations
    study = _drive(s, 60, _toy)
    configs = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(set(configs[:48])) >= 46  # random startup may collide; TPE's proposals do not
    assert len(study.trials) == 60  # past exhaustion the search goes on (repeats allowed)


def test_duplicate_rate_vs_plain_tpe():
    """Statistical (seeds 0-4): plain multivariate TPE repeats configurations; the unique variant ~never."""
    space = FINITE
    plain, unique = [], []
    for seed in range(5):
        for target, factory in (
            (plain, lambda sd: optuna.samplers.TPESampler(seed=sd, multivariate=True, group=True)),
            (unique, lambda sd: UniqueTPESampler(seed=sd, multivariate=True, group=True)),
        ):
            s = spec(space, n_trials=30)
            study = optuna.create_study(directions=s.directions, sampler=factory(seed))
            for _ in range(30):
                trial = study.ask()
                cand = suggest(trial, s.params)
                tell_result(study, trial, s, _toy(dict(cand.params)))
            target.append(30 - len({tuple(sorted(t.params.items())) for t in study.trials}))
    assert np.mean(unique) <= 1.0 < np.mean(plain), (plain, unique)


def test_conditional_subspaces_and_constraints_still_work():
    space = [
        {"name": "depth", "kind": "int", "low": 1, "high": 2},
        {"name": "width", "kind": "ordinal", "choices": [8, 16, 32], "per": "depth"},
    ]
    s = spec(space, n_trials=20, constraints=[{"metric": "m0", "op": "<=", "value": 40}])

    def f(p):
        widths = [p[f"width_{i}"] for i in range(1, p["depth"] + 1)]
        return {"m0": float(sum(widths)), "m1": 1.0 / sum(widths)}

    study = _drive(s, 20, f)
    for t in study.trials:
        assert {k for k in t.params if k.startswith("width_")} == {
            f"width_{i}" for i in range(1, t.params["depth"] + 1)
        }
        assert "m0<=40" in t.constraints


def test_redraws_must_be_non_negative():
    with pytest.raises(ValueError, match="redraws must be >= 0, but got -1"):
        UniqueTPESampler(redraws=-1)


def test_all_configurations_reachable():
    # A tiny space: the sampler must visit every one of its 6 configurations within 6 trials.
    space = [
        {"name": "a", "kind": "categorical", "choices": ["x", "y", "z"]},
        {"name": "b", "kind": "int", "low": 0, "high": 1},
    ]
    s = spec(space, n_trials=6)
    study = _drive(s, 6, lambda p: {"m0": float(p["b"]), "m1": float("xyz".index(p["a"]))})
    seen = {(t.params["a"], t.params["b"]) for t in study.trials}
    assert len(seen) >= 5, seen
    assert seen <= set(itertools.product("xyz", (0, 1)))
