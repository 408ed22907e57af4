"""FIFO studies on long-lived Ray actors: a dead or stuck worker fails only its trial; time budgets hold."""

from __future__ import annotations

import os
import time
from typing import Any

import optuna
import pytest

import frontier.search._workers as workers
from frontier.search import run_study
from frontier.spaces import spec_from_dict

pytestmark = pytest.mark.integration


def test_a_worker_that_dies_fails_its_trial_and_is_replaced(
    ray_session, monkeypatch, tmp_path, table, make_spec
):
    class Dying(workers.TrialWorker):
        def evaluate(self, config: dict[str, Any]) -> dict[str, Any]:
            if config["number"] == 2:
                os._exit(1)  # as a segfault or the OOM killer would end it
            return super().evaluate(config)

    monkeypatch.setattr(workers, "TrialWorker", Dying)
    spec = spec_from_dict(make_spec(table, **{"search.n_trials": 6, "search.concurrency": 2}))
    out = run_study(spec, run_dir=tmp_path / "run", track=False)

    assert out.state == "finished" and [r.number for r in out.trials] == list(range(6))
    states = {r.number: (r.state, r.error) for r in out.trials}
    assert states[2] == ("fail", "the Ray worker running this trial died (see Ray logs)")
    assert all(
        state != "fail" or "died" not in (error or "") for n, (state, error) in states.items() if n != 2
    )
    assert sum(r.state == "complete" for r in out.trials) >= 4


def test_a_worker_stuck_past_the_trial_timeout_is_killed(
    ray_session, monkeypatch, tmp_path, table, make_spec
):
    class Stuck(workers.TrialWorker):
        def evaluate(self, config: dict[str, Any]) -> dict[str, Any]:
            if config["number"] == 1:
                time.sleep(3600)  # stuck where the in-worker timeout cannot reach
            return super().evaluate(config)

    monkeypatch.setattr(workers, "TrialWorker", Stuck)
    monkeypatch.setattr(workers, "HARD_TIMEOUT_GRACE_S", 1.0)
    raw = make_spec(table, **{"search.n_trials": 4, "search.concurrency": 2, "search.trial_timeout_s": 2.0})
    t0 = time.monotonic()
    out = run_study(spec_from_dict(raw), run_dir=tmp_path / "run", track=False)

    assert time.monotonic() - t0 < 120
    states = {r.number: (r.state, r.error or "") for r in out.trials}
    assert states[1][0] == "fail" and "its worker was killed" in states[1][1]
    assert len(out.trials) == 4 and sum(s == "complete" for s, _ in states.values()) >= 2


def test_the_time_budget_stops_the_study_and_fails_the_running_trials(
    ray_session, tmp_path, table, make_spec
):
    raw = make_spec(table, **{"search.n_trials": 50, "search.concurrency": 2, "search.timeout_s": 6})
    raw["evaluator"]["options"]["delay_s"] = 1.0
    out = run_study(spec_from_dict(raw), run_dir=tmp_path / "run", track=False)

    assert out.state == "stopped" and 0 < len(out.trials) < 50
    assert not [r for r in out.trials if r.state == "running"]
    stopped = [r for r in out.trials if r.state == "fail"]
    assert stopped and all(r.error.startswith("stopped: the study ended") for r in stopped)


def test_a_worker_that_dies_while_starting_is_replaced(ray_session, monkeypatch, tmp_path, table, make_spec):
    marker = tmp_path / "first-start"

    class FailsOnce(workers.TrialWorker):
        def __init__(self, spec_json: str, latency: Any = None) -> None:
            if not marker.exists():  # the first worker to start, in whichever process
                marker.touch()
                raise RuntimeError("node went away")
            super().__init__(spec_json, latency)

    monkeypatch.setattr(workers, "TrialWorker", FailsOnce)
    spec = spec_from_dict(make_spec(table, **{"search.n_trials": 4, "search.concurrency": 2}))
    out = run_study(spec, run_dir=tmp_path / "run", track=False)
    assert out.state == "finished" and [r.state for r in out.trials] == ["complete"] * 4


def test_workers_that_can_never_start_stop_the_study_with_the_reason(
    ray_session, monkeypatch, tmp_path, table, make_spec
):
    class Broken(workers.TrialWorker):
        def __init__(self, spec_json: str, latency: Any = None) -> None:
            raise RuntimeError("no GPU driver on this node")

    monkeypatch.setattr(workers, "TrialWorker", Broken)
    spec = spec_from_dict(make_spec(table, **{"search.n_trials": 4, "search.concurrency": 2}))
    with pytest.raises(
        RuntimeError, match=r"(?s)3 Ray workers in a row died before they started.*no GPU driver"
    ):
        run_study(spec, run_dir=tmp_path / "run", track=False)
    study = optuna.load_study(study_name=spec.name, storage=f"sqlite:///{tmp_path / 'run' / 'frontier.db'}")
    assert study.trials == [], "no trial was asked for without a worker to run it"
