"""Issue 18's fault findings against a real ``frontier serve`` on 127.0.0.1 with real workers and Ray.

F3: graceful restarts are not failures; a worker killed by the OS is retried, then given up on cleanly, and
the failed study resumes through ``POST /studies/{id}/resume``. F5: a symlink planted after submission is
refused when the worker opens the path. F9: a study whose every trial failed ends ``failed``. F2: a study
its cluster can never place fails within ``placement_timeout_s``.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import optuna
import pytest

from frontier.services._runner import worker_tmp_dir
from tests.services.conftest import ALICE, Service, wait_for

pytestmark = pytest.mark.integration


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_symlink_planted_after_submission_is_refused_at_open_time(
    service_factory, make_table: Any, make_spec: Any, tmp_path: Path
) -> None:
    paused = service_factory(max_concurrent=0)
    secret = make_table(tmp_path / "outside.csv")  # a valid table: only the policy can refuse it
    late = paused.data / "late.csv"
    spec = make_spec(late, **{"search.n_trials": 2})
    paused.start()
    with paused.client(ALICE) as c:
        r = c.post("/studies", json=spec)
        assert r.status_code == 201, r.text  # inside the root, not there yet: accepted
        sid = r.json()["id"]
    paused.stop()
    late.symlink_to(secret)  # planted after submission
    svc = service_factory(home=paused.home, max_concurrent=1).start()
    with svc.client(ALICE) as c:
        body = wait_for(c, sid, ("succeeded", "failed"), timeout=60)
    assert body["state"] == "failed", body
    assert (
        f"evaluator.options.table: the path '{late}' now resolves to '{secret}', outside the allowed"
        in (body["error"])
    )
    assert body["trials"]["done"] == 0


def test_open_time_check_follows_links_only_inside_the_root(tmp_path: Path) -> None:
    from frontier.services import Settings
    from frontier.services._policy import open_checked, recheck_paths
    from frontier.spaces import SpecError, spec_from_dict
    from tests.conftest import tabular_spec, write_table

    root = tmp_path / "data"
    root.mkdir()
    real = write_table(root / "real.csv")
    (root / "alias.csv").symlink_to(real)
    assert open_checked("f", str(root / "alias.csv"), [root]) == str(real)
    assert open_checked("f", str(root / "not-yet.db"), [root]) == str(root / "not-yet.db")
    os.mkfifo(root / "pipe.csv")
    with pytest.raises(SpecError, match=r"f: the path '.*pipe\.csv' .* is neither a regular file nor a dir"):
        open_checked("f", str(root / "pipe.csv"), [root])
    (root / "etc.csv").symlink_to("/etc/passwd")
    settings = Settings(allowed_roots=[root])
    spec = spec_from_dict(tabular_spec(root / "alias.csv", **{"latency.cache": str(root / "c.db")}))
    assert recheck_paths(spec, settings).evaluator.options["table"] == str(real)
    (root / "c.db").symlink_to(tmp_path / "elsewhere.db")
    with pytest.raises(SpecError, match=r"latency\.cache: the path '.*c\.db' now resolves to '.*elsewhere"):
        recheck_paths(spec, settings)
    bad = spec_from_dict(tabular_spec(root / "etc.csv"))
    with pytest.raises(SpecError, match=r"evaluator\.options\.table: .* now resolves to '/etc/passwd'"):
        recheck_paths(bad, settings)


@pytest.mark.slow
def test_a_study_whose_every_trial_failed_ends_failed(service_factory, make_table, make_spec) -> None:
    svc = service_factory(max_concurrent=1).start()
    spec = make_spec(make_table(svc.data / "toy.csv"), **{"search.n_trials": 3, "search.sampler": "random"})
    spec["space"][0] = {"name": "x", "kind": "int", "low": 20, "high": 29}  # no such row in the table
    with svc.client(ALICE) as c:
        sid = c.post("/studies", json=spec).json()["id"]
        body = wait_for(c, sid, ("succeeded", "failed"), timeout=240)
    assert body["state"] == "failed", body
    assert body["trials"]["failed"] == 3 and body["trials"]["complete"] == 0
    assert body["error"].startswith("no trial completed (3 fail of 3); the commonest error (")
    assert "is not in the table" in body["error"]


@pytest.mark.slow
def test_graceful_restarts_are_not_failures(service_factory, make_table, make_spec) -> None:
    svc: Service = service_factory(max_concurrent=1, env={"FRONTIER_MAX_WORKER_FAILURES": "2"})
    spec = make_spec(make_table(svc.data / "toy.csv"), **{"search.n_trials": 4, "search.sampler": "random"})
    svc.start()
    with svc.client(ALICE) as c:
        sid = c.post("/studies", json=spec).json()["id"]
    for _ in range(3):  # more restarts than max_worker_failures allows failures
        _wait(svc.worker_pids, 60, "the study's worker")
        svc.stop()
        svc.start()
    with svc.client(ALICE) as c:
        body = wait_for(c, sid, ("succeeded", "failed"), timeout=240)
    assert body["state"] == "succeeded", body
    assert body["worker_failures"] == 0 and body["error"] is None
    assert body["trials"]["done"] == 4


@pytest.mark.slow
def test_killed_worker_is_retried_then_given_up_cleanly_then_resumed(
    service_factory, make_table, make_spec
) -> None:
    env = {"FRONTIER_MAX_WORKER_FAILURES": "2", "FRONTIER_RETRY_BACKOFF_S": "0.5"}
    svc: Service = service_factory(max_concurrent=1, env=env)
    spec = make_spec(make_table(svc.data / "toy.csv"), **{"search.n_trials": 8, "search.sampler": "random"})
    spec["evaluator"]["options"]["delay_s"] = 1.0
    svc.start()
    storage = f"sqlite:///{(svc.home / 'run' / 'frontier.db').resolve()}"
    with svc.client(ALICE) as c:
        sid = c.post("/studies", json=spec).json()["id"]

        def progressed(n: int) -> bool:
            return bool(c.get(f"/studies/{sid}").json()["trials"]["complete"] >= n and svc.worker_pids())

        for kill in (1, 2):
            _wait(lambda kill=kill: progressed(kill), 240, f"trial {kill} complete")
            for pid in svc.worker_pids():  # as the OOM killer does: SIGKILL, no chance to clean up
                os.killpg(pid, signal.SIGKILL)
            if kill == 1:
                _wait(
                    lambda: c.get(f"/studies/{sid}").json()["worker_failures"] == 1, 30, "the failure count"
                )
                assert c.get(f"/studies/{sid}").json()["state"] == "running"
        body = wait_for(c, sid, ("failed",), timeout=60)
        assert body["worker_failures"] == 2
        assert body["error"].startswith(
            "gave up after 2 abnormal worker deaths; last: the worker killed by signal 9"
        )
        assert f"POST /studies/{sid}/resume" in body["error"]
        study = optuna.load_study(study_name="alice--toy", storage=storage)
        assert not [t for t in study.get_trials(deepcopy=False) if t.state.name == "RUNNING"]
        assert not worker_tmp_dir(sid).exists()

        resumed = c.post(f"/studies/{sid}/resume")
        # queued, or already running: with a free slot the dispatcher may start it before the reply is sent
        assert resumed.status_code == 200 and resumed.json()["state"] in ("queued", "running"), resumed.text
        final = wait_for(c, sid, ("succeeded", "failed"), timeout=300)
    assert final["state"] == "succeeded", final
    # the full budget ran; only the trials the two kills interrupted failed (they may be re-run once)
    assert final["trials"]["done"] >= 8 and final["trials"]["failed"] <= 2, final
    assert final["worker_failures"] == 0


@pytest.mark.slow
def test_a_study_its_cluster_cannot_place_fails_in_the_stated_time(
    service_factory, make_table, make_spec
) -> None:
    # The service is told its cluster is large (as with an autoscaling one): validation accepts cpu=16,
    # but the local Ray has os.cpu_count() CPUs, so the trial could never be placed.
    if (os.cpu_count() or 1) >= 16:
        pytest.skip("this machine has 16 CPUs")
    env = {"FRONTIER_CLUSTER_CPUS": "64", "FRONTIER_PLACEMENT_TIMEOUT_S": "5"}
    svc = service_factory(max_concurrent=1, env=env).start()
    spec = make_spec(make_table(svc.data / "toy.csv"), **{"search.n_trials": 2, "resources": {"cpu": 16}})
    with svc.client(ALICE) as c:
        sid = c.post("/studies", json=spec).json()["id"]
        body = wait_for(c, sid, ("succeeded", "failed"), timeout=180)
    assert body["state"] == "failed", body
    assert body["error"].startswith("resources: no trial could be placed within placement_timeout_s=5: each ")
    assert f"needs cpu=16, gpu=0, but the Ray cluster has CPU={os.cpu_count()}" in body["error"]
    _wait(lambda: not svc.worker_pids(), 60, "the worker to exit")
