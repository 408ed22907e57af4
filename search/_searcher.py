"""Frontier's searcher: asks a persistent Optuna study for candidates and tells it the outcomes.

A plain ask/tell class over the typed trial protocol (:mod:`search._protocol`); the FIFO worker pool
drives it directly, and Ray Tune through a thin adapter (:class:`search._tune.TuneSearcher`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import optuna
from optuna.trial import FrozenTrial

from frontier.search._latency import MEASURED_KEY, SOURCE_ATTR
from frontier.search._optuna import (
    RETRIED_ATTR,
    RETRY_OF_ATTR,
    LiveTrial,
    WriteThroughStudy,
    tell_result,
    with_steps,
)
from frontier.search._protocol import LOST_ERROR, OutcomeKind, TrialOutcome, TrialRequest
from frontier.search._workers import trial_seed
from frontier.spaces import StudySpec


class AskTellSearcher:
    """Asks a persistent Optuna study for candidates (:meth:`ask`) and records their outcomes (:meth:`tell`).

    Args:
        study: the Optuna study on its persistent storage; the sampler works on an in-memory copy that
            writes through to it (:class:`search._optuna.WriteThroughStudy`).
        spec: the study spec (parameters, objectives, constraints).
        sampler: the Optuna sampler.
        budget: how many trials to start in this run (the stored ones already count).
        deadline: ``time.monotonic()`` after which no trial starts.
        on_finished: called with each finished FrozenTrial (progress, tracking).

    A trial whose worker process died (:attr:`OutcomeKind.LOST`) is run once more with the same parameters
    (it fails with the reason, and its retry, asked for next, links to it: ``search._optuna.RETRY_OF_ATTR``);
    the budget grows by one for it, as a failure that was not the candidate's own.
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
        self.study = WriteThroughStudy(study, sampler)
        self.spec = spec
        self.budget = budget
        self.deadline = deadline
        self.on_finished = on_finished
        self.issued = 0
        self.live: dict[int, LiveTrial] = {}
        self.threads = max(1, int(spec.resources.cpu))

    def ask(self, run_dir: str | None = None) -> TrialRequest | None:
        """The next trial to run, created RUNNING in storage; None once the budget or deadline is reached."""
        if self.issued >= self.budget or (self.deadline is not None and time.monotonic() >= self.deadline):
            return None
        live, candidate = self.study.ask(self.spec.params)
        self.live[live.number] = live
        self.issued += 1
        return TrialRequest(
            number=live.number,
            params=dict(candidate.params),
            seed=trial_seed(self.spec.search.seed, live.number),
            threads=self.threads,
            timeout_s=self.spec.search.trial_timeout_s,
            setup_timeout_s=self.spec.search.setup_timeout_s,
            device="cuda" if self.spec.resources.gpu > 0 else "cpu",
            run_dir=run_dir,
        )

    def tell(self, number: int, outcome: TrialOutcome) -> FrozenTrial | None:
        """Record trial ``number``'s outcome in Optuna (storage and the sampler's view); None if not live."""
        live = self.live.pop(number, None)
        if live is None:
            return None
        memory, trial, spec = self.study.memory, live.trial, self.spec
        metrics = dict(outcome.metrics)
        if outcome.kind is OutcomeKind.FAILED:
            frozen = tell_result(memory, trial, spec, metrics, error=outcome.error or "the trial failed")
        elif outcome.kind is OutcomeKind.LOST:
            if RETRY_OF_ATTR not in trial.user_attrs:
                self.study.retry(live)
                trial.set_user_attr(RETRIED_ATTR, True)
                self.budget += 1
            frozen = tell_result(memory, trial, spec, metrics, error=outcome.error or LOST_ERROR)
        elif outcome.kind is OutcomeKind.STOPPED:
            frozen = tell_result(memory, trial, spec, metrics, pruned=True)
        else:
            if MEASURED_KEY in metrics:  # latency.mode predicted/hybrid: an MLflow tag says which
                trial.set_user_attr(SOURCE_ATTR, "measured" if metrics[MEASURED_KEY] else "predicted")
            frozen = tell_result(memory, trial, spec, metrics)
        if outcome.steps:
            frozen = with_steps(frozen, outcome.steps, spec)
        frozen = self.study.persist(live, frozen)
        if self.on_finished is not None:
            self.on_finished(frozen)
        return frozen

    def abandon_live(self, reason: str) -> None:
        """Fail the trials still running (e.g. the study's time budget ran out while they ran)."""
        for number in list(self.live):
            self.tell(number, TrialOutcome.failed(reason))
