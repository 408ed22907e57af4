"""Kill a multi-fidelity (MO-ASHA) study's driver mid-rung with SIGKILL and resume it: the trials still to
run are stopped or promoted exactly as in an uninterrupted run, because the rungs are rebuilt from the
intermediate values stored with each trial."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from frontier.search import run_study
from frontier.search._optuna import STEPS_ATTR, open_study
from frontier.search._samplers import make_sampler
from frontier.spaces import spec_from_dict

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FRONTIER = [sys.executable, "-c", "from frontier.services._cli import main; main()"]
SHIFT = {"a": 0.0, "b": 0.3, "c": 0.6}
# The candidates, in the order every run evaluates them (enqueued, so no sampler draw differs on resume).
ORDER = [(3, "a"), (7, "c"), (1, "b"), (9, "a"), (5, "b"), (0, "c"), (8, "b"), (2, "a"), (6, "c"), (4, "a")]


def _curves(path: Path) -> Path:
    import pandas as pd

    rows = []
    for x, kind in itertools.product(range(10), "abc"):
        for step in range(1, 10):
            f1 = x / 9 + SHIFT[kind] + 1 / step
            rows.append({"x": x, "kind": kind, "step": step, "f1": f1, "f2": (1 - x / 9) ** 2 + SHIFT[kind]})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _spec(table: Path) -> dict[str, Any]:
    return {
        "name": "curves",
        "evaluator": {
            "kind": "tabular",
            "options": {
                "table": str(table),
                "metrics": {"f1": "f1", "f2": "f2"},
                "step_column": "step",
                "delay_s": 0.25,  # per step: a trial that runs to max_t takes >2 s, long enough to kill it
            },
        },
        "space": [
            {"name": "x", "kind": "int", "low": 0, "high": 9},
            {"name": "kind", "kind": "categorical", "choices": ["a", "b", "c"]},
        ],
        "objectives": [{"name": "f1", "direction": "minimize"}, {"name": "f2", "direction": "minimize"}],
        "search": {
            "sampler": "random",
            "n_trials": len(ORDER),
            "seed": 0,
            "concurrency": 1,  # one trial at a time: each rung sees its records in one order
            "scheduler": {"kind": "moasha", "grace_period": 1, "max_t": 9, "reduction_factor": 3},
        },
    }


def _prepare(raw: dict[str, Any], run_dir: Path) -> str:
    """The study's storage with every candidate enqueued in ORDER; returns its URL."""
    spec = spec_from_dict(raw)
    run_dir.mkdir(parents=True)
    storage = f"sqlite:///{run_dir / 'frontier.db'}"
    study = open_study(spec, storage, make_sampler(spec))
    for x, kind in ORDER:
        study.enqueue_trial({"x": x, "kind": kind})
    return storage


def _decisions(storage: str) -> dict[tuple[int, str], tuple[str, int]]:
    """Per candidate: how its trial ended and the last step it reported (where MO-ASHA stopped it)."""
    study = optuna.load_study(study_name="curves", storage=storage)
    out = {}
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("frontier.retried"):  # interrupted by the kill: its retry stands for it
            continue
        assert t.state in (TrialState.COMPLETE, TrialState.PRUNED), (t.number, t.state, t.user_attrs)
        assert [s for s, _ in t.user_attrs[STEPS_ATTR]] == sorted(t.intermediate_values)
        out[(t.params["x"], t.params["kind"])] = (t.state.name, max(t.intermediate_values))
    return out


def test_a_study_killed_mid_rung_resumes_with_the_same_promotions_and_stops(
    tmp_path: Path, ray_session: Any
) -> None:
    raw = _spec(_curves(tmp_path / "curves.csv"))

    reference_storage = _prepare(raw, tmp_path / "reference")
    run_study(spec_from_dict(raw), run_dir=tmp_path / "reference", track=False)
    reference = _decisions(reference_storage)
    assert len(reference) == len(ORDER)
    assert {state for state, _ in reference.values()} == {"COMPLETE", "PRUNED"}

    run_dir = tmp_path / "killed"
    storage = _prepare(raw, run_dir)
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(raw))
    cmd = [*FRONTIER, "run", str(spec_path), "--run-dir", str(run_dir), "--no-track"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        # Kill once enough trials have finished to fill the first rung, while a later one is running for
        # more than a step or two (its records exist only in the scheduler's memory).
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            time.sleep(0.2)
            study = optuna.load_study(study_name="curves", storage=storage)
            trials = study.get_trials(deepcopy=False)
            finished = [t for t in trials if t.state.is_finished()]
            running = [t for t in trials if t.state == TrialState.RUNNING and t.datetime_start is not None]
            if len(finished) >= 4 and running:
                started = running[0].datetime_start
                if (time.time() - started.timestamp()) > 0.8 or len(finished) >= 7:
                    break
        else:
            pytest.fail("the study did not get going within 240 s")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and every Ray process it started
        proc.wait(30)
    study = optuna.load_study(study_name="curves", storage=storage)
    interrupted = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    judged = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(interrupted) == 1 and len(judged) >= 4

    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=300)  # the same run resumes
    assert _decisions(storage) == reference
