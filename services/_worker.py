"""Runs one registered study to its budget: ``python -m services._worker STUDY_ID``.

The service starts one such process per running study (in its own session, so cancelling kills the
whole process group). It reads the study from the registry, runs it with :func:`search.run_study`
(which resumes from the Optuna storage when the study already has trials), writes progress back and
finally the outcome.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from sqlalchemy import update

from frontier.services._db import StudyRecord, StudyState, registry_for, utcnow
from frontier.services._policy import recheck_paths
from frontier.services._runner import worker_tmp_dir
from frontier.services._settings import Settings, get_settings
from frontier.spaces import SpecError, StudySpec, spec_from_dict


def run_spec(record_spec: dict[str, Any], storage_name: str, settings: Settings) -> StudySpec:
    """The spec the worker runs: namespaced name, the service's storage and tracking store."""
    spec = spec_from_dict(record_spec)
    return spec.model_copy(
        update={
            "name": storage_name,
            "storage": settings.storage_url(),
            "tracking": spec.tracking.model_copy(update={"uri": settings.tracking()}),
            "address": settings.ray_address,
        }
    )


def final_state(trials: list[Any], run_state: str) -> tuple[StudyState, str | None]:
    """The registry state and error of a study whose ``run_study`` returned: a study without one complete
    trial has not succeeded, whatever else happened; its error names the commonest trial error."""
    complete = sum(1 for r in trials if r.state == "complete")
    if complete == 0:
        if not trials:
            return StudyState.failed, f"no trial ran (the run ended {run_state})"
        states = Counter(r.state for r in trials)
        summary = ", ".join(f"{n} {state}" for state, n in states.most_common())
        errors = Counter(r.error for r in trials if r.error)
        if not errors:
            return StudyState.failed, f"no trial completed ({summary} of {len(trials)})"
        error, n = errors.most_common(1)[0]
        return StudyState.failed, (
            f"no trial completed ({summary} of {len(trials)}); the commonest error ({n} of {len(trials)}): "
            f"{error}"
        )[:4000]
    if run_state != "finished":
        return StudyState.succeeded, f"stopped before the budget ({run_state})"
    return StudyState.succeeded, None


class PlacementWatch(threading.Thread):
    """Fails a study whose Ray cluster cannot hold even one trial for ``timeout_s`` (an autoscaling cluster
    may grow meanwhile). Once the cluster's totals fit a trial, placement is Ray's ordinary queueing."""

    def __init__(self, spec: StudySpec, timeout_s: float, on_timeout: Callable[[str], None]) -> None:
        super().__init__(name="frontier-placement-watch", daemon=True)
        self.need = {"CPU": spec.resources.cpu, "GPU": spec.resources.gpu}
        self.timeout_s = timeout_s
        self.on_timeout = on_timeout
        self.done = threading.Event()
        self.interval_s = min(2.0, timeout_s / 4)

    def run(self) -> None:
        short_since: float | None = None
        while not self.done.wait(self.interval_s):
            ray = sys.modules.get("ray")
            try:
                if ray is None or not ray.is_initialized():
                    continue
                total = ray.cluster_resources()
            except Exception:  # Ray is starting or stopping; look again
                continue
            have = {k: float(total.get(k, 0.0)) for k in self.need}
            if all(have[k] >= v for k, v in self.need.items()):
                return
            short_since = short_since if short_since is not None else time.monotonic()
            if time.monotonic() - short_since >= self.timeout_s:
                self.on_timeout(
                    f"resources: no trial could be placed within placement_timeout_s={self.timeout_s:g}: "
                    f"each trial needs cpu={self.need['CPU']:g}, gpu={self.need['GPU']:g}, but the Ray "
                    f"cluster has CPU={have['CPU']:g}, GPU={have['GPU']:g}. Lower resources.cpu/gpu or add "
                    "nodes, then resume the study"
                )
                return


