"""FIFO studies on long-lived Ray actors: a dead or stuck worker fails only its trial; time budgets hold."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from typing import Any

import optuna
import pytest

import frontier.search._workers as workers
from frontier.search import run_study
from frontier.search._protocol import TrialOutcome, TrialRequest
from frontier.spaces import spec_from_dict

pytestmark = pytest.mark.integration


def test_a_worker_that_dies_fails_its_trial_is_replaced_and_the_trial_runs_once_more(
    ray_session, monkeypatch, tmp_path, table, make_spec
):
    from optuna.storages import RetryFailedTrialCallback

    class Dying(workers.TrialWorker):
        def evaluate(self, request: TrialRequest) -> TrialOutcome:
            if request.number == 2:
                os._exit(1)  # as a segfault or the OOM killer would end it
            return super().evaluate(request)

    monkeypatch.setattr(workers, "TrialWorker", Dying)
    spec = spec_from_dict(make_spec(table, **{"search.n_trials": 6, "search.concurrency": 2}))
    out = run_study(spec, run_dir=tmp_path / "run", track=False)

    # the interrupted trial does not spend the budget: 6 trials count, plus the one that died
    assert out.state == "finished" and [r.number for r in out.trials] == list(range(7))
    states = {r.number: (r.state, r.error) for r in out.trials}
    assert states[2] == ("fail", "the Ray worker running this trial died (see Ray logs)")
    assert all(
        state != "fail" or "died" not in (error or "") for n, (state, error) in states.items() if n != 2
    )
    study = optuna.load_study(study_name="toy", storage=f"sqlite:///{tmp_path / 'run' / 'frontier.db'}")
    trials = study.get_trials(deepcopy=False)
    assert trials[2].user_attrs["frontier.retried"] is True
    retries = [t for t in trials if "frontier.retry_of" in t.user_attrs]
    assert len(retries) == 1 and retries[0].user_attrs["frontier.retry_of"] == 2
    retry = retries[0]
    assert retry.params == trials[2].params and retry.state == optuna.trial.TrialState.COMPLETE
    assert RetryFailedTrialCallback.retried_trial_number(retry) == 2
    assert "frontier.error" not in retry.user_attrs
    assert sum(r.state == "complete" for r in out.trials) >= 5
    from frontier.search._optuna import n_done

    assert n_done(study) == 6


def test_a_retry_whose_worker_dies_too_is_not_run_a_third_time(
    ray_session, monkeypatch, tmp_path, table, make_spec
):
    marker = tmp_path / "doomed.json"

    class DiesOnTheseParams(workers.TrialWorker):
        def evaluate(self, request: TrialRequest) -> TrialOutcome:
            import json

            if request.number == 1:
                marker.write_text(json.dumps(dict(request.params)))
            if marker.exists() and json.loads(marker.read_text()) == request.params:
                os._exit(1)
            return super().evaluate(request)

    monkeypatch.setattr(workers, "TrialWorker", DiesOnTheseParams)
    raw = make_spec(table, **{"search.n_trials": 4, "search.concurrency": 1, "search.sampler": "random"})
    out = run_study(spec_from_dict(raw), run_dir=tmp_path / "run", track=False)

    died = [r for r in out.trials if r.state == "fail" and "died" in (r.error or "")]
    assert [r.number for r in died] == [1, 2]  # the original, then its one retry (asked for next)
    assert died[0].params == died[1].params
    # the retry's failure counts against the budget: 4 = trial 0, the retry and two more
    assert len(out.trials) == 5 and out.state == "finished"


def test_a_worker_stuck_past_the_trial_timeout_is_killed(
    ray_session, monkeypatch, tmp_path, table, make_spec
):
    class Stuck(workers.TrialWorker):
        def evaluate(self, request: TrialRequest) -> TrialOutcome:
            if request.number == 1:
                time.sleep(3600)  # stuck where the in-worker timeout cannot reach
            return super().evaluate(request)

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


def test_a_timed_out_trial_retires_its_worker_and_the_next_trial_runs_on_a_fresh_one(
    ray_session, monkeypatch, tmp_path, table, make_spec
):
    class HangsOnce(workers.TrialWorker):
        def evaluate(self, request: TrialRequest) -> TrialOutcome:
            if request.number == 1:  # this process's evaluator now hangs in Python, past any timeout
                from frontier.evaluators._tabular import TabularEvaluator

                TabularEvaluator.evaluate = lambda *args: time.sleep(3600)  # type: ignore[method-assign]
            outcome = super().evaluate(request)
            return replace(outcome, metrics={**outcome.metrics, "worker_pid": os.getpid()})

    monkeypatch.setattr(workers, "TrialWorker", HangsOnce)
    raw = make_spec(table, **{"search.n_trials": 4, "search.concurrency": 1, "search.trial_timeout_s": 1.0})
    t0 = time.monotonic()
    out = run_study(spec_from_dict(raw), run_dir=tmp_path / "run", track=False)

    assert time.monotonic() - t0 < workers.HARD_TIMEOUT_GRACE_S  # retired at once, not by the hard kill
    states = [r.state for r in out.trials]
    assert states == ["complete", "fail", "complete", "complete"]
    hung = out.trials[1]
    assert "evaluation ran longer than search.trial_timeout_s=1.0" in hung.error
    assert "worker process was retired" in hung.error
    study = optuna.load_study(study_name="toy", storage=f"sqlite:///{tmp_path / 'run' / 'frontier.db'}")
    pids = [int(t.user_attrs["frontier.metrics"]["worker_pid"]) for t in study.get_trials(deepcopy=False)]
    assert pids[0] == pids[1] and pids[2] != pids[1] and pids[3] == pids[2]
    deadline = time.monotonic() + 30
    while _alive(pids[1]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(pids[1]), "the retired worker's process must be gone"


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_evaluator_setup_is_not_counted_in_the_trial_timeout(
    ray_session, monkeypatch, tmp_path, table, make_spec
):
    class SlowSetup(workers.TrialWorker):
        def __init__(self, spec_json: str, latency: Any = None) -> None:
            from frontier.evaluators._tabular import TabularEvaluator

            setup = TabularEvaluator.setup

            def slow(ev: Any) -> None:  # as loading a model or compiling kernels on a busy machine
                time.sleep(3.0)
                setup(ev)

            TabularEvaluator.setup = slow  # type: ignore[method-assign]
            super().__init__(spec_json, latency)

    monkeypatch.setattr(workers, "TrialWorker", SlowSetup)
    raw = make_spec(table, **{"search.n_trials": 4, "search.concurrency": 2, "search.trial_timeout_s": 1.0})
    out = run_study(spec_from_dict(raw), run_dir=tmp_path / "run", track=False)

    assert [r.state for r in out.trials] == ["complete"] * 4, [r.error for r in out.trials]
    study = optuna.load_study(study_name="toy", storage=f"sqlite:///{tmp_path / 'run' / 'frontier.db'}")
    (setup_s,) = study.user_attrs["frontier.worker_setup_s"]
    assert setup_s and min(setup_s) >= 3.0  # each set-up worker's time, recorded outside any trial


def test_a_setup_past_setup_timeout_stops_the_study_with_the_reason(
    ray_session, monkeypatch, tmp_path, table, make_spec
):
    class StuckSetup(workers.TrialWorker):
        def setup(self) -> float:
            time.sleep(3600)
            return 0.0

    monkeypatch.setattr(workers, "TrialWorker", StuckSetup)
    raw = make_spec(table, **{"search.n_trials": 4, "search.setup_timeout_s": 2.0})
    t0 = time.monotonic()
    with pytest.raises(
        RuntimeError,
        match=r"evaluator setup .* longer than search\.setup_timeout_s=2; .*Raise search\.setup_timeout_s",
    ):
        run_study(spec_from_dict(raw), run_dir=tmp_path / "run", track=False)
    assert time.monotonic() - t0 < 60
    study = optuna.load_study(study_name="toy", storage=f"sqlite:///{tmp_path / 'run' / 'frontier.db'}")
    assert study.trials == [], "no trial was asked for without a set-up worker to run it"


def test_an_evaluator_setup_that_raises_stops_the_study_with_its_error(
    ray_session, tmp_path, table, make_spec
):
    raw = make_spec(table, **{"search.n_trials": 4})
    raw["evaluator"]["options"]["table"] = str(tmp_path / "missing.csv")
    with pytest.raises(
        RuntimeError,
        match=r"evaluator's setup failed on a Ray worker \(evaluator.kind='tabular'\): "
        r"FileNotFoundError: tabular evaluator: table not found",
    ):
        run_study(spec_from_dict(raw), run_dir=tmp_path / "run", track=False)


def test_the_local_ray_listens_on_the_loopback_address_only(ray_session):
    import ipaddress

    import psutil
    import ray

    assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")
    assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}
    listening = []
    for proc in psutil.Process().children(recursive=True):  # the GCS, raylet, agents and workers
        try:
            listening += [c.laddr.ip for c in proc.net_connections(kind="inet") if c.status == "LISTEN"]
        except psutil.Error:
            continue
    assert listening, "found none of Ray's listening sockets"
    for ip in listening:
        addr = ipaddress.ip_address(ip)
        mapped = getattr(addr, "ipv4_mapped", None)
        assert (mapped or addr).is_loopback, f"a Ray process listens on {ip}"


def test_the_local_ray_runs_its_workers_at_the_driver_priority(ray_session):
    import ray

    @ray.remote(num_cpus=0)
    def niceness() -> int:
        return os.nice(0)

    # Ray's default (15) left trials a tenth of the CPU share of any other busy process on the machine
    assert ray.get(niceness.remote()) == os.nice(0)
