"""The study engine: spec -> Optuna (persistent) -> Ray Tune workers -> MLflow."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from optuna.trial import FrozenTrial, TrialState

from frontier.search._latency import MEASURED_KEY
from frontier.search._mlflow import MlflowTracker, TrackerThread, default_tracking_uri
from frontier.search._optuna import RETRIED_ATTR, SAMPLER_ATTR, default_storage, n_done, open_study
from frontier.search._pareto import is_feasible, pareto_mask, pareto_trials, to_loss, trial_metrics
from frontier.search._results import STATE_ATTR, WEIGHTS_ATTR, TrialRow, trial_rows
from frontier.search._samplers import auto_choice, make_sampler
from frontier.search._warmstart import enqueue_initial
from frontier.spaces import SpecError, StudySpec, decode

log = logging.getLogger(__name__)

# The study's workers' start-and-setup times in seconds (FIFO pool), one list per run of the study.
SETUP_ATTR = "frontier.worker_setup_s"


@dataclass
class Progress:
    """A snapshot after each finished trial (for progress bars)."""

    done: int
    total: int
    complete: int
    failed: int
    pruned: int
    pareto: int
    best: dict[str, float]
    last: FrozenTrial | None = None


@dataclass
class StudyOutcome:
    name: str
    storage: str
    tracking_uri: str | None
    parent_run_id: str | None
    sampler: str
    state: str
    trials: list[TrialRow] = field(default_factory=list)
    ray_address: str | None = None

    @property
    def pareto(self) -> list[TrialRow]:
        return [r for r in self.trials if r.pareto]

    def count(self, state: str) -> int:
        return sum(1 for r in self.trials if r.state == state)


def check_spec(spec: StudySpec) -> None:
    """Cross-check a spec against the registries before anything runs (evaluator, options, metrics).

    Raises:
        SpecError: naming the field path, what is allowed and what was given.
    """
    from frontier.evaluators import for_spec

    evaluator = for_spec(spec, setup=False)
    produced = evaluator.metrics()
    if produced:
        for i, o in enumerate(spec.objectives):
            if o.name not in produced:
                raise SpecError(
                    f"objectives[{i}].name: '{o.name}' is not a metric of evaluator '{spec.evaluator.kind}'. "
                    f"Available: {list(produced)}"
                )
        for i, c in enumerate(spec.constraints):
            if c.metric not in produced:
                raise SpecError(
                    f"constraints[{i}].metric: '{c.metric}' is not a metric of evaluator "
                    f"'{spec.evaluator.kind}'. Available: {list(produced)}"
                )
    _check_latency(spec, type(evaluator))


def _check_latency(spec: StudySpec, cls: type) -> None:
    """``latency:`` against the evaluator and the predictor registry."""
    cfg = spec.latency
    if cfg.mode == "measured":
        return
    from frontier.evaluators.latency import TransferPredictor, available_predictors, get_predictor_class

    if not cls.measures_latency_alone():  # type: ignore[attr-defined]
        raise SpecError(
            f"latency.mode: '{cfg.mode}' needs an evaluator that measures latency on its own "
            f"(Evaluator.latency); '{spec.evaluator.kind}' does not. Use latency.mode 'measured'"
        )
    try:
        predictor = get_predictor_class(cfg.predictor)
    except ValueError:
        raise SpecError(
            f"latency.predictor: Unknown predictor '{cfg.predictor}'. Available: {available_predictors()}"
        ) from None
    if issubclass(predictor, TransferPredictor):
        direct = [
            n for n in available_predictors() if not issubclass(get_predictor_class(n), TransferPredictor)
        ]
        raise SpecError(
            f"latency.predictor: '{cfg.predictor}' transfers from source-device tables, which a study does "
            f"not have; use one fitted on measurements: {direct}"
        )


def _absolute_paths(spec: StudySpec, base: Path) -> StudySpec:
    """Ray workers may run elsewhere: make relative file paths in evaluator options absolute."""
    options = dict(spec.evaluator.options)
    changed = False
    for key, value in options.items():
        if isinstance(value, str) and not os.path.isabs(value) and (base / value).exists():
            options[key] = str((base / value).resolve())
            changed = True
    if not changed:
        return spec
    evaluator = spec.evaluator.model_copy(update={"options": options})
    return spec.model_copy(update={"evaluator": evaluator})


def sampler_description(spec: StudySpec) -> str:
    if spec.search.sampler == "auto":
        choice = auto_choice(spec)
        return f"auto -> {choice.sampler} ({choice.reason})"
    return spec.search.sampler


def make_scheduler(spec: StudySpec, study: Any = None) -> Any:
    """The Ray Tune trial scheduler a spec asks for (``search.scheduler``); None means FIFO.

    With the (resumed) ``study``, MO-ASHA's rungs are rebuilt from its stored trials' intermediate steps
    (``search._optuna.STEPS_ATTR``), in trial order, so the trials still to run are judged against the same
    rungs as in an uninterrupted run. Interrupted trials that are re-run (``RETRIED_ATTR``) are left out:
    their retries record their steps again.
    """
    cfg = spec.search.scheduler
    if cfg.kind == "fifo":
        return None
    from frontier.search._moasha import MOASHAScheduler
    from frontier.search._optuna import stored_steps
    from frontier.search._workers import STEP_KEY

    scheduler = MOASHAScheduler(
        [o.name for o in spec.objectives],
        ["max" if o.direction == "maximize" else "min" for o in spec.objectives],
        time_attr=STEP_KEY,
        grace_period=cfg.grace_period,
        max_t=cfg.max_t,
        reduction_factor=cfg.reduction_factor,
        # A trial that reaches max_t still has to return its final metrics: let it finish by itself.
        stop_last_trials=False,
        seed=spec.search.seed,
    )
    finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    for t in [] if study is None else study.get_trials(deepcopy=False, states=finished):
        if not t.user_attrs.get(RETRIED_ATTR):
            steps = stored_steps(t)
            scheduler.replay(f"stored-{t.number}", [{**values, STEP_KEY: step} for step, values in steps])
    return scheduler


def init_ray(address: str | None) -> None:
    """Start a local Ray bound to 127.0.0.1 (``address`` None), or join the cluster at ``address``."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    extra: dict[str, Any] = {}
    if address and address.split(":")[0] in ("127.0.0.1", "localhost"):
        # A cluster started on the loopback address: join it as a loopback node too, else Ray looks for
        # a local raylet under the machine's network address and does not find it.
        extra["_node_ip_address"] = "127.0.0.1"
    if not address:
        # Ray starts its workers at nice 15, below everything else on the machine. Here they do the
        # study's work (the driver mostly waits), so on a busy machine they starved: any other busy
        # process took ~10x their CPU share and first trials ran past trial_timeout_s. The local Ray's
        # workers run at the driver's priority instead (RAY_worker_niceness set by the user still wins).
        os.environ.setdefault("RAY_worker_niceness", "0")
    with _loopback() if not address else contextlib.nullcontext():
        ray.init(
            # "local" always starts a fresh local Ray: a plain ray.init() would join whatever cluster
            # `ray start` last left in /tmp/ray (someone else's, or a dead one) and could hang there.
            address=address or "local",
            **extra,
            include_dashboard=False,
            configure_logging=True,
            logging_level=logging.WARNING,
            log_to_driver=False,
            ignore_reinit_error=True,
        )


