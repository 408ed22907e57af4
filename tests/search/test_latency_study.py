"""latency.mode in a real study: local Ray workers, SQLite storage, MLflow store, the lane and the cache."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from frontier.search import check_spec, run_study
from frontier.spaces import SpecError, spec_from_dict

pytestmark = pytest.mark.integration


def digits_spec(name: str, **latency: object) -> dict:
    return {
        "name": name,
        "evaluator": {"kind": "digits-classifier", "options": {"epochs": 1, "latency_time_cap_s": 0.1}},
        "space": [
            {"name": "depth", "kind": "int", "low": 1, "high": 3},
            {"name": "width", "kind": "ordinal", "choices": [8, 16, 32, 64, 128], "per": "depth"},
            {"name": "lr", "kind": "float", "low": 0.001, "high": 0.02, "log": True},
        ],
        "objectives": [
            {"name": "accuracy", "direction": "maximize"},
            {"name": "latency_ms", "direction": "minimize"},
        ],
        "search": {"sampler": "random", "n_trials": 12, "seed": 3, "concurrency": 2},
        "latency": latency,
    }


def test_hybrid_measures_fewer_tags_each_trial_and_remeasures_the_front(ray_session, tmp_path: Path) -> None:
    # The policy measures every trial until its predictor has 4 measured rows to cross-validate (the
    # first ~5 trials), and afterwards each trial whose optimistic latency (prediction x (1 - error bound))
    # could enter the front. Under load the measurements are noisier, the bound larger (0.3-0.5 with two CPU
    # hogs), and more trials are measured: 8 of 12 with the workers at normal priority, 10 of 12 at Ray's
    # default nice 15 (which also made the study 6x slower), all 12 once in a full-suite run. 16 trials
    # leave the policy enough trials past calibration that "fewer than all" does not hang on one or two.
    d = digits_spec("hyb", mode="hybrid", calibration=3, calibration_every=0)
    spec = spec_from_dict({**d, "search": {**d["search"], "n_trials": 16}})
    out = run_study(spec, run_dir=tmp_path)
    done = [r for r in out.trials if r.state == "complete"]
    # One trial failed once in a fresh-clone suite run on a loaded machine (15 of 16): what this checks is
    # the policy over the trials that completed; a failure must carry its error.
    others = [(r.number, r.state, r.error) for r in out.trials if r.state != "complete"]
    assert len(done) >= 15 and all(error for _, _, error in others), others
    measured = [r for r in done if r.metrics["latency_measured"] == 1.0]
    assert 3 <= len(measured) < len(done)
    assert all(r.tags["latency_source"] == ("measured" if r in measured else "predicted") for r in done)
    # The front holds measured trials only, each re-measured after the last trial.
    assert out.pareto and all(r.metrics["latency_measured"] == 1.0 for r in out.pareto)
    assert all(r.metrics["latency_final_ms"] > 0 for r in out.pareto)
    assert all("latency_final_ms" not in r.metrics for r in done if not r.pareto)
    client = MlflowClient(out.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("frontier").experiment_id], max_results=100)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert {c.data.tags["latency_source"] for c in children} == {"measured", "predicted"}
    front = [c for c in children if c.data.tags["pareto"] == "true"]
    assert front and all("latency_final_ms" in c.data.metrics for c in front)
    assert client.get_metric_history(out.parent_run_id, "latency_spearman")


def test_the_cache_serves_a_later_study(ray_session, tmp_path: Path) -> None:
    first = run_study(
        spec_from_dict({**digits_spec("a"), "search": {**digits_spec("a")["search"], "n_trials": 4}}),
        run_dir=tmp_path,
    )
    second = run_study(
        spec_from_dict({**digits_spec("b"), "search": {**digits_spec("b")["search"], "n_trials": 4}}),
        run_dir=tmp_path,
    )
    assert (tmp_path / "latency_cache.db").exists()
    # Same seed, same random candidates: the second study's latencies are the first's, from the cache.
    assert [r.metrics["latency_ms"] for r in second.trials] == [r.metrics["latency_ms"] for r in first.trials]


def test_latency_spec_errors_name_the_field() -> None:
    with pytest.raises(SpecError, match=r"latency.predictor: Unknown predictor 'nope'. Available: \["):
        check_spec(spec_from_dict(digits_spec("x", mode="hybrid", predictor="nope")))
    with pytest.raises(SpecError, match=r"latency.predictor: 'device-transfer' transfers from source-device"):
        check_spec(spec_from_dict(digits_spec("x", mode="hybrid", predictor="device-transfer")))
    tabular = digits_spec("x", mode="hybrid")
    tabular["evaluator"] = {
        "kind": "tabular",
        "options": {"table": "t.csv", "metrics": {"accuracy": "a", "latency_ms": "b"}},
    }
    with pytest.raises(SpecError, match=r"latency.mode: 'hybrid' needs an evaluator that measures latency"):
        check_spec(spec_from_dict(tabular))


def test_predicted_mode_without_a_profile_says_how_to_calibrate(ray_session, tmp_path: Path) -> None:
    spec = spec_from_dict(digits_spec("p", mode="predicted", device="nowhere"))
    with pytest.raises(
        ValueError, match=r"latency.device: no device profile 'nowhere'.*frontier latency calibrate"
    ):
        run_study(spec, run_dir=tmp_path, track=False)


def test_hybrid_resume_seeds_the_policy_with_the_stored_trials(ray_session, tmp_path: Path) -> None:
    def spec(n: int) -> object:
        d = digits_spec("res", mode="hybrid", calibration=3, calibration_every=0)
        return spec_from_dict({**d, "search": {**d["search"], "n_trials": n}})

    run_study(spec(5), run_dir=tmp_path, track=False)
    out = run_study(spec(8), run_dir=tmp_path, track=False)
    done = [r for r in out.trials if r.state == "complete"]
    assert len(done) == 8
    # The stored measurements fit the predictor and count as calibration: the resumed trials are predicted
    # first (or take the stored measurement of the same architecture), and none is measured merely to
    # calibrate.
    stored = {r.metrics["latency_ms"] for r in done[:5] if r.metrics["latency_measured"]}
    for r in done[5:]:
        reused = r.metrics["latency_error_bound"] == 0.0 and r.metrics["latency_ms"] in stored
        assert "latency_predicted_ms" in r.metrics or reused, r.metrics
