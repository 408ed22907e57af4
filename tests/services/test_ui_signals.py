"""`frontier ui` as a user runs it: a real `mlflow server` answers before the URL is printed, and SIGTERM
or SIGINT to `frontier ui` leaves no process behind and the port free."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
# Two busy cores: the single-worker server answered in about 10 s when measured; leave room.
READY_TIMEOUT_S = 150


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _processes_naming(marker: str) -> list[int]:
    """Live processes whose command line mentions ``marker`` (the test's private tracking store)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = next(
                (ln for ln in (entry / "status").read_text().splitlines() if ln.startswith("State:")), ""
            )
        except OSError:
            continue
        if marker in cmdline and "Z" not in state.split()[1:2]:
            found.append(int(entry.name))
    return found


def _group_members(groups: set[int]) -> list[int]:
    """Live (not zombie) processes in the given process groups."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) in groups:
            found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real MLflow SQLite store with the `frontier` experiment (what a tracked study leaves)."""
    from mlflow.tracking import MlflowClient

    db = tmp_path_factory.mktemp("ui-signals") / "mlflow.db"
    MlflowClient(f"sqlite:///{db}").create_experiment("frontier")
    return f"sqlite:///{db}"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_ui_stops_its_server_on_a_signal(tracking: str, sig: signal.Signals) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRONTIER_")} | {"PYTHONPATH": str(ROOT)}
    cli = [sys.executable, "-c", "from frontier.services._cli import main; main()"]
    proc = subprocess.Popen(
        [*cli, "ui", "--tracking-uri", tracking, "--port", str(port), "--timeout", str(READY_TIMEOUT_S)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,  # a signal to the test's group must not reach it; only ours does
    )
    marker = tracking.removeprefix("sqlite:///")
    try:
        started = time.monotonic()
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "stops the server" in line:
                break
            assert time.monotonic() - started < READY_TIMEOUT_S, "".join(lines)
        ready_s = time.monotonic() - started
        out = "".join(lines)
        assert f"MLflow UI for {tracking}" in out and f"http://127.0.0.1:{port}/#/experiments" in out, out
        # The URL is printed only once the server answers.
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as r:
            assert r.status == 200
        servers = _processes_naming(marker)
        assert servers, "the MLflow server is not running"
        # mlflow server starts uvicorn, whose command line does not name the store: follow the group.
        groups = {os.getpgid(pid) for pid in servers}
        assert len(_group_members(groups)) >= 2, "expected mlflow server and its uvicorn worker"
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == 0
        deadline = time.monotonic() + 5
        while _group_members(groups) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _group_members(groups) == [], "a server process outlived `frontier ui`"
        with socket.socket() as s:
            # No listener holds the port (TIME_WAIT connections of the stopped server may remain).
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
            s.listen()
        print(f"frontier ui ready in {ready_s:.1f} s")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in _processes_naming(marker):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(os.getpgid(pid), signal.SIGKILL)
