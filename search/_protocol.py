"""The engine/worker seam: what the driver sends a worker for one trial, and what comes back.

The driver's searcher (:class:`search._searcher.AskTellSearcher`) turns an Optuna trial into a
:class:`TrialRequest`; a worker (:func:`search._workers.evaluate_in_worker`, on a FIFO pool's actor or in a
Ray Tune trainable) evaluates it and answers with a :class:`TrialOutcome`, whose :class:`OutcomeKind` says
how the trial ended; the searcher tells Optuna. Both are frozen and picklable (they cross Ray's object
store), and hold only plain values.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class OutcomeKind(enum.Enum):
    """How a trial ended."""

    COMPLETED = "completed"
    """The evaluation returned its metrics (they may still lack an objective: Optuna then fails it)."""
    FAILED = "failed"
    """The evaluation raised, or outlived ``search.trial_timeout_s``; ``TrialOutcome.error`` says why."""
    STOPPED = "stopped"
    """A multi-fidelity scheduler stopped it early (Optuna: PRUNED); its last step's metrics are kept."""
    LOST = "lost"
    """The worker process running it died (a crash, the OOM killer): run once more, as not its own fault."""


@dataclass(frozen=True)
class TrialRequest:
    """One trial for a worker.

    Attributes:
        number: the persistent Optuna trial number.
        params: the candidate's parameter values (``Candidate.params``).
        seed: the trial's seed (:func:`search._workers.trial_seed`).
        threads: CPU threads the trial may use.
        device: ``"cpu"`` or ``"cuda"``.
        timeout_s: ``search.trial_timeout_s`` (the evaluation alone).
        setup_timeout_s: ``search.setup_timeout_s`` (a worker's first setup).
        run_dir: the study's run directory (the trial's ``EvalContext.workdir`` lies under it), or None.
    """

    number: int
    params: Mapping[str, Any]
    seed: int
    threads: int = 1
    device: str = "cpu"
    timeout_s: float | None = None
    setup_timeout_s: float | None = None
    run_dir: str | None = None


@dataclass(frozen=True)
class TrialOutcome:
    """How one trial ended, with its metrics.

    Attributes:
        kind: how it ended.
        metrics: the evaluator's numeric metrics (for STOPPED, its last step's; may be empty on failure).
        error: the reason, for FAILED and LOST.
        steps: the intermediate reports, ``(step, metrics)`` in the order made (multi-fidelity).
        retire: the evaluation still runs in the worker's process (it timed out), which must be replaced.
    """

    kind: OutcomeKind
    metrics: Mapping[str, float] = field(default_factory=dict)
    error: str | None = None
    steps: tuple[tuple[int, Mapping[str, float]], ...] = ()
    retire: bool = False

    @classmethod
    def failed(cls, error: str, **kwargs: Any) -> TrialOutcome:
        return cls(OutcomeKind.FAILED, error=error, **kwargs)


LOST_ERROR = "the Ray worker running this trial died (see Ray logs)"
