"""A small transformer/MoE study end to end: moe family -> lm-train on Ray Tune workers, MO-ASHA, MLflow."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from frontier.search import run_study
from frontier.spaces import spec_from_dict

pytestmark = pytest.mark.integration


def test_tiny_moe_study_through_ray_tune(ray_session, tmp_path):
    spec = spec_from_dict(
        {
            "name": "tiny-moe-test",
            "evaluator": {
                "kind": "lm-train",
                "options": {
                    "steps": 8, "eval_every": 2, "seq_len": 32, "batch_size": 4, "eval_batches": 1,
                    "latency_context": 8, "prefill_seq": 16, "latency_time_cap_s": 0.05,
                },
            },
            "space": [
                {
                    "kind": "family", "name": "lm", "family": "moe",
                    "options": {
                        "layers": [1, 2], "hidden": [32], "head_dim": [8, 16], "ffn_ratio": [1, 2],
                        "experts": [0, 2, 4], "top_k": [1, 2], "expert_ffn": [16, 32],
                        "shared_expert": [False, True],
                    },
                }
            ],
            "objectives": [
                {"name": "perplexity", "direction": "minimize"},
                {"name": "latency_ms", "direction": "minimize"},
            ],
            "search": {
                "sampler": "auto", "n_trials": 8, "seed": 0, "concurrency": 2,
                "scheduler": {"kind": "moasha", "grace_period": 2, "max_t": 8, "reduction_factor": 2},
            },
        }
    )  # fmt: skip
    out = run_study(spec, run_dir=tmp_path)
    assert len(out.trials) == 8 and out.count("fail") == 0, [r.error for r in out.trials if r.error]
    assert out.count("complete") >= 1 and out.pareto
    for r in out.trials:
        assert r.metrics["perplexity"] > 1.0 and r.metrics["active_params"] <= r.metrics["total_params"]
        for i in range(1, r.params["lm.depth"] + 1):  # legal by construction
            if r.params.get(f"lm.experts_{i}", 0) >= 2:
                assert r.params[f"lm.top_k_{i}"] <= r.params[f"lm.experts_{i}"]
    client = MlflowClient(out.tracking_uri)
    exp = client.get_experiment_by_name("frontier")
    children = [
        r
        for r in client.search_runs([exp.experiment_id])
        if r.data.tags.get("mlflow.parentRunId") == out.parent_run_id
    ]
    assert len(children) == 8
    assert all({"active_params", "total_params", "perplexity"} <= set(c.data.metrics) for c in children)
