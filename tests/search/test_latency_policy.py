"""The hybrid/predicted latency policy, in-process (no Ray): what it measures, what it predicts."""

from __future__ import annotations

import numpy as np
import pytest

from frontier.search._latency import LatencyPolicy, resolve_latency, signature_frame
from frontier.spaces import Candidate, spec_from_dict


def make_spec(**latency: object) -> object:
    return spec_from_dict(
        {
            "name": "p",
            "evaluator": {"kind": "digits-classifier"},
            "space": [
                {"name": "depth", "kind": "int", "low": 1, "high": 3},
                {"name": "width", "kind": "ordinal", "choices": [8, 16, 32, 64], "per": "depth"},
            ],
            "objectives": [
                {"name": "accuracy", "direction": "maximize"},
                {"name": "latency_ms", "direction": "minimize"},
            ],
            "constraints": [{"metric": "params", "op": "<=", "value": 5000}],
            "search": {"seed": 0},
            "latency": {"mode": "hybrid", "calibration": 4, "calibration_every": 0, **latency},
        }
    )


def true_latency(sig: dict) -> float:
    """A device where every layer costs its width: additive, so the lookup table can learn it."""
    return 0.05 + sum(0.01 * v for k, v in sig.items() if k.startswith("width"))


def draw(rng: np.random.Generator) -> dict:
    depth = int(rng.integers(1, 4))
    return {"depth": depth, **{f"width_{i}": int(rng.choice([8, 16, 32, 64])) for i in range(1, depth + 1)}}


def test_signature_frame_fills_absent_layers() -> None:
    frame = signature_frame(
        [{"depth": 1, "width_1": 8, "arch": "mlp"}, {"depth": 2, "width_1": 8, "width_2": 16}]
    )
    assert list(frame.columns) == ["arch", "depth", "width_1", "width_2"]
    assert frame["width_2"].tolist() == [0.0, 16.0] and frame["arch"].tolist() == ["mlp", "none"]


def test_hybrid_calibrates_then_measures_only_what_could_enter_the_front() -> None:
    policy = LatencyPolicy(make_spec())
    rng = np.random.default_rng(0)
    reasons = []
    for _ in range(60):
        sig = draw(rng)
        # Accuracy unrelated to latency: most trials end up dominated.
        metrics = {"accuracy": float(rng.uniform(0.5, 0.99)), "params": 1000.0}
        decision = policy.decide(sig, metrics)
        reasons.append(decision.reason)
        value = true_latency(sig) if decision.measure else decision.predicted_ms
        policy.observe(
            sig,
            {**metrics, "latency_ms": value},
            measured=decision.measure,
            predicted_ms=decision.predicted_ms,
            reused=decision.reused,
        )
    assert reasons[:4] == ["calibration"] * 4
    summary = policy.summary()
    assert summary["measured"] + summary["predicted"] + summary["reused"] == 60
    assert summary["measured"] <= 25, summary  # >= 2.4x fewer measurements on this toy problem
    assert summary["spearman"] is not None  # running, on predictions made before each measurement
    from scipy.stats import spearmanr

    fresh = [draw(rng) for _ in range(30)]
    rho = spearmanr([policy.predict(s) for s in fresh], [true_latency(s) for s in fresh]).statistic
    assert rho > 0.8, rho  # the refitted predictor ranks unseen candidates
    assert {"could enter the Pareto set", "dominated"} <= set(reasons)


def test_infeasible_trials_are_predicted_not_measured() -> None:
    policy = LatencyPolicy(make_spec(calibration=2))
    for sig in ({"depth": 1, "width_1": 8}, {"depth": 1, "width_1": 64}):
        policy.observe(sig, {"accuracy": 0.9, "params": 10.0, "latency_ms": true_latency(sig)}, measured=True)
    d = policy.decide({"depth": 1, "width_1": 16}, {"accuracy": 0.99, "params": 99999.0})
    assert not d.measure and d.reason == "infeasible" and d.predicted_ms is not None


def test_predicted_mode_fits_the_device_profile_and_never_measures() -> None:
    rows = [
        {"signature": s, "latency_ms": true_latency(s)}
        for s in (draw(np.random.default_rng(i)) for i in range(12))
    ]
    policy = LatencyPolicy(make_spec(mode="predicted", device="box"), profile={"rows": rows})
    d = policy.decide({"depth": 2, "width_1": 32, "width_2": 8}, {"accuracy": 0.9, "params": 1.0})
    assert not d.measure and d.predicted_ms == pytest.approx(
        true_latency({"width_1": 32, "width_2": 8}), rel=0.3
    )


