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
import time
from typing import Any

from sqlalchemy import update

from frontier.services._db import StudyRecord, StudyState, registry_for, utcnow
from frontier.services._runner import worker_tmp_dir
from frontier.services._settings import Settings, get_settings
from frontier.spaces import StudySpec, spec_from_dict

HV_REFERENCE_ATTR = "frontier.hv_reference"


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


def study_hypervolume(spec: StudySpec, rows: list[Any], stored_reference: list[float] | None) -> float | None:
    """Hypervolume of the feasible complete trials, with the reference point MLflow logging uses."""
    import numpy as np

    from frontier.search import hypervolume

    values = [
        [r.values[o.name] for o in spec.objectives] for r in rows if r.state == "complete" and r.feasible
    ]
    if not values:
        return None
    sign = np.array([-1.0 if o.direction == "maximize" else 1.0 for o in spec.objectives])
    loss = np.asarray(values, dtype=float) * sign
    if all(o.reference is not None for o in spec.objectives):
        ref = np.array([o.reference for o in spec.objectives], dtype=float) * sign
    elif stored_reference is not None:
        ref = np.asarray(stored_reference, dtype=float)
    else:
        worst, best = loss.max(axis=0), loss.min(axis=0)
        span = worst - best
        ref = worst + np.where(span > 0, 0.1 * span, np.maximum(0.1 * np.abs(worst), 1e-9))
    return float(hypervolume(loss, ref))


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
        with registry.session() as s:
            s.execute(
                update(StudyRecord)
                .where(running)
                .values(
                    state=StudyState.failed.value,
                    finished_at=utcnow(),
                    error=f"{type(exc).__name__}: {exc}"[:4000],
                )
            )
        raise
    study = load_study(spec.name, outcome.storage)
    hv = study_hypervolume(spec, outcome.trials, study.user_attrs.get(HV_REFERENCE_ATTR))
    experiment_id = None
    if outcome.parent_run_id and outcome.tracking_uri:
        from mlflow.tracking import MlflowClient

        experiment_id = MlflowClient(outcome.tracking_uri).get_run(outcome.parent_run_id).info.experiment_id
    with registry.session() as s:
        s.execute(
            update(StudyRecord)
            .where(running)
            .values(
                state=StudyState.succeeded.value,
                finished_at=utcnow(),
                complete=outcome.count("complete"),
                failed=outcome.count("fail"),
                pruned=outcome.count("pruned"),
                hypervolume=hv,
                mlflow_run_id=outcome.parent_run_id,
                mlflow_experiment_id=experiment_id,
                error=None if outcome.state == "finished" else f"stopped before the budget ({outcome.state})",
            )
        )
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m services._worker STUDY_ID", file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(main(sys.argv[1]))