@contextlib.contextmanager
def _loopback() -> Iterator[None]:
    """Start Ray's processes on 127.0.0.1 only, as Ray does on a single-machine (macOS/Windows) install.

    The local Ray serves this process alone, so nothing on the network should reach it; but Ray turns a
    ``_node_ip_address`` of 127.0.0.1 into the machine's network address unless cluster mode is off
    (``ray._private.services.resolve_ip_for_localhost``), and then its GCS, raylet and workers listen there.
    Ray reads the switch when it resolves the address (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` at import
    time sets it); the node keeps the address it started with, so the switch is restored afterwards.
    """
    from ray._private import ray_constants

    before = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before


def run_study(
    spec: StudySpec,
    *,
    run_dir: str | Path = "runs",
    address: str | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    track: bool = True,
    scheduler: Any = None,
    sync_interval_s: float = 3.0,
    on_message: Callable[[str], None] | None = None,
) -> StudyOutcome:
    """Run (or resume) a study to its budget and return its trials.

    Re-running with the same name and storage resumes: finished trials are kept, trials left running by a
    crash are marked failed, and the budget counts what is already done.

    Args:
        spec: the study spec.
        run_dir: default home of the Optuna storage, the MLflow store and Ray's files.
        address: an existing Ray cluster (``ray://...`` or ``HOST:PORT``); default a local Ray.
        on_progress: called after each finished trial.
        track: log to MLflow.
        scheduler: a Ray Tune trial scheduler (multi-fidelity); default FIFO.
        on_message: gets the lines of one-time work done before the workers start
            (:meth:`Evaluator.prepare_study`, e.g. building a model); default: printed to stderr.
    """
    run_path = Path(run_dir).expanduser().resolve()
    run_path.mkdir(parents=True, exist_ok=True)
    check_spec(spec)
    spec = _absolute_paths(spec, Path.cwd())
    _prepare(spec, on_message)
    storage = spec.storage or default_storage(run_path)
    tracking_uri = (spec.tracking.uri or default_tracking_uri(run_path)) if track else None
    sampler = make_sampler(spec)
    study = open_study(spec, storage, sampler)
    description = sampler_description(spec)
    study.set_user_attr(SAMPLER_ATTR, description)
    budget = spec.search.n_trials - n_done(study)
    # Ray's workers start up while this process opens the MLflow store (a new one takes ~1.5 s).
    helpers = _Helpers.launch(
        spec, study, budget=budget, run_path=run_path, address=address, scheduler=scheduler
    )
    try:
        tracker = None
        if tracking_uri is not None:
            tracker = MlflowTracker(
                spec,
                tracking_uri=tracking_uri,
                storage_url=storage,
                experiment=spec.tracking.experiment,
                artifact_root=run_path / "mlartifacts" if tracking_uri.startswith("sqlite") else None,
            )
            tracker.start()
            tracker.set_tags({"frontier.sampler": description})
            tracker.sync(study)

        state = "finished"
        if budget > 0:
            assert helpers is not None
            enqueue_initial(spec, study)  # baselines and warm starts, on a fresh study only
            study.set_user_attr(STATE_ATTR, "running")
            state = _run(
                spec,
                study,
                sampler=sampler,
                budget=budget,
                on_progress=on_progress,
                tracker=tracker,
                storage=storage,
                sync_interval_s=sync_interval_s,
                helpers=helpers,
            )
    finally:
        if helpers is not None:
            helpers.close()
    study.set_user_attr(STATE_ATTR, state)
    _keep_weights(spec, study, run_path)
    if tracker is not None:
        tracker.sync(study)
        tracker.finish("FINISHED" if state in ("finished", "stopped") else "KILLED")
    return StudyOutcome(
        name=spec.name,
        storage=storage,
        tracking_uri=tracking_uri,
        parent_run_id=tracker.parent_id if tracker else None,
        sampler=description,
        state=state,
        trials=trial_rows(study, spec),
        ray_address=_ray_address(),
    )