def test_predicted_mode_without_profile_rows_says_how_to_calibrate() -> None:
    with pytest.raises(ValueError, match=r"latency.device: the device profile 'box' has no measured rows"):
        LatencyPolicy(make_spec(mode="predicted", device="box"), profile={"rows": []})


class FakeEvaluator:
    name = "fake"

    def __init__(self) -> None:
        self.measured = 0

    def latency_signature(self, c: Candidate) -> dict:
        return dict(c.params)

    def latency(self, c: Candidate, ctx: object) -> dict:
        self.measured += 1
        return {"latency_ms": true_latency(dict(c.params)), "latency_ci_ms": 0.0}


def test_resolve_latency_fills_the_metric_and_says_where_it_came_from() -> None:
    policy, ev = LatencyPolicy(make_spec(calibration=2)), FakeEvaluator()
    rng = np.random.default_rng(1)
    outs = [
        resolve_latency(
            ev, Candidate(draw(rng)), None, {"accuracy": 0.1 * i, "params": 1.0}, policy, "latency_ms"
        )
        for i in range(6)
    ]
    assert [o["latency_measured"] for o in outs[:2]] == [1.0, 1.0]
    assert all("latency_ms" in o for o in outs) and ev.measured == sum(o["latency_measured"] for o in outs)
    assert all("latency_predicted_ms" in o for o in outs[2:])
    with pytest.raises(ValueError, match=r"latency.metric is 'lat' but evaluator 'fake' measures"):
        resolve_latency(
            ev,
            Candidate({"depth": 1, "width_1": 8}),
            None,
            {"accuracy": 1.0},
            LatencyPolicy(make_spec()),
            "lat",
        )


def test_a_signature_measured_before_takes_that_measurement() -> None:
    policy, ev = LatencyPolicy(make_spec(calibration=2)), FakeEvaluator()
    first, second = {"depth": 1, "width_1": 8}, {"depth": 2, "width_1": 8, "width_2": 64}
    outs = [
        resolve_latency(ev, Candidate(p), None, {"accuracy": 0.5, "params": 1.0}, policy, "latency_ms")
        for p in (first, second, first, first)
    ]
    assert ev.measured == 2  # timed once per signature
    assert [o["latency_measured"] for o in outs] == [1.0] * 4  # a measured figure, not a prediction
    assert outs[2]["latency_ms"] == outs[3]["latency_ms"] == outs[0]["latency_ms"] == true_latency(first)
    assert "latency_predicted_ms" not in outs[2] and outs[2]["latency_error_bound"] == 0.0
    summary = policy.summary()
    assert (summary["measured"], summary["reused"], summary["predicted"]) == (2, 2, 0)
    assert len(policy.measured) == 2  # the predictor is not fitted on copies
    # the next new signature is past calibration (2 measured), not counted as a third calibration trial
    decision = policy.decide({"depth": 3, "width_1": 8, "width_2": 8, "width_3": 8}, {"accuracy": 0.1})
    assert decision.reason != "calibration" and not decision.reused


def test_profile_rows_are_reused_for_their_own_signature() -> None:
    sig = {"depth": 1, "width_1": 16}
    policy = LatencyPolicy(make_spec(), profile={"rows": [{"signature": sig, "latency_ms": 0.123}] * 2})
    d = policy.decide(dict(sig), {"accuracy": 0.5, "params": 1.0})
    assert d.reused and not d.measure and d.predicted_ms == 0.123
    assert len(policy.profile_rows) == 1  # a repeated row (a resumed study's reused trial) fits once


def test_profile_rows_count_as_calibration() -> None:
    rows = [
        {"signature": s, "latency_ms": true_latency(s)}
        for s in (draw(np.random.default_rng(i)) for i in range(6))
    ]
    policy = LatencyPolicy(make_spec(calibration=4), profile={"rows": rows})
    d = policy.decide({"depth": 1, "width_1": 8}, {"accuracy": 0.5, "params": 1.0})
    assert d.reason != "calibration" and d.predicted_ms is not None
