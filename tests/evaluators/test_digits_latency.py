"""digits-classifier's latency hooks: latency() alone, skip_latency, the signature, the lane and the cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from frontier.evaluators import EvalContext, make_evaluator
from frontier.evaluators.latency import LatencyCache, MeasurementLane
from frontier.spaces import Candidate


@pytest.fixture(scope="module")
def digits():
    e = make_evaluator("digits-classifier", {"epochs": 1, "latency_time_cap_s": 0.2})
    e.ensure_setup()
    return e


def test_skip_latency_leaves_latency_out_and_latency_measures_alone(digits, tmp_path: Path) -> None:
    c = Candidate({"depth": 2, "width_1": 32, "width_2": 16, "lr": 0.01, "dropout": 0.1})
    out = digits.evaluate(c, EvalContext(skip_latency=True))
    assert "latency_ms" not in out and out["accuracy"] > 0.3
    ctx = EvalContext(lane=MeasurementLane(directory=tmp_path), latency_cache=LatencyCache(tmp_path / "c.db"))
    lat = digits.latency(c, ctx)
    assert (
        set(lat) == {"latency_ms", "latency_norm_ms", "latency_ci_ms", "latency_cv"} and lat["latency_ms"] > 0
    )
    assert lat["latency_norm_ms"] > 0  # on CPU normalised by the reference workload, a separate figure
    # lr and dropout do not change the computation: the same architecture is a cache hit.
    other = Candidate({"depth": 2, "width_1": 32, "width_2": 16, "lr": 0.001})
    assert digits.latency(other, ctx)["latency_ms"] == lat["latency_ms"]
    assert [e["cached"] for e in ctx.latency_log] == [False, True]
    flops = 2 * (64 * 32 + 32 * 16 + 16 * 10)
    assert digits.latency_signature(other) == {
        "arch": "mlp",
        "depth": 2,
        "width_1": 32,
        "width_2": 16,
        "flops": flops,
    }
    assert type(digits).measures_latency_alone()


def test_batch_size_and_a_bad_input_shape(digits) -> None:
    c = Candidate({"depth": 1, "width_1": 16})
    digits.latency(c, EvalContext(latency_batch_size=8))
    with pytest.raises(ValueError, match=r"latency.input_shape must be \[64\].*Got \[3, 32, 32\]"):
        digits.latency(c, EvalContext(latency_input=(3, 32, 32)))
