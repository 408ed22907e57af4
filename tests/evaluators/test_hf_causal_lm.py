"""hf-causal-lm-perplexity on a tiny Llama built from a config and saved to tmp_path."""

from __future__ import annotations

from typing import Any

import pytest

from frontier.evaluators import EvalContext, make_evaluator
from frontier.evaluators._tiny import save_tiny_model
from frontier.spaces import Candidate, SpecError, spec_from_dict

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(save_tiny_model(tmp_path_factory.mktemp("tiny-llama"), "llama"))


def spec(model: str, **options: Any) -> Any:
    return spec_from_dict(
        {
            "name": "tiny-lm-compress",
            "evaluator": {
                "kind": "hf-causal-lm-perplexity",
                "options": {
                    "model": model,
                    "seq_len": 32,
                    "eval_windows": 4,
                    "calibration_windows": 2,
                    "latency_time_cap_s": 0.05,
                    **options,
                },
            },
            "space": [
                {
                    "kind": "family",
                    "name": "q",
                    "family": "bits",
                    "options": {"num_layers": 2, "layout": "llama", "targets": ["**"], "group_by": "all"},
                },
                {
                    "kind": "family",
                    "name": "s",
                    "family": "sparsity",
                    "options": {"num_layers": 2, "layout": "llama", "targets": ["**.mlp.*"], "kind": "wanda"},
                },
            ],
            "objectives": [{"name": "perplexity", "direction": "minimize"}],
            "constraints": [{"metric": "avg_bits", "op": "<=", "value": 4.5}],
        }
    )


def test_perplexity_of_compressed_candidates(lm_dir: str) -> None:
    s = spec(lm_dir, warm_start="baselines")  # the sensitivity walk is tested with the encoder
    ev = make_evaluator(s.evaluator.kind, s.evaluator.options)
    ev.bind_spec(s)
    ev.load()
    ctx = EvalContext(threads=1)
    base = ev.evaluate(Candidate({}), ctx)
    assert set(ev.metrics()) <= set(base)
    assert base["perplexity_ratio"] == pytest.approx(1.0) and base["avg_bits"] == 32.0
    assert base["perplexity"] > 1.0 and base["latency_ms"] > 0
    eight = ev.evaluate(Candidate({"q.all": 8}), ctx)
    two = ev.evaluate(Candidate({"q.all": 2, "s.layer_0": 0.5, "s.layer_1": 0.5}), ctx)
    assert eight["avg_bits"] == 8.0 and abs(eight["perplexity_ratio"] - 1.0) < 0.01
    assert two["avg_bits"] == 2.0 and two["sparsity"] > 0.2
    assert abs(two["perplexity_ratio"] - 1.0) > abs(eight["perplexity_ratio"] - 1.0)
    assert two["size_mb"] < eight["size_mb"] < base["size_mb"]
    labels = [c.label for c in ev.initial_candidates(s)]
    assert labels == [
        "uniform-8bit",
        "uniform-4bit",
        "uniform-3bit",
        *(f"uniform-sparsity-{r}" for r in (0.25, 0.5, 0.75)),
    ]


def test_options_are_checked(lm_dir: str) -> None:
    with pytest.raises(SpecError, match=r"evaluator\.options\.model"):
        make_evaluator("hf-causal-lm-perplexity", {})
    s = spec(lm_dir)
    ev = make_evaluator(s.evaluator.kind, {**s.evaluator.options, "model": lm_dir + "-missing"})
    ev.bind_spec(s)
    with pytest.raises(ValueError, match="must be a local transformers model directory"):
        ev.load()
    ev = make_evaluator(s.evaluator.kind, {**s.evaluator.options, "seq_len": 60000})
    ev.bind_spec(s)
    with pytest.raises(ValueError, match="fewer than one window of seq_len=60000"):
        ev.load()
