"""The study spec's ``latency:`` section: defaults, validation, errors that name the field."""

from __future__ import annotations

import pytest

from frontier.spaces import LatencyConfig, SpecError, spec_from_dict

BASE = {
    "name": "x",
    "evaluator": {"kind": "digits-classifier"},
    "space": [{"name": "depth", "kind": "int", "low": 1, "high": 2}],
    "objectives": [
        {"name": "accuracy", "direction": "maximize"},
        {"name": "latency_ms", "direction": "minimize"},
    ],
}


def test_default_is_measured_and_round_trips() -> None:
    spec = spec_from_dict(BASE)
    assert spec.latency == LatencyConfig() and spec.latency.mode == "measured"
    full = {"mode": "hybrid", "device": "pi4", "batch_size": 8, "input_shape": [64], "predictor": "regressor"}
    spec = spec_from_dict({**BASE, "latency": full})
    assert spec.latency.input == (64,) and spec_from_dict(spec.to_dict()) == spec
    assert spec_from_dict({**BASE, "latency": {"seq_len": 128}}).latency.input == (128,)


@pytest.mark.parametrize(
    ("latency", "message"),
    [
        (
            {"mode": "guess"},
            r"latency.mode: Input should be 'measured', 'predicted' or 'hybrid' \(got 'guess'\)",
        ),
        ({"mode": "predicted"}, r"latency: mode 'predicted' needs a device profile: set latency.device"),
        ({"seq_len": 3, "input_shape": [1]}, r"latency: give either seq_len or input_shape, not both"),
        ({"input_shape": [3, 0]}, r"latency.input_shape: every dimension must be >= 1, but got \[3, 0\]"),
        ({"batch_size": 0}, r"latency.batch_size: Input should be greater than or equal to 1"),
        (
            {"mode": "hybrid", "metric": "lat"},
            r"latency: mode 'hybrid' predicts .* 'lat' is not an objective",
        ),
        ({"margin": 2}, r"latency.margin: Input should be less than or equal to 1"),
        ({"device": "a/b"}, r"latency.device: String should match pattern"),
        ({"lanes": True}, r"latency.lanes: unknown field; allowed fields: \["),
    ],
)
def test_bad_latency_sections_name_the_field(latency: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        spec_from_dict({**BASE, "latency": latency})
