"""The scheduler: runs at most ``max_concurrent_studies`` studies as worker processes, FIFO beyond that.

Each running study is one ``python -m services._worker ID`` process in its own session (so cancelling
kills its whole process group, Ray workers included). On startup, studies the registry says are running
are adopted when their worker is still alive, and re-launched otherwise: ``run_study`` resumes them from
the Optuna storage, so finished trials are kept and trials interrupted mid-run are marked failed.

``attempts`` in the registry counts *abnormal* worker deaths only: a worker killed by a signal (the OOM
killer's SIGKILL), one that exited without recording an outcome, or one found dead after a service crash.
Each is retried after a backoff that doubles; after ``max_worker_failures`` the study is failed (its
interrupted Optuna trials marked failed, its Ray temp dir removed) and can be resumed through the API.
A graceful stop of the service clears the running studies' ``pid``: the next start resumes them without
counting anything.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from sqlalchemy import func, select, update

from frontier.services._db import Registry, StudyRecord, StudyState, utcnow
from frontier.services._settings import Settings

log = logging.getLogger(__name__)

_REPO_ROOT = Path(__file__).resolve().parents[1]


def worker_alive(pid: int, study_id: str) -> bool:
    """Whether ``pid`` is a live (not zombie) worker process for ``study_id``."""
    proc = Path(f"/proc/{pid}")
    if proc.exists():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            stat = (proc / "stat").read_text()
        except OSError:
            return False
        if stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
            return False
        return b"frontier.services._worker" in cmdline and study_id.encode() in cmdline
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def worker_tmp_dir(study_id: str) -> Path:
    """The private Ray temp dir of a study's worker (short: Ray's socket paths must fit in 108 bytes)."""
    return Path(tempfile.gettempdir()) / f"frw-{study_id[:16]}"


def kill_group(pid: int, grace_s: float = 5.0) -> None:
    """SIGTERM the worker's process group, then SIGKILL whatever is left after ``grace_s``."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _rowcount(result: object) -> int:
    """Rows an UPDATE changed (``Session.execute`` is typed as returning a plain Result)."""
    return int(getattr(result, "rowcount", 0))


