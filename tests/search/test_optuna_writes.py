"""The write-through study's one-transaction writes store exactly what Optuna's own storage calls store."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from frontier.search._optuna import WriteThroughStudy, _TrialWriter, make_storage, tell_result
from frontier.spaces import spec_from_dict


def _studies(tmp_path: Path, name: str) -> tuple[optuna.Study, str]:
    url = f"sqlite:///{tmp_path / name}.db"
    study = optuna.create_study(
        study_name="s", storage=make_storage(url), directions=["minimize", "minimize"]
    )
    study.enqueue_trial({"x": 3, "kind": "b"}, user_attrs={"frontier.baseline": "uniform"})
    return study, url


def _run(study: optuna.Study, spec, *, fast: bool) -> None:
    wts = WriteThroughStudy(study, optuna.samplers.RandomSampler(seed=0))
    assert wts._writer is not None, "the installed Optuna's schema is not the one the writes were checked on"
    if not fast:
        wts._writer = None
    outcomes = [
        {"metrics": {"f1": 0.5, "f2": 0.25, "cost": 30.0}},  # the enqueued baseline
        {"metrics": {"f1": 0.1, "f2": 0.9, "cost": 90.0}},  # constraint violated
        {"metrics": {"f1": math.nan, "f2": 0.9, "cost": 10.0}},  # NaN objective -> failed
        {"metrics": None, "error": "RuntimeError: boom"},
        {
            "metrics": {"f1": 0.3, "f2": math.inf, "cost": 10.0},
            "pruned": True,
            "steps": [0.7, math.nan, math.inf],
        },
    ]
    for outcome in outcomes:
        live, _ = wts.ask(spec.params)
        for step, value in enumerate(outcome.get("steps", [])):  # (Trial.report is single-objective only)
            wts.memory._storage.set_trial_intermediate_value(live.trial._trial_id, step, value)
        frozen = tell_result(
            wts.memory,
            live.trial,
            spec,
            outcome["metrics"],
            error=outcome.get("error"),
            pruned=outcome.get("pruned", False),
        )
        wts.persist(live, frozen)
    live, _ = wts.ask(spec.params)  # left RUNNING, as a crash would leave it


def _comparable(t: FrozenTrial) -> dict:
    return {
        "number": t.number,
        "state": t.state,
        "values": t.values,
        "params": t.params,
        "distributions": t.distributions,
        "user_attrs": t.user_attrs,
        "system_attrs": t.system_attrs,
        "intermediate_values": {k: repr(v) for k, v in t.intermediate_values.items()},
        "finished": t.datetime_complete is not None,
    }


def test_fast_writes_match_optunas_own(tmp_path, table, make_spec):
    spec = spec_from_dict(make_spec(table))
    fast, fast_url = _studies(tmp_path, "fast")
    slow, slow_url = _studies(tmp_path, "slow")
    _run(fast, spec, fast=True)
    _run(slow, spec, fast=False)

    got = optuna.load_study(study_name="s", storage=make_storage(fast_url)).get_trials()
    want = optuna.load_study(study_name="s", storage=make_storage(slow_url)).get_trials()
    assert [_comparable(t) for t in got] == [_comparable(t) for t in want]
    assert [t.state for t in got] == [TrialState.COMPLETE] * 2 + [TrialState.FAIL] * 2 + [
        TrialState.PRUNED,
        TrialState.RUNNING,
    ]
    for g, w in zip(got, want, strict=True):
        assert abs((g.datetime_start - w.datetime_start).total_seconds()) < 60
        if w.datetime_complete is not None:
            assert g.datetime_start <= g.datetime_complete
            assert abs((g.datetime_complete - w.datetime_complete).total_seconds()) < 60


def test_finishing_a_trial_that_is_no_longer_running_is_refused(tmp_path, table, make_spec):
    spec = spec_from_dict(make_spec(table))
    study, url = _studies(tmp_path, "s")
    wts = WriteThroughStudy(study, optuna.samplers.RandomSampler(seed=0))
    wts.ask(spec.params)  # the enqueued one
    live, _ = wts.ask(spec.params)
    study._storage.set_trial_state_values(live.trial_id, TrialState.FAIL)  # e.g. marked failed by a resume
    frozen = tell_result(wts.memory, live.trial, spec, {"f1": 0.1, "f2": 0.2, "cost": 1.0})
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError, match="no longer RUNNING"):
        wts.persist(live, frozen)
    stored = optuna.load_study(study_name="s", storage=make_storage(url)).trials[live.number]
    assert stored.state == TrialState.FAIL and stored.values is None and not stored.user_attrs


def test_other_storages_keep_optunas_own_writes():
    assert _TrialWriter.for_storage(optuna.storages.InMemoryStorage()) is None
