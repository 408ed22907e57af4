"""The whole stack in-process: real local Ray, real SQLite Optuna storage, real MLflow store."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from frontier.search import load_study, run_study, trial_rows
from frontier.spaces import SpecError, spec_from_dict

pytestmark = pytest.mark.integration


def runs_of(tracking_uri: str):
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name("frontier")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parent = [r for r in runs if r.data.tags.get("frontier.kind") == "study"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return client, parent, children


def test_study_end_to_end_with_failures_constraints_and_tracking(
    ray_session, tmp_path, make_table, make_spec
):
    table = make_table(tmp_path / "t.csv", nan_at=(3, "a"), missing=(4, "a"))
    spec = spec_from_dict(
        make_spec(table, **{"search.sampler": "random", "search.n_trials": 30, "search.concurrency": 2})
    )
    seen = []
    out = run_study(spec, run_dir=tmp_path / "run", on_progress=seen.append)

    assert out.state == "finished" and len(out.trials) == 30
    assert [p.done for p in seen] == list(range(1, 31))
    by_params = {(r.params["x"], r.params["kind"]): r for r in out.trials}
    if (3, "a") in by_params:
        assert by_params[(3, "a")].state == "fail" and "is nan" in by_params[(3, "a")].error
    if (4, "a") in by_params:
        assert by_params[(4, "a")].state == "fail" and "is not in the table" in by_params[(4, "a")].error
    complete = [r for r in out.trials if r.state == "complete"]
    assert complete, "random search over 30 cells must complete some trials"
    for r in complete:
        assert r.feasible == (r.metrics["cost"] <= 70)
        assert r.values == {"f1": r.metrics["f1"], "f2": r.metrics["f2"]}
    assert out.pareto and all(r.feasible for r in out.pareto)

    client, parent, children = runs_of(out.tracking_uri)
    assert len(parent) == 1 and parent[0].info.run_id == out.parent_run_id
    assert len(children) == 30
    assert all(c.data.tags["mlflow.parentRunId"] == out.parent_run_id for c in children)
    pareto_tagged = {int(c.data.tags["frontier.trial"]) for c in children if c.data.tags["pareto"] == "true"}
    assert pareto_tagged == {r.number for r in out.pareto}
    failed = [c for c in children if c.info.status == "FAILED"]
    assert len(failed) == sum(r.state == "fail" for r in out.trials)
    assert all("error" in c.data.tags for c in failed)
    some = next(c for c in children if c.data.tags["state"] == "complete")
    assert {"f1", "f2", "cost", "constraint.cost_le_70"} <= set(some.data.metrics)
    assert set(some.data.params) == {"x", "kind"}
    artifacts = {a.path for a in client.list_artifacts(out.parent_run_id)}
    assert {"pareto.json", "pareto.png", "spec.json"} <= artifacts
    hv = client.get_metric_history(out.parent_run_id, "hypervolume")
    assert len(hv) == 30 and all(b.value >= a.value for a, b in itertools.pairwise(hv))
    path = client.download_artifacts(out.parent_run_id, "pareto.json", str(tmp_path))
    rows = json.loads(Path(path).read_text())
    assert sorted(r["number"] for r in rows) == sorted(r.number for r in out.pareto)


def test_resume_counts_done_trials_and_keeps_them(ray_session, tmp_path, table, make_spec):
    spec = spec_from_dict(make_spec(table, **{"search.n_trials": 8}))
    first = run_study(spec, run_dir=tmp_path)
    more = spec.model_copy(update={"search": spec.search.model_copy(update={"n_trials": 14})})
    second = run_study(more, run_dir=tmp_path)
    assert len(second.trials) == 14
    assert [(r.number, r.params, r.values) for r in second.trials[:8]] == [
        (r.number, r.params, r.values) for r in first.trials
    ]
    third = run_study(more, run_dir=tmp_path)  # budget already spent: nothing new runs
    assert len(third.trials) == 14
    _, parent, children = runs_of(second.tracking_uri)
    assert len(parent) == 1 and len(children) == 14


def test_seeded_sequential_runs_are_reproducible(ray_session, tmp_path, table, make_spec):
    spec = spec_from_dict(make_spec(table, **{"search.n_trials": 15, "search.seed": 7}))
    a = run_study(spec, run_dir=tmp_path / "a", track=False)
    b = run_study(spec, run_dir=tmp_path / "b", track=False)
    assert [r.params for r in a.trials] == [r.params for r in b.trials]


def test_runner_tune_runs_a_fifo_study_as_ray_tune_trials(
    ray_session, monkeypatch, tmp_path, make_table, make_spec
):
    import frontier.search._workers as workers

    class NoPool:
        def __init__(self, *args: object, **kwargs: object) -> None:
            raise AssertionError("search.runner 'tune' must not start the actor pool")

    monkeypatch.setattr(workers, "WorkerPool", NoPool)
    table = make_table(tmp_path / "t.csv", nan_at=(3, "a"))
    raw = make_spec(table, **{"search.sampler": "random", "search.n_trials": 10, "search.concurrency": 2})
    raw["search"]["runner"] = "tune"
    out = run_study(spec_from_dict(raw), run_dir=tmp_path / "run", track=False)

    assert out.state == "finished" and [r.number for r in out.trials] == list(range(10))
    for r in out.trials:
        if (r.params["x"], r.params["kind"]) == (3, "a"):
            assert r.state == "fail" and "is nan" in r.error
        else:
            assert r.state == "complete" and r.values == {"f1": r.metrics["f1"], "f2": r.metrics["f2"]}


def test_trial_timeout_fails_the_trial_and_the_study_goes_on(ray_session, tmp_path, table, make_spec):
    # trial_timeout_s bounds the evaluation (here a 5 s sleep per trial), not the worker's start and setup
    # (a new process importing pandas and reading the table), which on a loaded machine alone took longer
    # than the timeout: margins of seconds on both sides, so the outcome does not depend on the load.
    raw = make_spec(table, **{"search.n_trials": 3, "search.trial_timeout_s": 2.0})
    raw["evaluator"]["options"]["delay_s"] = 5.0
    out = run_study(spec_from_dict(raw), run_dir=tmp_path / "slow", track=False)
    assert len(out.trials) == 3
    for r in out.trials:
        assert r.state == "fail" and "evaluation ran longer than search.trial_timeout_s=2.0" in r.error

    quick = make_spec(table, **{"search.n_trials": 3, "search.trial_timeout_s": 2.0, "name": "quick"})
    out = run_study(spec_from_dict(quick), run_dir=tmp_path / "quick", track=False)
    assert [r.state for r in out.trials] == ["complete"] * 3


def test_trial_timeout_under_ray_tune_fails_the_trial_without_a_retry(
    ray_session, tmp_path, table, make_spec
):
    limits = {"search.n_trials": 2, "search.trial_timeout_s": 2.0, "search.sampler": "random"}
    raw = make_spec(table, **limits)
    raw["search"]["runner"] = "tune"
    raw["evaluator"]["options"]["delay_s"] = 5.0
    out = run_study(spec_from_dict(raw), run_dir=tmp_path, track=False)
    # a timeout is the candidate's own failure: it keeps its reason and is not run again
    assert [r.number for r in out.trials] == [0, 1]
    for r in out.trials:
        assert r.state == "fail" and "evaluation ran longer than search.trial_timeout_s=2.0" in r.error


def test_spec_is_checked_against_registries_before_anything_runs(tmp_path, table, make_spec):
    raw = make_spec(table)
    raw["evaluator"]["kind"] = "nope"
    with pytest.raises(
        SpecError, match=r"evaluator.kind: Unknown evaluator 'nope'. Available: \['digits-classifier'"
    ):
        run_study(spec_from_dict(raw), run_dir=tmp_path)
    raw = make_spec(table)
    raw["objectives"][0]["name"] = "accuracy"
    with pytest.raises(
        SpecError, match=r"objectives\[0\].name: 'accuracy' is not a metric of evaluator 'tabular'"
    ):
        run_study(spec_from_dict(raw), run_dir=tmp_path)
    raw = make_spec(table)
    raw["evaluator"]["options"]["colour"] = "red"
    with pytest.raises(SpecError, match=r"evaluator.options.colour: unknown field"):
        run_study(spec_from_dict(raw), run_dir=tmp_path)
    assert not (tmp_path / "frontier.db").exists() or not load_study_names(tmp_path)


def load_study_names(tmp_path):
    import optuna

    return [s.study_name for s in optuna.get_all_study_summaries(f"sqlite:///{tmp_path / 'frontier.db'}")]


def test_resuming_with_another_space_is_refused(ray_session, tmp_path, table, make_spec):
    spec = spec_from_dict(make_spec(table, **{"search.n_trials": 2}))
    run_study(spec, run_dir=tmp_path, track=False)
    raw = make_spec(table, **{"search.n_trials": 4})
    raw["space"][0]["high"] = 5
    with pytest.raises(ValueError, match=r"already exists .* with a different space"):
        run_study(spec_from_dict(raw), run_dir=tmp_path, track=False)
    study = load_study("toy", f"sqlite:///{tmp_path / 'frontier.db'}")
    assert len(trial_rows(study)) == 2


def test_moasha_prunes_dominated_trials_and_records_them(ray_session, tmp_path):
    import itertools

    import pandas as pd

    rows = []
    for x, kind in itertools.product(range(10), "abc"):
        shift = {"a": 0.0, "b": 0.3, "c": 0.6}[kind]
        for step in range(1, 10):
            rows.append(
                {
                    "x": x,
                    "kind": kind,
                    "step": step,
                    "f1": x / 9 + shift + 1 / step,
                    "f2": (1 - x / 9) ** 2 + shift,
                }
            )
    pd.DataFrame(rows).to_csv(tmp_path / "curves.csv", index=False)
    options = {
        "table": str(tmp_path / "curves.csv"),
        "metrics": {"f1": "f1", "f2": "f2"},
        "step_column": "step",
    }
    spec = spec_from_dict(
        {
            "name": "curves",
            "evaluator": {"kind": "tabular", "options": {**options, "delay_s": 0.02}},
            "space": [
                {"name": "x", "kind": "int", "low": 0, "high": 9},
                {"name": "kind", "kind": "categorical", "choices": ["a", "b", "c"]},
            ],
            "objectives": [{"name": "f1", "direction": "minimize"}, {"name": "f2", "direction": "minimize"}],
            "search": {
                "sampler": "random",
                "n_trials": 15,
                "seed": 0,
                "concurrency": 2,
                "scheduler": {"kind": "moasha", "grace_period": 1, "max_t": 9, "reduction_factor": 3},
            },
        }
    )
    out = run_study(spec, run_dir=tmp_path / "run")
    states = [r.state for r in out.trials]
    assert len(states) == 15 and "pruned" in states and "complete" in states
    for r in out.trials:
        if r.state == "pruned":
            assert not r.pareto
            assert set(r.metrics) == {"f1", "f2"}  # its last reported values are kept
            assert r.metrics["f1"] > r.metrics["f2"] - 10  # numbers, not placeholders
        if r.state == "complete":  # ran to the last step: f1 includes 1/9
            x, shift = r.params["x"], {"a": 0.0, "b": 0.3, "c": 0.6}[r.params["kind"]]
            assert r.values["f1"] == pytest.approx(x / 9 + shift + 1 / 9)
    _, _, children = runs_of(out.tracking_uri)
    killed = {int(c.data.tags["frontier.trial"]) for c in children if c.info.status == "KILLED"}
    assert killed == {r.number for r in out.trials if r.state == "pruned"}
