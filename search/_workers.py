"""Ray actors for studies without a trial scheduler: ``concurrency`` long-lived workers, one call per trial.

A Ray Tune trial costs the driver and the worker tens of milliseconds of bookkeeping (a Trial object, a
placement group created and removed, registry look-ups in the GCS, an actor reset and a new runner thread
and session in the worker). A trial scheduler needs that machinery, so multi-fidelity studies keep Ray Tune
(:func:`search._tune.run_trials`); a FIFO study only needs a worker with the study's resources, so it keeps
``concurrency`` Ray actors and sends each one trial at a time. The worker runs the same
:func:`search._tune.evaluate_in_worker`, so failures, NaN metrics and ``trial_timeout_s`` end a trial exactly
as under Ray Tune; a worker process that dies fails its trial ("the Ray worker running this trial died") and
is replaced.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from search._latency import LatencyRuntime
from search._tune import ERROR_KEY, AskTellSearcher, evaluate_in_worker
from spaces import StudySpec

log = logging.getLogger(__name__)

# A worker whose trial outlives trial_timeout_s by this much did not return from its own timeout handling
# (the evaluation is stuck outside Python, where the timeout cannot interrupt it): the driver kills it.
HARD_TIMEOUT_GRACE_S = 60.0


class TrialWorker:
    """A Ray actor that evaluates one trial per call; its evaluator is set up once and reused."""

    def __init__(self, spec_json: str, latency: LatencyRuntime | None = None) -> None:
        self.spec_json = spec_json
        self.latency = latency

    def ready(self) -> bool:
        """Answered once the worker process is up (trials are handed only to workers that are)."""
        return True

    def evaluate(self, config: dict[str, Any]) -> dict[str, Any]:
        """Run one trial; return its last report (metrics and done, an error, or the last step's metrics)."""
        last: dict[str, Any] = {}

        def report(result: dict[str, Any]) -> None:
            last.clear()
            last.update(result)

        evaluate_in_worker(config, self.spec_json, report, self.latency)
        return last


def run_pool(
    searcher: AskTellSearcher,
    spec: StudySpec,
    *,
    latency: LatencyRuntime | None = None,
) -> None:
    """Run the searcher's trials on ``spec.search.concurrency`` Ray actors until its budget or deadline.

    A trial is asked for only when a worker is free to run it at once, so the hard timeout (see
    ``HARD_TIMEOUT_GRACE_S``) counts from its start. Trials still running at the searcher's deadline are left
    to ``searcher.abandon_live``, as Ray Tune's ``time_budget_s`` leaves them; the actors are killed on the
    way out, also on an interrupt.

    Raises:
        RuntimeError: a worker could not be started (its actor died before answering).
    """
    import ray
    from ray.exceptions import RayActorError, RayTaskError

    worker = ray.remote(TrialWorker).options(  # type: ignore[attr-defined]
        num_cpus=spec.resources.cpu, num_gpus=spec.resources.gpu, max_restarts=0
    )
    spec_json = json.dumps(spec.to_dict())
    timeout = spec.search.trial_timeout_s
    starting: dict[Any, Any] = {}  # ready() ref -> actor
    idle: list[Any] = []
    running: dict[Any, tuple[str, Any, float | None]] = {}  # evaluate() ref -> trial id, actor, hard deadline

    def spawn() -> None:
        actor = worker.remote(spec_json, latency)
        starting[actor.ready.remote()] = actor  # type: ignore[attr-defined]

    for _ in range(spec.search.concurrency):
        spawn()
    issued = 0
    exhausted = False
    try:
        while True:
            while idle and not exhausted:
                trial_id = f"trial_{issued:05d}"
                config = searcher.suggest(trial_id)
                if not isinstance(config, dict):  # Searcher.FINISHED: budget or deadline reached
                    exhausted = True
                    break
                issued += 1
                actor = idle.pop()
                hard = None if timeout is None else time.monotonic() + timeout + HARD_TIMEOUT_GRACE_S
                running[actor.evaluate.remote(config)] = (trial_id, actor, hard)
            if not running and (exhausted or not starting):
                return
            now = time.monotonic()
            ends = [
                d for d in (searcher.deadline, *(hard for _, _, hard in running.values())) if d is not None
            ]
            wait = max(0.0, min(ends) - now) if ends else None
            ready, _ = ray.wait([*running, *starting], num_returns=1, timeout=wait)
            if not ready:
                now = time.monotonic()
                if searcher.deadline is not None and now >= searcher.deadline:
                    return  # the study's time budget is spent: the running trials are abandoned
                for ref, (trial_id, actor, hard) in list(running.items()):
                    if hard is not None and now >= hard:
                        del running[ref]
                        ray.kill(actor)
                        error = (
                            f"TimeoutError: the trial ran longer than search.trial_timeout_s={timeout} and "
                            f"did not stop within {HARD_TIMEOUT_GRACE_S:g} s more; its worker was killed"
                        )
                        searcher.on_trial_complete(trial_id, {ERROR_KEY: error})
                        spawn()
                continue
            for ref in ready:
                if ref in starting:
                    actor = starting.pop(ref)
                    try:
                        ray.get(ref)
                    except RayActorError as exc:
                        raise RuntimeError(
                            f"a Ray worker for this study could not be started: {exc}"
                        ) from exc
                    idle.append(actor)
                    continue
                trial_id, actor, _ = running.pop(ref)
                try:
                    result = ray.get(ref)
                except RayActorError:  # the worker process died (crash, OOM kill): replace it
                    searcher.on_trial_complete(trial_id, None, error=True)
                    spawn()
                    continue
                except RayTaskError as exc:  # raised outside the evaluation (which reports its own errors)
                    searcher.on_trial_complete(trial_id, {ERROR_KEY: f"{type(exc).__name__}: {exc}"})
                else:
                    searcher.on_trial_complete(trial_id, result)
                idle.append(actor)
    finally:
        for actor in [*starting.values(), *idle, *(actor for _, actor, _ in running.values())]:
            ray.kill(actor)