class Scheduler:
    """Starts queued studies, reaps finished workers and recovers after a restart."""

    def __init__(self, settings: Settings, registry: Registry) -> None:
        self.settings = settings
        self.registry = registry
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._adopted: dict[str, int] = {}
        # studies whose worker died abnormally, waiting out their backoff (they keep their slot): id -> when
        self._retry_at: dict[str, float] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # lifecycle -----------------------------------------------------------------------------------------
    def start(self) -> None:
        self.prepare_stores()
        self.recover()
        self._thread = threading.Thread(target=self._loop, name="frontier-scheduler", daemon=True)
        self._thread.start()

    def stop(self, *, terminate_workers: bool = True) -> None:
        """Stop scheduling. Running workers are terminated; their studies stay ``running`` (with no pid, the
        mark of a graceful stop) and resume at the next start without counting as a failure."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(30)
        if terminate_workers:
            with self._lock:
                stopped = {sid: p.pid for sid, p in self._children.items()} | dict(self._adopted)
            for pid in stopped.values():
                kill_group(pid)
            for sid, child in self._children.items():
                child.wait(10)
                shutil.rmtree(worker_tmp_dir(sid), ignore_errors=True)
            if stopped:
                with self.registry.session() as s:
                    s.execute(
                        update(StudyRecord)
                        .where(
                            StudyRecord.id.in_(list(stopped))
                            & (StudyRecord.state == StudyState.running.value)
                        )
                        .values(pid=None)
                    )

    def wake(self) -> None:
        self._wake.set()

    def running_count(self) -> int:
        with self._lock:
            return len(self._children) + len(self._adopted) + len(self._retry_at)

    def prepare_stores(self) -> None:
        """Create the Optuna and MLflow schemas once, here: workers starting together would race to."""
        from frontier.search._optuna import make_storage

        make_storage(self.settings.storage_url())
        self._experiment("frontier")

    def _experiment(self, name: str) -> None:
        from mlflow.tracking import MlflowClient

        tracking = self.settings.tracking()
        client = MlflowClient(tracking_uri=tracking)
        if client.get_experiment_by_name(name) is None:
            root = Path(self.settings.run_dir).expanduser().resolve() / "mlartifacts"
            client.create_experiment(
                name, artifact_location=root.as_uri() if tracking.startswith("sqlite") else None
            )

    # recovery ------------------------------------------------------------------------------------------
    def recover(self) -> None:
        with self.registry.session() as s:
            running = s.scalars(
                select(StudyRecord)
                .where(StudyRecord.state == StudyState.running.value)
                .order_by(StudyRecord.started_at)
            ).all()
            stopped, died = [], []
            for rec in running:
                if rec.pid is None:  # stopped gracefully (or never started): not a failure
                    stopped.append(rec.id)
                elif worker_alive(rec.pid, rec.id):
                    self._adopted[rec.id] = rec.pid
                    log.info("adopted running study %s (pid %s)", rec.id, rec.pid)
                else:
                    died.append(rec.id)
        for study_id in stopped:
            log.info("resuming study %s: the service was stopped while it ran", study_id)
            self._spawn(study_id)
        for study_id in died:
            self._worker_died(study_id, reason="its worker was found dead when the service started")

    def _worker_died(self, study_id: str, *, reason: str) -> None:
        """Count an abnormal death of a running study's worker; retry after a backoff, or give up."""
        shutil.rmtree(worker_tmp_dir(study_id), ignore_errors=True)
        with self.registry.session() as s:
            rec = s.get(StudyRecord, study_id)
            if rec is None or rec.state != StudyState.running.value:
                return
            rec.attempts += 1
            rec.pid = None  # counted: a restart before the retry must not count it again
            failures = rec.attempts
            storage_name = rec.storage_name
            if failures >= self.settings.max_worker_failures:
                rec.state = StudyState.failed.value
                rec.finished_at = utcnow()
                rec.error = (
                    f"gave up after {failures} abnormal worker deaths; last: {reason}. See "
                    f"{self.log_path(study_id)}; POST /studies/{study_id}/resume runs it again, keeping its "
                    "finished trials"
                )
        if failures >= self.settings.max_worker_failures:
            log.warning("study %s failed: %s", study_id, reason)
            self._fail_interrupted(storage_name)
            return
        delay = self.settings.retry_backoff_s * 2 ** (failures - 1)
        log.warning("study %s: %s; retry %d in %.1f s", study_id, reason, failures, delay)
        with self._lock:
            self._retry_at[study_id] = time.monotonic() + delay

    def _fail_interrupted(self, storage_name: str) -> None:
        """Trials a dead worker left RUNNING in Optuna are marked failed, as a resume would."""
        from frontier.search import load_study
        from frontier.search._optuna import fail_interrupted

        try:
            fail_interrupted(load_study(storage_name, self.settings.storage_url()))
        except ValueError:  # the worker died before it created the study
            return
        except Exception:  # the storage is unreachable: the next resume marks them
            log.exception("could not mark the interrupted trials of %s failed", storage_name)

    def _retry_due(self) -> None:
        now = time.monotonic()
        with self._lock:
            due = [sid for sid, when in self._retry_at.items() if when <= now]
            for sid in due:
                del self._retry_at[sid]
        for sid in due:
            with self.registry.session() as s:
                still = s.scalar(select(StudyRecord.state).where(StudyRecord.id == sid))
            if still == StudyState.running.value:  # else it was cancelled meanwhile
                self._spawn(sid)

    # the loop ------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # keep scheduling: a transient database error must not stop the service
                log.exception("scheduler tick failed")
            self._wake.wait(self.settings.poll_interval_s)
            self._wake.clear()

    def tick(self) -> None:
        self._reap()
        self._retry_due()
        self._launch_queued()

    def _reap(self) -> None:
        with self._lock:
            exited = {sid: p.returncode for sid, p in self._children.items() if p.poll() is not None}
            for sid in exited:
                del self._children[sid]
            gone = [sid for sid, pid in self._adopted.items() if not worker_alive(pid, sid)]
            for sid in gone:
                del self._adopted[sid]
        for sid, code in exited.items():
            # the worker's private Ray temp dir (see services._worker); Ray may still write to it as it exits
            shutil.rmtree(worker_tmp_dir(sid), ignore_errors=True)
            # A worker that recorded an outcome has left 'running'; one still running died abnormally.
            how = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
            self._worker_died(sid, reason=f"the worker {how} before finishing")
        for sid in gone:
            # not our child: we cannot know how it ended; if it did not record an outcome, resume it
            self._worker_died(sid, reason="its worker from a previous service process is gone")

    def _launch_queued(self) -> None:
        free = self.settings.max_concurrent_studies - self.running_count()
        if free <= 0:
            return
        with self.registry.session() as s:
            ids = s.scalars(
                select(StudyRecord.id)
                .where(StudyRecord.state == StudyState.queued.value)
                .order_by(StudyRecord.created_at, StudyRecord.id)
                .limit(free)
            ).all()
        for sid in ids:
            with self.registry.session() as s:
                claimed = _rowcount(
                    s.execute(
                        update(StudyRecord)
                        .where((StudyRecord.id == sid) & (StudyRecord.state == StudyState.queued.value))
                        .values(state=StudyState.running.value, started_at=utcnow())
                    )
                )
            if claimed:  # else it was cancelled meanwhile
                self._spawn(sid)

    def log_path(self, study_id: str) -> Path:
        return Path(self.settings.run_dir).expanduser().resolve() / "logs" / f"{study_id}.log"

    def worker_env(self) -> dict[str, str]:
        st = self.settings
        roots = st.allowed_roots
        env = {k: v for k, v in os.environ.items() if not k.startswith("FRONTIER_")}
        env.update(
            {
                "FRONTIER_RUN_DIR": str(Path(st.run_dir).expanduser().resolve()),
                "FRONTIER_STORAGE": st.storage_url(),
                "FRONTIER_TRACKING_URI": st.tracking(),
                "FRONTIER_DATABASE_URL": st.database(),
                # the worker re-checks every path at open time against the same roots
                "FRONTIER_ALLOWED_ROOTS": json.dumps([str(Path(r).expanduser().resolve()) for r in roots]),
                "FRONTIER_PLACEMENT_TIMEOUT_S": str(st.placement_timeout_s),
                "PYTHONPATH": os.pathsep.join(p for p in (str(_REPO_ROOT), env.get("PYTHONPATH")) if p),
                "RAY_USAGE_STATS_ENABLED": "0",
            }
        )
        if st.ray_address:
            env["FRONTIER_RAY_ADDRESS"] = st.ray_address
        return env

    def _spawn(self, study_id: str) -> None:
        with self.registry.session() as s:
            rec = s.get(StudyRecord, study_id)
            experiment = ((rec.spec.get("tracking") or {}).get("experiment") if rec else None) or "frontier"
        try:
            self._experiment(experiment)
        except Exception:  # the worker will report a real tracking-store problem itself
            log.exception("could not prepare MLflow experiment %r", experiment)
        path = self.log_path(study_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "frontier.services._worker", study_id],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.worker_env(),
                start_new_session=True,
            )
        with self._lock:
            self._children[study_id] = proc
        with self.registry.session() as s:
            s.execute(update(StudyRecord).where(StudyRecord.id == study_id).values(pid=proc.pid))
        log.info("started study %s as pid %s", study_id, proc.pid)

    # cancel --------------------------------------------------------------------------------------------
    def cancel(self, study_id: str) -> str:
        """Cancel a queued or running study; return its state afterwards."""
        with self.registry.session() as s:
            rec = s.get(StudyRecord, study_id)
            if rec is None:
                raise KeyError(study_id)
            previous = rec.state
            if previous not in (StudyState.queued.value, StudyState.running.value):
                return previous
            done = _rowcount(
                s.execute(
                    update(StudyRecord)
                    .where((StudyRecord.id == study_id) & (StudyRecord.state == previous))
                    .values(
                        state=StudyState.cancelled.value, finished_at=utcnow(), error="cancelled by request"
                    )
                )
            )
            pid = rec.pid
        with self._lock:
            self._retry_at.pop(study_id, None)  # a study waiting out its backoff frees its slot now
        if done and previous == StudyState.running.value and pid is not None:
            with self._lock:
                child = self._children.get(study_id)
                adopted = study_id in self._adopted
            if child is not None or adopted or worker_alive(pid, study_id):
                kill_group(pid)
            if child is not None:
                child.wait(10)
        self.wake()
        return StudyState.cancelled.value if done else self._state(study_id)

    def resume(self, study_id: str) -> StudyRecord:
        """Queue a failed or cancelled study again (same id and name, failures counted afresh); ``run_study``
        resumes it from the Optuna storage, keeping its finished trials.

        Raises:
            ValueError: the study is queued, running or succeeded.
        """
        with self.registry.session() as s:
            rec = s.get(StudyRecord, study_id)
            if rec is None:
                raise KeyError(study_id)
            previous = rec.state
            done = 0
            if previous in (StudyState.failed.value, StudyState.cancelled.value):
                done = _rowcount(
                    s.execute(
                        update(StudyRecord)
                        .where((StudyRecord.id == study_id) & (StudyRecord.state == previous))
                        .values(
                            state=StudyState.queued.value,
                            attempts=0,
                            pid=None,
                            error=None,
                            started_at=None,
                            finished_at=None,
                        )
                    )
                )
        if not done:
            raise ValueError(
                f"the study is {previous}: only a failed or cancelled study can be resumed"
                + (" (it is already going)" if previous in ("queued", "running") else "")
            )
        self.wake()
        with self.registry.session() as s:
            fresh = s.get(StudyRecord, study_id)
        assert fresh is not None
        return fresh

    def _state(self, study_id: str) -> str:
        with self.registry.session() as s:
            return s.scalar(select(StudyRecord.state).where(StudyRecord.id == study_id)) or "unknown"

    def counts(self) -> dict[str, int]:
        with self.registry.session() as s:
            rows = s.execute(select(StudyRecord.state, func.count()).group_by(StudyRecord.state)).all()
        return {state: int(n) for state, n in rows}
