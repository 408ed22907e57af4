from __future__ import annotations

import pytest

from frontier.evaluators import EvalContext, TrialStopped, make_evaluator
from frontier.spaces import Candidate


@pytest.fixture(scope="module")
def digits():
    e = make_evaluator("digits-classifier", {"epochs": 3, "latency_time_cap_s": 0.3})
    e.ensure_setup()
    return e


@pytest.mark.parametrize(
    "params",
    [
        {"depth": 2, "width_1": 32, "width_2": 16, "activation": "gelu"},
        {"arch": "cnn", "depth": 2, "width_1": 8, "width_2": 16, "kernel": 3},
    ],
)
def test_trains_and_measures(digits, params):
    history = []
    out = digits.evaluate(
        Candidate(params), EvalContext(seed=0, reporter=lambda s, m: history.append(s) or True)
    )
    assert 0.7 < out["accuracy"] <= 1.0  # 10 classes: chance is 0.1
    assert out["latency_ms"] > 0 and out["latency_ci_ms"] >= 0
    assert out["params"] == sum(p.numel() for p in digits.build(Candidate(params)).parameters())
    assert out["flops"] > 2 * out["params"] * 0.5
    assert history == [1, 2, 3]


def test_mlp_flops_are_exact(digits):
    out = digits.evaluate(Candidate({"depth": 1, "width_1": 16}), EvalContext(seed=0))
    assert out["flops"] == 2 * (64 * 16 + 16 * 10)


def test_same_seed_same_accuracy(digits):
    c = Candidate({"depth": 1, "width_1": 16})
    assert (
        digits.evaluate(c, EvalContext(seed=4))["accuracy"]
        == digits.evaluate(c, EvalContext(seed=4))["accuracy"]
    )


def test_scheduler_stop_propagates(digits):
    with pytest.raises(TrialStopped, match="stopped by the scheduler at step 1"):
        digits.evaluate(Candidate({"depth": 1}), EvalContext(reporter=lambda s, m: False))


def test_unknown_params_and_arch_are_rejected(digits):
    with pytest.raises(ValueError, match=r"does not use parameters \['colour'\]"):
        digits.check_params({"depth", "width_1", "colour"})
    with pytest.raises(ValueError, match=r"arch must be one of \['mlp', 'cnn'\], but got 'rnn'"):
        digits.build(Candidate({"arch": "rnn"}))
