"""Kill ``frontier run`` with SIGKILL mid-study, run it again: nothing finished is lost or repeated, and
each trial the kill interrupted is run once more with the same parameters, linked to the original."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FRONTIER = [sys.executable, "-c", "from frontier.services._cli import main; main()"]


def test_sigkill_mid_study_then_resume(tmp_path: Path, make_table, make_spec):
    table = make_table(tmp_path / "t.csv")
    raw = make_spec(table, **{"search.n_trials": 14, "search.concurrency": 2, "search.sampler": "random"})
    raw["evaluator"]["options"]["delay_s"] = 0.5
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(raw))
    run_dir = tmp_path / "run"
    storage = f"sqlite:///{run_dir / 'frontier.db'}"
    cmd = [*FRONTIER, "run", str(spec_path), "--run-dir", str(run_dir)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}

    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    before: dict[int, tuple] = {}
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            time.sleep(0.5)
            try:
                study = optuna.load_study(study_name="toy", storage=storage)
            except Exception:
                continue
            done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if len(done) >= 4:
                break
        else:
            pytest.fail("the study did not get going within 240 s")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and every Ray process it started
        proc.wait(30)

    study = optuna.load_study(study_name="toy", storage=storage)
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.COMPLETE:
            before[t.number] = (t.params, t.values)
    running = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
    assert 4 <= len(before) < 14

    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=300)

    study = optuna.load_study(study_name="toy", storage=storage)
    trials = study.get_trials(deepcopy=False)
    total = 14 + len(running)  # each interrupted trial is run once more, off the budget
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.FAIL)]
    assert len(finished) == total and len(trials) == total
    assert len({t.number for t in trials}) == total
    for number, (params, values) in before.items():
        assert trials[number].state == TrialState.COMPLETE
        assert (trials[number].params, trials[number].values) == (params, values)
    for number in running:
        assert trials[number].state == TrialState.FAIL
        assert trials[number].user_attrs["frontier.error"].startswith("interrupted")
        assert trials[number].user_attrs["frontier.retried"] is True
        (retry,) = [t for t in trials if t.user_attrs.get("frontier.retry_of") == number]
        assert retry.params == trials[number].params and retry.state == TrialState.COMPLETE
    new_complete = [t for t in trials if t.state == TrialState.COMPLETE and t.number not in before]
    assert len(before) + len(new_complete) == 14

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("frontier")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert sorted(int(r.data.tags["frontier.trial"]) for r in children) == list(range(total))
