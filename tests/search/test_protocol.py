"""The engine/worker seam in-process (no Ray): a TrialRequest in, a TrialOutcome of each kind out."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from frontier.search._protocol import OutcomeKind, TrialRequest
from frontier.search._workers import evaluate_in_worker


def _spec_json(tmp_path: Path, delay_s: float = 0.0) -> str:
    rows = [f"{x},{step},{x + 1 / step},{10 - x}" for x in range(3) for step in (1, 2, 3)]
    (tmp_path / "curves.csv").write_text("\n".join(["x,step,f1,f2", *rows]) + "\n")
    options = {
        "table": str(tmp_path / "curves.csv"),
        "metrics": {"f1": "f1", "f2": "f2"},
        "step_column": "step",
    }
    return json.dumps(
        {
            "name": "seam",
            "evaluator": {"kind": "tabular", "options": {**options, "delay_s": delay_s}},
            "space": [{"name": "x", "kind": "int", "low": 0, "high": 5}],
            "objectives": [{"name": "f1", "direction": "minimize"}, {"name": "f2", "direction": "minimize"}],
        }
    )


def test_a_completed_trial_returns_its_metrics_and_every_step(tmp_path: Path) -> None:
    seen: list[int] = []
    outcome = evaluate_in_worker(
        TrialRequest(number=4, params={"x": 1}, seed=0),
        _spec_json(tmp_path),
        on_step=lambda s, m: seen.append(s),
    )
    assert outcome.kind is OutcomeKind.COMPLETED and not outcome.retire and outcome.error is None
    assert outcome.metrics == {"f1": pytest.approx(1 + 1 / 3), "f2": 9.0}
    assert [s for s, _ in outcome.steps] == seen == [1, 2, 3]
    assert outcome.steps[0][1] == {"f1": 2.0, "f2": 9.0}


def test_an_evaluator_error_fails_the_trial_with_its_reason(tmp_path: Path) -> None:
    outcome = evaluate_in_worker(TrialRequest(number=0, params={"x": 5}, seed=0), _spec_json(tmp_path))
    assert outcome.kind is OutcomeKind.FAILED and not outcome.retire
    assert outcome.error is not None and outcome.error.startswith("LookupError: candidate {'x': 5} is not in")


def test_a_timed_out_trial_fails_and_retires_its_worker(tmp_path: Path) -> None:
    request = TrialRequest(number=0, params={"x": 0}, seed=0, timeout_s=0.5)
    t0 = time.monotonic()
    outcome = evaluate_in_worker(request, _spec_json(tmp_path, delay_s=3.0))
    assert time.monotonic() - t0 < 2.9  # answered at the timeout, not after the evaluation
    assert outcome.kind is OutcomeKind.FAILED and outcome.retire
    assert "longer than search.trial_timeout_s=0.5" in (outcome.error or "")


def test_a_step_callback_that_raises_stops_the_evaluation_and_propagates(tmp_path: Path) -> None:
    class Stop(Exception):
        pass

    def stop_at_2(step: int, metrics: object) -> None:
        if step == 2:
            raise Stop

    with pytest.raises(Stop):
        evaluate_in_worker(
            TrialRequest(number=0, params={"x": 2}, seed=0), _spec_json(tmp_path), on_step=stop_at_2
        )
