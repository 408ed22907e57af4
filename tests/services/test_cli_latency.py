"""``frontier latency calibrate`` writes a device profile that a ``predicted`` study then uses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from frontier.search import run_study
from frontier.services._cli import app
from frontier.spaces import spec_from_dict

runner = CliRunner()

SPEC = {
    "name": "cal",
    "evaluator": {"kind": "digits-classifier", "options": {"epochs": 1, "latency_time_cap_s": 0.1}},
    "space": [
        {"name": "depth", "kind": "int", "low": 1, "high": 3},
        {"name": "width", "kind": "ordinal", "choices": [8, 32, 128], "per": "depth"},
        {"name": "lr", "kind": "float", "low": 0.001, "high": 0.02, "log": True},
    ],
    "objectives": [
        {"name": "accuracy", "direction": "maximize"},
        {"name": "latency_ms", "direction": "minimize"},
    ],
    "search": {"sampler": "random", "n_trials": 5, "seed": 0},
}


@pytest.mark.integration
def test_calibrate_then_a_predicted_study_measures_nothing(ray_session, tmp_path: Path) -> None:
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(SPEC))
    args = ["latency", "calibrate", "--device", "box", "--space", str(spec_path), "-k", "6"]
    result = runner.invoke(app, [*args, "--run-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "devices/box.json" in result.output
    profile = json.loads((tmp_path / "devices" / "box.json").read_text())
    assert profile["device"] == "box" and len(profile["rows"]) == 6
    assert {"hardware", "torch", "threads"} <= set(profile["fingerprint"])
    sigs = [json.dumps(r["signature"], sort_keys=True) for r in profile["rows"]]
    assert len(set(sigs)) == 6 and all("lr" not in r["signature"] for r in profile["rows"])
    # Run again: every figure now comes from the latency cache.
    again = runner.invoke(app, [*args, "--run-dir", str(tmp_path)])
    assert again.exit_code == 0 and again.output.count("(cache)") == 6

    spec = spec_from_dict({**SPEC, "latency": {"mode": "predicted", "device": "box"}})
    out = run_study(spec, run_dir=tmp_path, track=False)
    done = [r for r in out.trials if r.state == "complete"]
    assert len(done) == 5 and all(r.metrics["latency_measured"] == 0.0 for r in done)
    assert all(r.tags["latency_source"] == "predicted" and r.metrics["latency_ms"] > 0 for r in done)


def test_calibrate_errors(tmp_path: Path) -> None:
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(SPEC))
    base = ["latency", "calibrate", "--space", str(spec_path), "--run-dir", str(tmp_path)]
    result = runner.invoke(app, [*base, "--device", "box", "-k", "1"])
    assert result.exit_code == 2 and "-k must be >= 2" in result.output
    result = runner.invoke(app, [*base, "--device", "a/b"])
    assert result.exit_code == 2 and "--device must be a plain name" in result.output
    tabular = {**SPEC, "evaluator": {"kind": "tabular", "options": {"table": "t.csv", "metrics": {"a": "a"}}}}
    spec_path.write_text(yaml.safe_dump(tabular))
    result = runner.invoke(app, [*base, "--device", "box"])
    assert result.exit_code == 2 and "'tabular' cannot measure latency on its own" in result.output


def test_calibrate_function_errors(tmp_path: Path) -> None:
    from frontier.search._latency import calibrate
    from frontier.spaces import SpecError

    spec = spec_from_dict(SPEC)
    with pytest.raises(
        ValueError, match=r"-k must be >= 2 \(a predictor needs at least two measurements\)\. Got 1"
    ):
        calibrate(spec, device="box", k=1, run_dir=tmp_path)
    with pytest.raises(ValueError, match=r"--device must be a plain name .* Got 'a/b'"):
        calibrate(spec, device="a/b", k=3, run_dir=tmp_path)
    tabular = {**SPEC, "evaluator": {"kind": "tabular", "options": {"table": "t.csv", "metrics": {"a": "a"}}}}
    with pytest.raises(SpecError, match=r"evaluator 'tabular' cannot measure latency on its own"):
        calibrate(spec_from_dict(tabular), device="box", k=3, run_dir=tmp_path)
