from __future__ import annotations

import pandas as pd
import pytest

from frontier.evaluators import EvalContext, make_evaluator
from frontier.spaces import Candidate, SpecError


def ev(table, **opts):
    e = make_evaluator("tabular", {"table": str(table), "metrics": {"f1": "f1", "cost": "cost"}, **opts})
    e.check_params({"x", "kind"})
    e.ensure_setup()
    return e


def test_lookup_returns_the_row(table):
    out = ev(table).evaluate(Candidate({"x": 3, "kind": "b"}), EvalContext())
    assert out == pytest.approx({"f1": 3 / 9 + 0.3, "cost": 30.0})


def test_float_and_int_keys_match(table):
    assert ev(table).evaluate(Candidate({"x": 3.0, "kind": "a"}), EvalContext())["cost"] == 30.0


def test_missing_candidate_fails_clearly(tmp_path, make_table):
    t = make_table(tmp_path / "t.csv", missing=(2, "c"))
    with pytest.raises(LookupError, match=r"candidate \{'x': 2, 'kind': 'c'\} is not in the table"):
        ev(t).evaluate(Candidate({"x": 2, "kind": "c"}), EvalContext())


def test_inactive_parameter_matches_empty_cell(tmp_path):
    path = tmp_path / "cond.csv"
    pd.DataFrame(
        [
            {"arch": "mlp", "kernel": None, "acc": 0.9},
            {"arch": "cnn", "kernel": 3, "acc": 0.95},
            {"arch": "cnn", "kernel": 5, "acc": 0.96},
        ]
    ).to_csv(path, index=False)
    e = make_evaluator("tabular", {"table": str(path), "metrics": {"acc": "acc"}})
    e.check_params({"arch", "kernel"})
    e.ensure_setup()
    assert e.evaluate(Candidate({"arch": "mlp"}), EvalContext())["acc"] == 0.9
    assert e.evaluate(Candidate({"arch": "cnn", "kernel": 5}), EvalContext())["acc"] == 0.96


def test_seed_column_gives_one_seeds_noisy_observation(tmp_path):
    path = tmp_path / "seeds.csv"
    pd.DataFrame([{"x": 1, "seed": s, "acc": 0.5 + 0.1 * s} for s in range(3)]).to_csv(path, index=False)
    e = make_evaluator("tabular", {"table": str(path), "metrics": {"acc": "acc"}, "seed_column": "seed"})
    e.check_params({"x"})
    e.ensure_setup()
    seen = {e.evaluate(Candidate({"x": 1}), EvalContext(seed=s))["acc"] for s in range(40)}
    assert sorted(seen) == pytest.approx([0.5, 0.6, 0.7])
    # the same trial seed always observes the same row
    assert len({e.evaluate(Candidate({"x": 1}), EvalContext(seed=5))["acc"] for _ in range(5)}) == 1


def test_option_errors(table, tmp_path):
    with pytest.raises(
        SpecError, match=r"evaluator.options.table: .*must be a .csv or .parquet file, but got 'x.txt'"
    ):
        make_evaluator("tabular", {"table": "x.txt", "metrics": {"a": "a"}})
    with pytest.raises(SpecError, match=r"evaluator.options.metrics: field required"):
        make_evaluator("tabular", {"table": "x.csv"})
    e = make_evaluator("tabular", {"table": str(tmp_path / "none.csv"), "metrics": {"a": "a"}})
    with pytest.raises(FileNotFoundError, match="table not found"):
        e.ensure_setup()
    e = make_evaluator("tabular", {"table": str(table), "metrics": {"acc": "accuracy"}})
    with pytest.raises(ValueError, match=r"metric columns \['accuracy'\] are not in t"):
        e.ensure_setup()


def test_unknown_evaluator_lists_available():
    with pytest.raises(
        ValueError, match=r"Unknown evaluator 'nope'. Available: \['digits-classifier', .*'tabular'"
    ):
        make_evaluator("nope", {})
