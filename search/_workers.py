"""Ray workers: a trial's evaluation in a worker process, and the actors that run FIFO studies.

:func:`evaluate_in_worker` runs one evaluation (a :class:`search._protocol.TrialRequest`) with its timeout and
intermediate reports and returns its :class:`search._protocol.TrialOutcome`, for both kinds of worker. A Ray
Tune trial costs the driver and the worker tens of milliseconds of bookkeeping (a Trial object, a placement
group created and removed, registry look-ups in the GCS, an actor reset and a new runner thread and session
in the worker). A trial scheduler needs that machinery, so multi-fidelity studies
keep Ray Tune (:func:`search._tune.run_trials`); a FIFO study only needs a worker with the study's
resources, so a :class:`WorkerPool` keeps ``concurrency`` Ray actors and sends each one trial at a time.
Failures, NaN metrics and ``trial_timeout_s`` end a trial exactly as under Ray Tune; a worker process that
dies fails its trial ("the Ray worker running this trial died") and is replaced.

A worker sets its evaluator up (:meth:`Evaluator.ensure_setup`: models, data, compiled kernels) once, before
its first trial and outside the trial's clock, within ``search.setup_timeout_s``; ``trial_timeout_s`` counts
the evaluation alone. A trial past its timeout is not interrupted inside its process (an exception raised
into a running thread can leave a module half-imported, and the next trial in that process crashed): the
trial fails with the reason and its worker process is retired, a fresh one taking its place.

This module does not import Ray Tune: a worker process that imports it starts ~1.4 s sooner.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from frontier.search._latency import LatencyRuntime, resolve_latency
from frontier.search._protocol import LOST_ERROR, OutcomeKind, TrialOutcome, TrialRequest
from frontier.spaces import StudySpec, spec_from_dict

if TYPE_CHECKING:
    from frontier.search._searcher import AskTellSearcher

log = logging.getLogger(__name__)

# The progress key of a trial's intermediate reports (the multi-fidelity scheduler's ``time_attr``).
STEP_KEY = "frontier_step"

_EVALUATORS: dict[str, Any] = {}


def trial_seed(study_seed: int | None, number: int) -> int:
    digest = hashlib.sha256(f"{study_seed or 0}:{number}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def trial_workdir(run_dir: str | Path, study: str, number: int) -> Path:
    """A trial's work directory (``EvalContext.workdir``): ``<run_dir>/trials/<study>/<number>``. Created by
    the evaluator that writes there (``lm-train`` with ``keep_weights``), not for every trial."""
    return Path(run_dir) / "trials" / study / str(number)


def _worker_evaluator(spec_json: str, latency: LatencyRuntime | None = None) -> Any:
    """One evaluator per worker process and spec (:func:`evaluators.for_spec`, set up once, its setup holding
    the node's measurement lane shared), reused across trials (actor reuse).

    The evaluator is kept only once its setup has finished, so a setup that failed is tried afresh.
    """
    key = hashlib.sha256(spec_json.encode()).hexdigest()
    ev = _EVALUATORS.get(key)
    if ev is not None:
        return ev
    from frontier.evaluators import for_spec

    lane = latency.context_kwargs(cache=False)["lane"] if latency is not None else None
    ev = for_spec(spec_from_dict(json.loads(spec_json)), lane=lane)
    _EVALUATORS.clear()
    _EVALUATORS[key] = ev
    return ev


def setup_error(timeout: float | None, elapsed: float) -> str:
    """The reason given when a worker's setup outlives ``search.setup_timeout_s``."""
    return (
        f"TimeoutError: a Ray worker's evaluator setup (loading models and data, compiling kernels) ran "
        f"{elapsed:.0f} s, longer than search.setup_timeout_s={timeout:g}; the machine may be busy or the "
        "setup stuck. Raise search.setup_timeout_s (--set search.setup_timeout_s=...) or free the machine"
    )


def trial_timeout_error(timeout: float | None) -> str:
    """The reason a trial that outlived ``search.trial_timeout_s`` fails with."""
    return (
        f"TimeoutError: the trial's evaluation ran longer than search.trial_timeout_s={timeout}; its worker "
        "process was retired and a fresh one replaces it"
    )


def evaluate_in_worker(
    request: TrialRequest,
    spec_json: str,
    *,
    on_step: Callable[[int, Mapping[str, float]], None] | None = None,
    latency: LatencyRuntime | None = None,
) -> TrialOutcome:
    """Run one evaluation and return how it ended (metrics, an error, a timeout), with its intermediate steps.

    ``request.run_dir`` (the study's run directory) gives the trial its ``EvalContext.workdir``
    (:func:`trial_workdir`); without it the evaluator sees ``workdir=None``.

    The evaluation runs in a thread so that intermediate reports and the per-trial timeout are handled
    here, on the caller's own thread (where Ray Tune expects ``tune.report`` to be called: ``on_step``). The
    worker's first call sets the evaluator up first, within ``request.setup_timeout_s``; the trial's clock
    (``request.timeout_s``) starts when setup is done. ``on_step`` may raise to stop the trial (Ray Tune's
    scheduler does): the evaluation thread is stopped at its next report and the exception propagates.

    A timed-out outcome has ``retire`` set: the evaluation thread still runs, and the caller must retire
    this process, since a Python thread cannot be stopped safely from outside.
    """
    from frontier.evaluators import EvalContext, TrialStopped
    from frontier.spaces import Candidate

    events: queue.Queue[tuple[str, Any]] = queue.Queue()
    proceed: queue.Queue[bool] = queue.Queue()
    steps: list[tuple[int, Mapping[str, float]]] = []

    def reporter(step: int, metrics: Mapping[str, float]) -> bool:
        events.put(("step", (step, metrics)))
        return proceed.get()

    def body() -> None:
        try:
            ev = _worker_evaluator(spec_json, latency)
            events.put(("setup", None))
            workdir = None
            if request.run_dir is not None:
                workdir = trial_workdir(request.run_dir, json.loads(spec_json)["name"], request.number)
            ctx = EvalContext(
                trial_number=request.number,
                seed=request.seed,
                workdir=workdir,
                threads=request.threads,
                device=request.device,
                reporter=reporter,
                **(latency.context_kwargs() if latency is not None else {}),
            )
            candidate = Candidate(request.params, number=request.number)
            metrics = ev.evaluate(candidate, ctx)
            if latency is not None and latency.policy is not None:
                metrics = resolve_latency(ev, candidate, ctx, metrics, latency.policy, latency.metric)
            events.put(("done", metrics))
        except TrialStopped:
            events.put(("stopped", None))
        except BaseException as exc:  # any evaluator error becomes a failed trial with its reason
            tb = traceback.format_exc(limit=6)
            events.put(("error", f"{type(exc).__name__}: {exc}\n{tb}"))

    thread = threading.Thread(target=body, name=f"frontier-trial-{request.number}", daemon=True)
    started = time.monotonic()
    thread.start()
    in_setup = True
    setup_timeout, timeout = request.setup_timeout_s, request.timeout_s
    deadline = None if setup_timeout is None else started + float(setup_timeout)
    while True:
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            kind, payload = events.get(timeout=wait)
        except queue.Empty:
            proceed.put(False)  # a trial blocked in EvalContext.report stops there
            if in_setup:
                error = setup_error(setup_timeout, time.monotonic() - started)
            else:
                error = trial_timeout_error(timeout)
            return TrialOutcome.failed(error, steps=tuple(steps), retire=True)
        if kind == "setup":
            in_setup = False
            deadline = None if timeout is None else time.monotonic() + float(timeout)
            continue
        if kind == "step":
            steps.append(payload)
            if on_step is not None:
                try:
                    on_step(*payload)
                except BaseException:
                    # Tune stops a trial (scheduler decision, end of study) by raising from ``tune.report``:
                    # stop the evaluation thread too, so it frees its model, then let the exception rise.
                    proceed.put(False)
                    thread.join(10.0)
                    raise
            proceed.put(True)
        elif kind == "done":
            clean = {k: float(v) for k, v in payload.items() if isinstance(v, int | float)}
            return TrialOutcome(OutcomeKind.COMPLETED, metrics=clean, steps=tuple(steps))
        elif kind == "error":
            return TrialOutcome.failed(payload, steps=tuple(steps))
        else:  # stopped at a report
            last = dict(steps[-1][1]) if steps else {}
            return TrialOutcome(OutcomeKind.STOPPED, metrics=last, steps=tuple(steps))


# Workers that die before answering (a node going away, say) are replaced; this many in a row, with none
# starting in between, mean that none can start: the study stops with the reason rather than spin.
MAX_FAILED_STARTS = 3

# A worker whose trial outlives trial_timeout_s by this much did not answer from its own timeout handling
# (the worker's process is wedged, e.g. holding the GIL outside Python): the driver kills it.
HARD_TIMEOUT_GRACE_S = 60.0


class TrialWorker:
    """A Ray actor that evaluates one trial per call; its evaluator is set up once and reused."""

    def __init__(self, spec_json: str, latency: LatencyRuntime | None = None) -> None:
        self.spec_json = spec_json
        self.latency = latency

    def ready(self) -> bool:
        """Answered once the worker process is up."""
        return True

    def setup(self) -> float:
        """Set the evaluator up (trials are handed only to workers that are); return the seconds it took."""
        start = time.monotonic()
        _worker_evaluator(self.spec_json, self.latency)
        return time.monotonic() - start

    def evaluate(self, request: TrialRequest) -> TrialOutcome:
        """Run one trial and return its outcome.

        An outcome with ``retire`` set comes from a trial that timed out and still runs here: the caller
        kills this actor.
        """
        return evaluate_in_worker(request, self.spec_json, latency=self.latency)


class WorkerPool:
    """``spec.search.concurrency`` Ray actors that run a FIFO study's trials, one call per trial.

    :meth:`start` creates the actors and returns at once (they start up and set their evaluator up while
    the driver does other work), :meth:`run` runs the searcher's trials on them, :meth:`close` kills them
    (also after an interrupt). ``setup_s`` lists each worker's start-and-setup time, in seconds.
    """

    def __init__(
        self, spec: StudySpec, latency: LatencyRuntime | None = None, run_dir: str | Path | None = None
    ) -> None:
        self.spec = spec
        self.latency = latency
        self.run_dir = None if run_dir is None else str(run_dir)
        self.setup_s: list[float] = []
        self._worker: Any = None
        self._spec_json = ""
        self._starting: dict[Any, tuple[Any, float]] = {}  # setup() ref -> actor, spawn time
        self._idle: list[Any] = []
        # evaluate() ref -> trial number, actor, hard deadline
        self._running: dict[Any, tuple[int, Any, float | None]] = {}

    def start(self) -> None:
        import ray

        self._worker = ray.remote(TrialWorker).options(
            num_cpus=self.spec.resources.cpu, num_gpus=self.spec.resources.gpu, max_restarts=0
        )
        self._spec_json = json.dumps(self.spec.to_dict())
        for _ in range(self.spec.search.concurrency):
            self._spawn()

    def _spawn(self) -> None:
        actor = self._worker.remote(self._spec_json, self.latency)
        self._starting[actor.setup.remote()] = (actor, time.monotonic())

    def _retire(self, actor: Any) -> None:
        """Kill a worker whose process can no longer be trusted (a timed-out trial runs on) and replace it."""
        import ray

        ray.kill(actor)
        self._spawn()

    def close(self) -> None:
        import ray

        actors = [a for a, _ in self._starting.values()]
        for actor in [*actors, *self._idle, *(a for _, a, _ in self._running.values())]:
            ray.kill(actor)
        self._starting, self._idle, self._running = {}, [], {}

    def run(self, searcher: AskTellSearcher) -> None:
        """Run the searcher's trials until its budget or deadline.

        A trial is asked for only when a set-up worker is free to run it at once, so its timeout counts the
        evaluation alone. A trial past ``trial_timeout_s`` fails and its worker is killed and replaced; one
        whose worker does not even answer ``HARD_TIMEOUT_GRACE_S`` later is failed by the driver. Trials
        still running at the searcher's deadline are left to ``searcher.abandon_live``, as Ray Tune's
        ``time_budget_s`` leaves them.

        Raises:
            RuntimeError: ``MAX_FAILED_STARTS`` workers in a row died before they were set up, a worker's
                evaluator setup raised, or it outlived ``search.setup_timeout_s``.
        """
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        timeout = self.spec.search.trial_timeout_s
        setup_timeout = self.spec.search.setup_timeout_s
        starting, idle, running = self._starting, self._idle, self._running
        failed_starts = 0
        exhausted = False
        while True:
            while idle and not exhausted:
                request = searcher.ask(self.run_dir)
                if request is None:  # budget or deadline reached
                    exhausted = True
                    break
                actor = idle.pop()
                hard = None if timeout is None else time.monotonic() + timeout + HARD_TIMEOUT_GRACE_S
                running[actor.evaluate.remote(request)] = (request.number, actor, hard)
            if not running and (exhausted or not starting):
                return
            now = time.monotonic()
            ends = [
                d for d in (searcher.deadline, *(hard for _, _, hard in running.values())) if d is not None
            ]
            if setup_timeout is not None:
                ends += [spawned + setup_timeout for _, spawned in starting.values()]
            wait = max(0.0, min(ends) - now) if ends else None
            ready, _ = ray.wait([*running, *starting], num_returns=1, timeout=wait)
            if not ready:
                now = time.monotonic()
                if searcher.deadline is not None and now >= searcher.deadline:
                    return  # the study's time budget is spent: the running trials are abandoned
                for ref, (number, actor, hard) in list(running.items()):
                    if hard is not None and now >= hard:
                        del running[ref]
                        error = (
                            f"TimeoutError: the trial ran longer than search.trial_timeout_s={timeout} and "
                            f"did not answer {HARD_TIMEOUT_GRACE_S:g} s later; its worker was killed"
                        )
                        searcher.tell(number, TrialOutcome.failed(error))
                        self._retire(actor)
                for ref, (actor, spawned) in list(starting.items()):
                    if setup_timeout is not None and now >= spawned + setup_timeout:
                        del starting[ref]
                        ray.kill(actor)
                        raise RuntimeError(setup_error(setup_timeout, now - spawned))
                continue
            for ref in ready:
                if ref in starting:
                    actor, spawned = starting.pop(ref)
                    try:
                        ray.get(ref)
                    except RayActorError as exc:
                        failed_starts += 1
                        if failed_starts >= MAX_FAILED_STARTS:
                            raise RuntimeError(
                                f"{failed_starts} Ray workers in a row died before they started, the last "
                                f"with: {exc}"
                            ) from exc
                        log.warning("a Ray worker died before it started (%s); starting another", exc)
                        self._spawn()
                        continue
                    except RayTaskError as exc:  # the evaluator's setup raised: every trial would fail
                        ray.kill(actor)
                        cause = exc.cause if exc.cause is not None else exc
                        raise RuntimeError(
                            f"the evaluator's setup failed on a Ray worker (evaluator.kind="
                            f"'{self.spec.evaluator.kind}'): {type(cause).__name__}: {cause}"
                        ) from None
                    failed_starts = 0
                    self.setup_s.append(time.monotonic() - spawned)
                    idle.append(actor)
                    continue
                number, actor, _ = running.pop(ref)
                try:
                    outcome = ray.get(ref)
                except RayActorError:  # the worker process died (crash, OOM kill): replace it
                    searcher.tell(number, TrialOutcome(OutcomeKind.LOST, error=LOST_ERROR))
                    self._spawn()
                    continue
                except RayTaskError as exc:  # raised outside the evaluation (which reports its own errors)
                    searcher.tell(number, TrialOutcome.failed(f"{type(exc).__name__}: {exc}"))
                else:
                    searcher.tell(number, outcome)
                    if outcome.retire:  # the timed-out evaluation still runs in that process
                        self._retire(actor)
                        continue
                idle.append(actor)
