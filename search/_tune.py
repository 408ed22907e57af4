"""Ray Tune adapter: our Optuna ask/tell Searcher and the trainable that runs an evaluator.

Ray Tune's own ``OptunaSearch`` keeps its study in memory by default and never passes constraint values
to Optuna, so Frontier drives Optuna itself through this Searcher (persistent storage, constraints,
failures with their reasons) and lets Ray Tune do what it is good at: placing trials on workers, reusing
actors, and (multi-fidelity) stopping them through a trial scheduler. Studies without a trial scheduler
use the same Searcher on long-lived Ray actors instead (:class:`search._workers.WorkerPool`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from frontier.search._latency import MEASURED_KEY, SOURCE_ATTR, LatencyRuntime
from frontier.search._optuna import RETRIED_ATTR, RETRY_OF_ATTR, LiveTrial, WriteThroughStudy, tell_result
from frontier.search._workers import DONE_KEY, ERROR_KEY, evaluate_in_worker, trial_seed
from frontier.spaces import StudySpec

# Tune's per-trial JSON/CSV/TensorBoard loggers write several files per trial; Frontier records trials in
# Optuna and MLflow, so they only cost time.
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", "1")

from ray import tune
from ray.tune.search import Searcher


def _trainable(
    config: dict[str, Any],
    spec_json: str = "",
    latency: LatencyRuntime | None = None,
    run_dir: str | None = None,
) -> None:
    # the study's run directory travels as the FIFO pool passes it (config["run_dir"]): it gives the
    # evaluator its EvalContext.workdir (e.g. lm-train's keep_weights)
    if evaluate_in_worker({**config, "run_dir": run_dir}, spec_json, tune.report, latency):
        # The timed-out evaluation still runs in this process. Its reason was reported (the searcher keeps
        # it); failing the Tune trial makes Tune stop this actor instead of reusing it for the next trial.
        raise RuntimeError("the trial timed out; its Ray worker is retired")


class AskTellSearcher(Searcher):
    """A Ray Tune Searcher that asks a persistent Optuna study for candidates and tells it the results.

    Args:
        study: the Optuna study on its persistent storage; the sampler works on an in-memory copy that
            writes through to it (:class:`search._optuna.WriteThroughStudy`).
        sampler: the Optuna sampler.
        spec: the study spec (parameters, objectives, constraints).
        budget: how many trials to start in this run (the stored ones already count).
        deadline: ``time.monotonic()`` after which no trial starts.
        on_finished: called with each finished FrozenTrial (progress, tracking).

    A trial whose worker process died is run once more with the same parameters (it fails with the
    reason, and its retry, asked for next, links to it: ``search._optuna.RETRY_OF_ATTR``); the budget
    grows by one for it, as a failure that was not the candidate's own.
    """

    def __init__(
        self,
        study: optuna.Study,
        spec: StudySpec,
        *,
        sampler: optuna.samplers.BaseSampler,
        budget: int,
        deadline: float | None = None,
        on_finished: Callable[[FrozenTrial], None] | None = None,
    ) -> None:
        super().__init__(metric=None, mode=None)
        self.study = WriteThroughStudy(study, sampler)
        self.spec = spec
        self.params = spec.params
        self.budget = budget
        self.deadline = deadline
        self.on_finished = on_finished
        self.issued = 0
        self.live: dict[str, LiveTrial] = {}
        self.last: dict[str, dict[str, Any]] = {}
        self.threads = max(1, int(spec.resources.cpu))

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its searcher for experiment restore; Frontier restores from Optuna instead, so the
        # live study, callbacks and trials are left out.
        state = self.__dict__.copy()
        for key in ("study", "on_finished", "live"):
            state[key] = None if key != "live" else {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the Optuna storage is the searcher's state."""

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to restore: :func:`search.run_study` reopens the Optuna storage."""

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self.issued >= self.budget or (self.deadline is not None and time.monotonic() >= self.deadline):
            return Searcher.FINISHED  # type: ignore[return-value]  # Tune's sentinel string
        live, candidate = self.study.ask(self.params)
        self.live[trial_id] = live
        self.issued += 1
        return {
            "params": dict(candidate.params),
            "number": live.number,
            "seed": trial_seed(self.spec.search.seed, live.number),
            "threads": self.threads,
            "timeout_s": self.spec.search.trial_timeout_s,
            "setup_timeout_s": self.spec.search.setup_timeout_s,
            "device": "cuda" if self.spec.resources.gpu > 0 else "cpu",
        }

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.last[trial_id] = result

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        live = self.live.pop(trial_id, None)
        last = self.last.pop(trial_id, None)
        if live is None:
            return
        memory, trial = self.study.memory, live.trial
        result = result or last or {}
        metrics = _strip(
            {k: v for k, v in result.items() if isinstance(v, int | float) and not k.startswith("frontier")}
        )
        if ERROR_KEY in result:
            frozen = tell_result(memory, trial, self.spec, metrics, error=str(result[ERROR_KEY]))
        elif error:
            if RETRY_OF_ATTR not in trial.user_attrs:
                self.study.retry(live)
                trial.set_user_attr(RETRIED_ATTR, True)
                self.budget += 1
            frozen = tell_result(
                memory,
                trial,
                self.spec,
                metrics,
                error="the Ray worker running this trial died (see Ray logs)",
            )
        elif DONE_KEY not in result:
            frozen = tell_result(memory, trial, self.spec, metrics, pruned=True)
        else:
            if MEASURED_KEY in metrics:  # latency.mode predicted/hybrid: an MLflow tag says which
                trial.set_user_attr(SOURCE_ATTR, "measured" if metrics[MEASURED_KEY] else "predicted")
            frozen = tell_result(memory, trial, self.spec, metrics)
        frozen = self.study.persist(live, frozen)
        if self.on_finished is not None:
            self.on_finished(frozen)

    def abandon_live(self, reason: str) -> None:
        """Fail trials Tune never completed (e.g. the study's time budget ran out while they ran)."""
        for trial_id in list(self.live):
            live = self.live.pop(trial_id)
            frozen = tell_result(self.study.memory, live.trial, self.spec, None, error=reason)
            frozen = self.study.persist(live, frozen)
            if self.on_finished is not None:
                self.on_finished(frozen)


_TUNE_KEYS = {
    "training_iteration",
    "time_this_iter_s",
    "time_total_s",
    "timestamp",
    "pid",
    "time_since_restore",
    "iterations_since_restore",
    "done",
    "date",
    "hostname",
    "node_ip",
    "trial_id",
    "experiment_tag",
    "checkpoint_dir_name",
    "should_checkpoint",
}


def _strip(metrics: dict[str, Any]) -> dict[str, float]:
    """The evaluator's metrics, without what Ray Tune adds to every result (its timers, the config)."""
    return {k: float(v) for k, v in metrics.items() if k not in _TUNE_KEYS and not k.startswith("config/")}


def _trial_name(trial: Any) -> str:
    return f"trial-{trial.config.get('number', trial.trial_id)}"


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
        tune.with_parameters(_trainable, spec_json=spec_json, latency=latency, run_dir=str(run_dir)),
        resources,
    )
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
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
