"""The MLflow tracker's own costs: its SQLite store and how often the background thread redraws artifacts."""

from __future__ import annotations

import sqlite3
import time

import optuna
import pytest

from frontier.search._mlflow import MlflowTracker, TrackerThread, default_tracking_uri
from frontier.search._optuna import default_storage, make_storage
from frontier.spaces import spec_from_dict

pytestmark = pytest.mark.integration


def _tracked_study(tmp_path, table, make_spec):
    spec = spec_from_dict(make_spec(table))
    storage = default_storage(tmp_path)
    study = optuna.create_study(
        study_name=spec.name, storage=make_storage(storage), directions=spec.directions
    )
    tracker = MlflowTracker(
        spec,
        tracking_uri=default_tracking_uri(tmp_path),
        storage_url=storage,
        artifact_root=tmp_path / "mlartifacts",
    )
    tracker.start()
    return spec, study, tracker, storage


def _add_trials(study, start, n):
    dists = {"x": optuna.distributions.IntDistribution(0, 9)}
    for x in range(start, start + n):
        study.add_trial(
            optuna.trial.create_trial(
                params={"x": x},
                distributions=dists,
                values=[x / 9, (1 - x / 9) ** 2],
                user_attrs={"frontier.metrics": {"f1": x / 9, "f2": (1 - x / 9) ** 2, "cost": 10.0 * x}},
            )
        )


def test_the_sqlite_tracking_store_runs_in_wal_mode(tmp_path, table, make_spec):
    _, _, tracker, _ = _tracked_study(tmp_path, table, make_spec)
    db = tracker.tracking_uri.removeprefix("sqlite:///")
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_background_syncs_log_every_trial_but_redraw_artifacts_only_when_due(tmp_path, table, make_spec):
    spec, study, tracker, storage = _tracked_study(tmp_path, table, make_spec)
    drawn: list[int] = []
    log_artifacts = tracker._log_artifacts
    tracker._log_artifacts = lambda done, front: (drawn.append(len(done)), log_artifacts(done, front))  # type: ignore[method-assign]
    thread = TrackerThread(tracker, spec.name, storage, interval=0.05, artifact_interval=3600)
    thread.start()
    _add_trials(study, 0, 6)
    deadline = time.monotonic() + 30
    while len(tracker._child) < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(tracker._child) == 6, "the background thread logs each finished trial as a child run"
    assert drawn == [], "the plot is not redrawn before artifact_interval has passed"
    thread.stop()
    assert drawn == [6], "stopping draws the final artifacts once"
    artifacts = {a.path for a in tracker.client.list_artifacts(tracker.parent_id)}
    assert {"pareto.json", "pareto.png"} <= artifacts


def test_a_repeated_configuration_on_the_front_shows_its_mean_and_count(tmp_path, table, make_spec):
    _, study, tracker, _ = _tracked_study(tmp_path, table, make_spec)
    _add_trials(study, 0, 4)
    dists = {"x": optuna.distributions.IntDistribution(0, 9)}
    # x=2 measured again, worse: its mean (not its first, luckier value) is what the front and MLflow show.
    study.add_trial(
        optuna.trial.create_trial(params={"x": 2}, distributions=dists, values=[2 / 9 + 0.1, 0.5])
    )
    tracker.sync(study)
    run = tracker.client.get_run(tracker._child[2])
    assert run.data.tags["evaluations"] == "2" and run.data.tags["pareto"] == "true"
    assert "mean of 2 evaluations" in run.data.tags["mlflow.note.content"]
    assert "evaluations" not in tracker.client.get_run(tracker._child[1]).data.tags


def test_a_trial_that_finished_before_an_earlier_evaluation_of_its_configuration_leaves_the_front(
    tmp_path, table, make_spec
):
    # Trial 0 (x=2) still runs while trial 1 (x=2 again) finishes: trial 1 is on the front alone. When trial
    # 0 finishes, the configuration's mean is filed under trial 0, and trial 1's run leaves the front.
    _, study, tracker, _ = _tracked_study(tmp_path, table, make_spec)
    dists = {"x": optuna.distributions.IntDistribution(0, 9)}
    study.enqueue_trial({"x": 2})
    first = study.ask(dists)
    study.add_trial(
        optuna.trial.create_trial(params={"x": 2}, distributions=dists, values=[2 / 9, (7 / 9) ** 2])
    )
    tracker.sync(study)
    assert tracker.client.get_run(tracker._child[1]).data.tags["pareto"] == "true"
    study.tell(first, [2 / 9 + 0.1, (7 / 9) ** 2])
    tracker.sync(study)
    assert tracker.client.get_run(tracker._child[1]).data.tags["pareto"] == "false"
    run = tracker.client.get_run(tracker._child[0])
    assert run.data.tags["pareto"] == "true" and run.data.tags["evaluations"] == "2"
