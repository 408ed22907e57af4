"""A real ``frontier serve`` in a subprocess on a free port, and helpers to talk to it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
TOKENS = {"alice-token-1": "alice", "bob-token-22": "bob"}
ADMIN = "admin-token-333"
ALICE, BOB = "alice-token-1", "bob-token-22"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Service:
    """One service process (its own session, so a kill can take its whole process group)."""

    def __init__(self, home: Path, *, env: dict[str, str] | None = None, max_concurrent: int = 2) -> None:
        self.home = home
        self.data = home / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("FRONTIER_")},
            "PYTHONPATH": str(ROOT),
            "RAY_USAGE_STATS_ENABLED": "0",
            "FRONTIER_RUN_DIR": str(home / "run"),
            "FRONTIER_TOKENS": json.dumps(TOKENS),
            "FRONTIER_ADMIN_TOKENS": json.dumps([ADMIN]),
            "FRONTIER_ALLOWED_ROOTS": json.dumps([str(self.data)]),
            "FRONTIER_MAX_CONCURRENT_STUDIES": str(max_concurrent),
            "FRONTIER_MAX_TRIALS_PER_STUDY": "500",
            "FRONTIER_POLL_INTERVAL_S": "0.2",
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        log = (self.home / "serve.log").open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from frontier.services._cli import main; main()",
                "serve",
                "--port",
                str(self.port),
            ],
            cwd=self.home,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the service exited: {(self.home / 'serve.log').read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("the service did not answer /health within 60 s")

    def client(self, token: str | None = ALICE) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def stop(self) -> None:
        """Graceful stop (SIGTERM: the service terminates its workers), then make sure nothing is left."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.kill_workers()
        self.proc = None

    def crash(self) -> None:
        """kill -9 the service's process group and every worker's: as if the machine lost power."""
        assert self.proc is not None
        pids = self.worker_pids()
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        # SIGKILL is delivered at once but a process takes a moment to exit (longer on a busy machine, with
        # a large address space to tear down): return when the killed workers are gone, as after a power cut.
        deadline = time.monotonic() + 30
        while set(self.worker_pids()) & set(pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.proc = None

    def worker_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-f", "frontier.services._worker "], capture_output=True, text=True)
        mine = []
        for pid in out.stdout.split():
            try:
                env = Path(f"/proc/{pid}/environ").read_bytes()
            except OSError:
                continue
            if f"FRONTIER_RUN_DIR={self.home / 'run'}".encode() in env:
                mine.append(int(pid))
        return mine

    def kill_workers(self) -> None:
        for pid in self.worker_pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


def wait_for(
    client: httpx.Client, study_id: str, states: tuple[str, ...], timeout: float = 150
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = client.get(f"/studies/{study_id}")
        assert r.status_code == 200, r.text
        body = r.json()
        if body["state"] in states:
            return body
        time.sleep(0.5)
    raise AssertionError(f"study {study_id} did not reach {states} in {timeout} s; last: {body}")


@pytest.fixture
def service_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[Service] = []

    def make(home: Path | None = None, **kwargs: Any) -> Service:
        svc = Service(home or tmp_path / f"svc{len(started)}", **kwargs)
        started.append(svc)
        return svc

    yield make
    for svc in started:
        svc.stop()
