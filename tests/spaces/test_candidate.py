from __future__ import annotations

import optuna
import pytest

from frontier.spaces import Candidate, decode, encode, spec_from_dict, suggest

SPACE = {
    "name": "c",
    "evaluator": {"kind": "tabular"},
    "objectives": [{"name": "m", "direction": "minimize"}],
    "space": [
        {"name": "depth", "kind": "int", "low": 1, "high": 3},
        {"name": "width", "kind": "ordinal", "choices": [8, 16, 32], "per": "depth"},
        {"name": "lr", "kind": "float", "low": 1e-4, "high": 1e-1, "log": True},
        {"name": "act", "kind": "categorical", "choices": ["relu", "gelu"]},
        {
            "name": "drop",
            "kind": "float",
            "low": 0.0,
            "high": 0.5,
            "step": 0.1,
            "when": {"param": "act", "in": ["gelu"]},
        },
    ],
}


def test_suggest_respects_conditions_and_bounds_over_many_draws():
    spec = spec_from_dict(SPACE)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(200):
        trial = study.ask()
        cand = suggest(trial, spec.params)
        depth = cand["depth"]
        assert 1 <= depth <= 3
        assert all(f"width_{i}" in cand.params for i in range(1, depth + 1))
        assert not any(f"width_{i}" in cand.params for i in range(depth + 1, 4))
        assert all(cand[f"width_{i}"] in (8, 16, 32) for i in range(1, depth + 1))
        assert 1e-4 <= cand["lr"] <= 1e-1
        assert ("drop" in cand.params) == (cand["act"] == "gelu")
        study.tell(trial, 0.0)
        # the stored (raw) params decode back to the candidate
        assert decode(spec.params, study.trials[-1].params) == dict(cand.params)


def test_encode_decode_round_trip_and_errors():
    spec = spec_from_dict(SPACE)
    values = {"depth": 2, "width_1": 32, "width_2": 8, "lr": 0.01, "act": "relu"}
    raw = encode(spec.params, values)
    assert raw["width_1"] == 2 and raw["width_2"] == 0
    assert decode(spec.params, raw) == values
    with pytest.raises(ValueError, match=r"parameter 'width_1' must be one of \[8, 16, 32\], but got 12"):
        encode(spec.params, {"width_1": 12})
    with pytest.raises(ValueError, match=r"unknown parameter 'zzz'. Available:"):
        encode(spec.params, {"zzz": 1})


def test_candidate_signature_is_order_independent_and_immutable():
    a, b = Candidate({"x": 1, "y": "a"}), Candidate({"y": "a", "x": 1})
    assert a.signature() == b.signature()
    assert a.signature() != Candidate({"x": 2, "y": "a"}).signature()
    with pytest.raises(TypeError):
        a.params["x"] = 3  # type: ignore[index]
