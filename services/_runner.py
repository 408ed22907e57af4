"""The scheduler: runs at most ``max_concurrent_studies`` studies as worker processes, FIFO beyond that.

Each running study is one ``python -m services._worker ID`` process in its own session (so cancelling
kills its whole process group, Ray workers included). On startup, studies the registry says are running
are adopted when their worker is still alive, and re-launched otherwise: ``run_study`` resumes them from
the Optuna storage, so finished trials are kept and trials interrupted mid-run are marked failed.
"""

from __future__ import annotations

import contextlib
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

MAX_ATTEMPTS = 3
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
        """Stop scheduling. Running workers are terminated; their studies stay ``running`` and resume at
        the next start."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(30)
        if terminate_workers:
            with self._lock:
                pids = [p.pid for p in self._children.values()] + list(self._adopted.values())
            for pid in pids:
                kill_group(pid)
            for sid, child in self._children.items():
                child.wait(10)
                shutil.rmtree(worker_tmp_dir(sid), ignore_errors=True)

    def wake(self) -> None:
        self._wake.set()

    def running_count(self) -> int:
        with self._lock:
            return len(self._children) + len(self._adopted)

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
            stale = []
            for rec in running:
                if rec.pid is not None and worker_alive(rec.pid, rec.id):
                    self._adopted[rec.id] = rec.pid
                    log.info("adopted running study %s (pid %s)", rec.id, rec.pid)
                else:
                    stale.append(rec.id)
        for study_id in stale:
            self._relaunch(study_id, reason="the service restarted while it ran")

    def _relaunch(self, study_id: str, *, reason: str) -> None:
        with self.registry.session() as s:
            rec = s.get(StudyRecord, study_id)
            if rec is None or rec.state != StudyState.running.value:
                return
            if rec.attempts >= MAX_ATTEMPTS:
                rec.state = StudyState.failed.value
                rec.finished_at = utcnow()
                rec.error = f"gave up after {rec.attempts} attempts; last: {reason}"
                return
        log.info("resuming study %s: %s", study_id, reason)
        self._spawn(study_id)

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
            with self.registry.session() as s:
                s.execute(
                    update(StudyRecord)
                    .where((StudyRecord.id == sid) & (StudyRecord.state == StudyState.running.value))
                    .values(
                        state=StudyState.failed.value,
                        finished_at=utcnow(),
                        error=f"the worker exited with code {code} before finishing; "
                        f"see {self.log_path(sid)}",
                    )
                )
        for sid in gone:
            # not our child: we cannot know how it ended; if it did not record an outcome, resume it
            self._relaunch(sid, reason="its worker from a previous service process is gone")

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
        env = {k: v for k, v in os.environ.items() if not k.startswith("FRONTIER_")}
        env.update(
            {
                "FRONTIER_RUN_DIR": str(Path(st.run_dir).expanduser().resolve()),
                "FRONTIER_STORAGE": st.storage_url(),
                "FRONTIER_TRACKING_URI": st.tracking(),
                "FRONTIER_DATABASE_URL": st.database(),
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
            s.execute(
                update(StudyRecord)
                .where(StudyRecord.id == study_id)
                .values(pid=proc.pid, attempts=StudyRecord.attempts + 1)
            )
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

    def _state(self, study_id: str) -> str:
        with self.registry.session() as s:
            return s.scalar(select(StudyRecord.state).where(StudyRecord.id == study_id)) or "unknown"

    def counts(self) -> dict[str, int]:
        with self.registry.session() as s:
            rows = s.execute(select(StudyRecord.state, func.count()).group_by(StudyRecord.state)).all()
        return {state: int(n) for state, n in rows}