def _terminated(signum: int, _frame: Any) -> None:
    # Unwind (run_study's finally, our temp-dir cleanup) instead of dying on the spot.
    raise SystemExit(128 + signum)


def main(study_id: str) -> int:
    signal.signal(signal.SIGTERM, _terminated)
    settings = get_settings()
    if settings.ray_address:
        return _main(study_id, settings)
    # A private Ray temp dir: with none, ray.init() joins whatever cluster /tmp/ray/ray_current_cluster
    # names (another user's, or a dead one after a crash) instead of starting this study's own.
    # Per study; a crash leaves it behind and the resumed run clears it first.
    tmp = worker_tmp_dir(study_id)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    os.environ["RAY_TMPDIR"] = str(tmp)
    try:
        return _main(study_id, settings)
    finally:
        if "ray" in sys.modules:
            import ray

            ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


def _main(study_id: str, settings: Settings) -> int:
    from frontier.search import load_study, run_study

    registry = registry_for(settings.database())
    with registry.session() as s:
        record = s.get(StudyRecord, study_id)
        if record is None:
            print(f"unknown study id {study_id!r}", file=sys.stderr)
            return 2
        if record.state != StudyState.running.value:
            print(f"study {study_id} is {record.state}, not running: nothing to do", file=sys.stderr)
            return 0
        spec = run_spec(record.spec, record.storage_name, settings)

    running = (StudyRecord.id == study_id) & (StudyRecord.state == StudyState.running.value)

    def fail(error: str) -> None:
        with registry.session() as s:
            s.execute(
                update(StudyRecord)
                .where(running)
                .values(state=StudyState.failed.value, finished_at=utcnow(), error=error[:4000])
            )

    try:
        spec = recheck_paths(spec, settings)  # the files may have changed since submission
    except SpecError as exc:
        print(f"refused at open time: {exc}", file=sys.stderr)
        fail(str(exc))
        return 1

    def placement_failed(error: str) -> None:
        print(error, file=sys.stderr, flush=True)
        fail(error)
        os.kill(os.getpid(), signal.SIGTERM)  # unwind run_study (Ray shut down, temp dir removed)

    watch = PlacementWatch(spec, settings.placement_timeout_s, placement_failed)
    watch.start()
    last = 0.0

    def on_progress(p: Any) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last < 0.5 and p.done < p.total:
            return
        last = now
        with registry.session() as s:
            s.execute(
                update(StudyRecord)
                .where(running)
                .values(complete=p.complete, failed=p.failed, pruned=p.pruned)
            )

    try:
        outcome = run_study(
            spec, run_dir=settings.run_dir, address=settings.ray_address, on_progress=on_progress
        )
    except Exception as exc:
        fail(f"{type(exc).__name__}: {exc}")
        raise
    finally:
        watch.done.set()
    study = load_study(spec.name, outcome.storage)
    from frontier.search._pareto import REFERENCE_ATTR, study_hypervolume

    hv = study_hypervolume(spec, outcome.trials, study.user_attrs.get(REFERENCE_ATTR))
    experiment_id = None
    if outcome.parent_run_id and outcome.tracking_uri:
        from mlflow.tracking import MlflowClient

        experiment_id = MlflowClient(outcome.tracking_uri).get_run(outcome.parent_run_id).info.experiment_id
    state, error = final_state(outcome.trials, outcome.state)
    with registry.session() as s:
        s.execute(
            update(StudyRecord)
            .where(running)
            .values(
                state=state.value,
                finished_at=utcnow(),
                complete=outcome.count("complete"),
                failed=outcome.count("fail"),
                pruned=outcome.count("pruned"),
                hypervolume=hv,
                mlflow_run_id=outcome.parent_run_id,
                mlflow_experiment_id=experiment_id,
                error=error,
            )
        )
    return 0 if state is StudyState.succeeded else 1


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m services._worker STUDY_ID", file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(main(sys.argv[1]))
