"""Ray Tune adapter: the trainable that runs a trial's evaluation, and a Tune Searcher over our own searcher.

Ray Tune's own ``OptunaSearch`` keeps its study in memory by default and never passes constraint values
to Optuna, so Frontier drives Optuna itself (:class:`search._searcher.AskTellSearcher`: persistent storage,
constraints, failures with their reasons) and lets Ray Tune do what it is good at here: placing trials on
workers, reusing actors and stopping them through a trial scheduler (multi-fidelity studies). FIFO studies
use the same searcher on long-lived Ray actors instead (:class:`search._workers.WorkerPool`).

Across Tune, a trial's config is ``{"request": TrialRequest}``; its intermediate results carry the step's
metrics at the top level (the scheduler reads them there) and the typed step under ``PAYLOAD_KEY``; its
final result carries only the :class:`~search._protocol.TrialOutcome` under ``PAYLOAD_KEY``. Whatever Tune
adds to a result (timers, host names, the config) is never read.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from frontier.search._latency import LatencyRuntime
from frontier.search._protocol import LOST_ERROR, OutcomeKind, TrialOutcome, TrialRequest
from frontier.search._searcher import AskTellSearcher
from frontier.search._workers import STEP_KEY, evaluate_in_worker
from frontier.spaces import StudySpec

# Tune's per-trial JSON/CSV/TensorBoard loggers write several files per trial; Frontier records trials in
# Optuna and MLflow, so they only cost time.
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", "1")

from ray import tune
from ray.tune.search import Searcher

# The key of a Tune result that holds Frontier's typed payload: a (step, metrics) tuple or a TrialOutcome.
PAYLOAD_KEY = "frontier"


def _trainable(
    config: dict[str, Any],
    spec_json: str = "",
    latency: LatencyRuntime | None = None,
) -> None:
    request: TrialRequest = config["request"]

    def on_step(step: int, metrics: Mapping[str, float]) -> None:
        tune.report({**metrics, STEP_KEY: step, PAYLOAD_KEY: (step, dict(metrics))})

    outcome = evaluate_in_worker(request, spec_json, on_step=on_step, latency=latency)
    tune.report({PAYLOAD_KEY: outcome})
    if outcome.retire:
        # The timed-out evaluation still runs in this process. Its reason was reported (the searcher keeps
        # it); failing the Tune trial makes Tune stop this actor instead of reusing it for the next trial.
        raise RuntimeError("the trial timed out; its Ray worker is retired")


class TuneSearcher(Searcher):
    """Ray Tune's view of an :class:`~search._searcher.AskTellSearcher`: Tune trial ids to trial numbers,
    Tune results to :class:`~search._protocol.TrialOutcome`.

    A trial Tune ended without a final outcome was stopped by the scheduler (its last step's metrics are
    kept) or, when Tune says it errored, lost with its worker process.
    """

    def __init__(self, searcher: AskTellSearcher, run_dir: str | None = None) -> None:
        super().__init__(metric=None, mode=None)
        # not ``self.searcher``: Tune takes a searcher with that attribute for a wrapper (ConcurrencyLimiter)
        # and asks it for a get_state() on every experiment checkpoint
        self.asktell = searcher
        self.run_dir = run_dir
        self.numbers: dict[str, int] = {}
        self.steps: dict[str, list[tuple[int, Mapping[str, float]]]] = {}
        self.last: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its searcher for experiment restore; Frontier restores from Optuna instead, so the
        # live study and trials are left out.
        return {**self.__dict__, "asktell": None, "numbers": {}, "steps": {}, "last": {}}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the Optuna storage is the searcher's state."""

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to restore: :func:`search.run_study` reopens the Optuna storage."""

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        request = self.asktell.ask(self.run_dir)
        if request is None:
            return Searcher.FINISHED  # type: ignore[return-value]  # Tune's sentinel string
        self.numbers[trial_id] = request.number
        self.steps[trial_id] = []
        return {"request": request}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        payload = result.get(PAYLOAD_KEY)
        if isinstance(payload, tuple) and trial_id in self.steps:
            self.steps[trial_id].append(payload)
        self.last[trial_id] = payload

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        number = self.numbers.pop(trial_id, None)
        steps = self.steps.pop(trial_id, [])
        last = self.last.pop(trial_id, None)
        if number is None:
            return
        payload = (result or {}).get(PAYLOAD_KEY, last)
        if isinstance(payload, tuple) and (not steps or steps[-1][0] != payload[0]):
            # the step at which the scheduler stopped the trial reaches the searcher only here
            steps.append(payload)
        if isinstance(payload, TrialOutcome):
            outcome = payload
        elif error:
            outcome = TrialOutcome(OutcomeKind.LOST, error=LOST_ERROR, steps=tuple(steps))
        else:  # stopped by the scheduler at a step
            metrics = dict(steps[-1][1]) if steps else {}
            outcome = TrialOutcome(OutcomeKind.STOPPED, metrics=metrics, steps=tuple(steps))
        self.asktell.tell(number, outcome)


def _trial_name(trial: Any) -> str:
    request = trial.config.get("request")
    return f"trial-{request.number if isinstance(request, TrialRequest) else trial.trial_id}"


def run_trials(
    searcher: AskTellSearcher,
    spec: StudySpec,
    *,
    run_dir: Path,
    time_budget_s: float | None,
    scheduler: Any = None,
    latency: LatencyRuntime | None = None,
) -> None:
    """Run the searcher's trials on Ray Tune workers (``concurrency`` at once, reused actors)."""
    spec_json = json.dumps(spec.to_dict())
    resources = {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu}
    trainable = tune.with_resources(
        tune.with_parameters(_trainable, spec_json=spec_json, latency=latency),
        resources,
    )
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=TuneSearcher(searcher, run_dir=str(run_dir)),
            scheduler=scheduler,
            num_samples=-1,
            max_concurrent_trials=spec.search.concurrency,
            reuse_actors=True,
            time_budget_s=time_budget_s,
            trial_name_creator=_trial_name,
            trial_dirname_creator=_trial_name,
        ),
        run_config=tune.RunConfig(
            name=f"{spec.name}-{int(time.time())}",
            storage_path=str(run_dir / "ray_results"),
            verbose=0,
            log_to_file=True,
            failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        ),
    )
    tuner.fit()