def _prepare(spec: StudySpec, on_message: Callable[[str], None] | None) -> None:
    """The evaluator's one-time work on the driver (:meth:`Evaluator.prepare_study`), before Ray starts."""
    from frontier.evaluators import for_spec

    def stderr(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    for_spec(spec, setup=False).prepare_study(on_message or stderr)


def _keep_weights(spec: StudySpec, study: Any, run_path: Path) -> None:
    """An evaluator option ``keep_weights`` (``lm-train``): record where the trials' work directories
    are (``frontier export`` names a trial's as its ``checkpoint``) and, for ``pareto``, delete those of
    trials off the Pareto set. Runs when a study (or a resumed one) finishes, over all its trials."""
    import shutil

    from frontier.search._workers import trial_workdir

    keep = spec.evaluator.options.get("keep_weights", "none")
    if keep == "none":
        return
    root = trial_workdir(run_path, spec.name, 0).parent
    study.set_user_attr(WEIGHTS_ATTR, str(root))
    if keep != "pareto" or not root.is_dir():
        return
    front = {t.number for t in pareto_trials(study.get_trials(deepcopy=False), spec.directions)}
    for path in root.iterdir():
        if path.is_dir() and path.name.isdigit() and int(path.name) not in front:
            shutil.rmtree(path, ignore_errors=True)


def _ray_address() -> str | None:
    import sys

    if "ray" not in sys.modules:
        return None
    import ray

    return ray.get_runtime_context().gcs_address if ray.is_initialized() else None


@dataclass
class _Helpers:
    """What a study with trials to run starts before the MLflow store is open: Ray, the trial scheduler,
    the latency runtime and, for a FIFO study, the worker pool (whose actors start up meanwhile)."""

    run_path: Path
    scheduler: Any
    latency: Any
    pool: Any

    @classmethod
    def launch(
        cls,
        spec: StudySpec,
        study: Any,
        *,
        budget: int,
        run_path: Path,
        address: str | None,
        scheduler: Any,
    ) -> _Helpers | None:
        if budget <= 0:
            return None
        from frontier.search._workers import WorkerPool

        init_ray(address or spec.address)
        scheduler = make_scheduler(spec, study) if scheduler is None else scheduler
        helpers = cls(run_path, scheduler, None, None)
        try:
            helpers.latency = _latency_runtime(spec, study, run_path)
            if helpers.scheduler is None and not spec.search.uses_tune:
                # FIFO on long-lived actors (search.runner), without Ray Tune's per-trial machinery
                helpers.pool = WorkerPool(spec, helpers.latency, run_dir=run_path)
                helpers.pool.start()
        except BaseException:
            helpers.close()
            raise
        return helpers

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()


def _run(
    spec: StudySpec,
    study: Any,
    *,
    sampler: Any,
    budget: int,
    on_progress: Callable[[Progress], None] | None,
    tracker: MlflowTracker | None,
    storage: str,
    sync_interval_s: float,
    helpers: _Helpers,
) -> str:
    from frontier.search._searcher import AskTellSearcher
    from frontier.search._tune import run_trials

    thread = TrackerThread(tracker, spec.name, storage, interval=sync_interval_s) if tracker else None
    counts = _Counts(spec, study)

    def finished(trial: FrozenTrial) -> None:
        snapshot = counts.add(trial)
        if on_progress is not None:
            on_progress(snapshot)

    deadline = time.monotonic() + spec.search.timeout_s if spec.search.timeout_s else None
    searcher = AskTellSearcher(
        study, spec, sampler=sampler, budget=budget, deadline=deadline, on_finished=finished
    )
    if thread is not None:
        thread.start()
    state = "finished"
    try:
        if helpers.pool is not None:
            try:
                helpers.pool.run(searcher)
            finally:
                if helpers.pool.setup_s:
                    times = [round(s, 2) for s in helpers.pool.setup_s]
                    runs = [*study.user_attrs.get(SETUP_ATTR, []), times]
                    study.set_user_attr(SETUP_ATTR, runs)
            helpers.pool.close()  # frees the workers' resources (the hybrid re-measurement needs them)
        else:
            run_trials(
                searcher,
                spec,
                run_dir=helpers.run_path,
                time_budget_s=spec.search.timeout_s,
                scheduler=helpers.scheduler,
                latency=helpers.latency,
            )
        if spec.latency.mode == "hybrid":
            _remeasure_pareto(spec, study, helpers.latency, tracker)
    except KeyboardInterrupt:
        state = "interrupted"
        raise
    finally:
        searcher.abandon_live("stopped: the study ended (timeout or interrupt) while this trial ran")
        if thread is not None:
            thread.stop()
    if n_done(study) < spec.search.n_trials:
        state = "stopped"
    return state


def _latency_runtime(spec: StudySpec, study: Any, run_path: Path) -> Any:
    """The lane, cache and (predicted/hybrid) the study's latency policy, a Ray actor the workers call."""
    from frontier.search._latency import LatencyPolicy, latency_runtime, load_profile

    if spec.latency.mode == "measured":
        return latency_runtime(spec, run_path)
    import ray

    from frontier.evaluators import for_spec
    from frontier.spaces import Candidate

    profile: dict[str, Any] = {"rows": []}
    if spec.latency.device is not None:
        profile = load_profile(run_path, spec.latency.device)
    # Resume: the finished trials' metrics, and the measured ones as predictor rows.
    evaluator = for_spec(spec, setup=False)
    history, rows = [], list(profile.get("rows", []))
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        metrics = trial_metrics(t)
        history.append(metrics)
        if metrics.get(MEASURED_KEY) and spec.latency.metric in metrics:
            signature = evaluator.latency_signature(Candidate(decode(spec.params, t.params)))
            rows.append({"signature": signature, "latency_ms": metrics[spec.latency.metric]})
    actor = ray.remote(LatencyPolicy).options(num_cpus=0)
    policy = actor.remote(json.dumps(spec.to_dict()), profile={**profile, "rows": rows}, history=history)
    return latency_runtime(spec, run_path, policy)


def _remeasure_pareto(spec: StudySpec, study: Any, latency: Any, tracker: MlflowTracker | None) -> None:
    """Measure the final Pareto set's latency afresh before it is reported (hybrid mode)."""
    import ray

    from frontier.search._latency import FINAL_ATTR, FINAL_KEY, remeasure

    front = pareto_trials(study.get_trials(deepcopy=False), spec.directions)
    if not front:
        return
    params = [decode(spec.params, t.params) for t in front]
    task = ray.remote(remeasure).options(num_cpus=spec.resources.cpu, num_gpus=spec.resources.gpu)
    device = "cuda" if spec.resources.gpu > 0 else "cpu"
    threads = max(1, int(spec.resources.cpu))
    results = ray.get(task.remote(json.dumps(spec.to_dict()), latency, params, threads, device))
    final = dict(study.user_attrs.get(FINAL_ATTR, {}))
    for t, measured in zip(front, results, strict=True):
        final[str(t.number)] = float(measured[spec.latency.metric])
    study.set_user_attr(FINAL_ATTR, final)
    if tracker is not None:
        tracker.sync(study, artifacts=False)  # the child runs exist before their new metric is logged
        tracker.log_trial_metrics({int(k): {FINAL_KEY: v} for k, v in final.items()})


class _Counts:
    """Running tallies for progress reports, without re-reading the storage after every trial."""

    def __init__(self, spec: StudySpec, study: Any) -> None:
        self.spec = spec
        self.total = spec.search.n_trials
        self.done = self.complete = self.failed = self.pruned = 0
        self.values: list[list[float]] = []
        for t in study.get_trials(deepcopy=False):
            self._tally(t)

    def _tally(self, t: FrozenTrial) -> None:
        if t.user_attrs.get(RETRIED_ATTR):  # run again: its retry counts instead
            return
        if t.state == TrialState.COMPLETE:
            self.complete += 1
            if is_feasible(t):
                self.values.append(list(t.values))
        elif t.state == TrialState.FAIL:
            self.failed += 1
        elif t.state == TrialState.PRUNED:
            self.pruned += 1
        else:
            return
        self.done += 1

    def add(self, t: FrozenTrial) -> Progress:
        self._tally(t)
        best: dict[str, float] = {}
        pareto = 0
        if self.values:
            arr = np.asarray(self.values, dtype=float)
            pareto = int(pareto_mask(to_loss(arr, self.spec.directions)).sum())
            for i, o in enumerate(self.spec.objectives):
                col = arr[:, i]
                best[o.name] = float(col.max() if o.direction == "maximize" else col.min())
        best = {k: v for k, v in best.items() if math.isfinite(v)}
        return Progress(self.done, self.total, self.complete, self.failed, self.pruned, pareto, best, t)
