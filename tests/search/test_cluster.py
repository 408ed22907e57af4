"""A study on an existing Ray cluster (``ray start --head``), reached through ``--address``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.integration, pytest.mark.slow]
BIN = Path(sys.executable).parent
# A loopback-only cluster for the test: no token, so concurrent local Ray instances that share
# ~/.ray/auth_token cannot interfere. Real clusters keep Ray's token auth; the driver reads the same token.
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_head():
    port = _free_port()
    cmd = [
        str(BIN / "ray"),
        "start",
        "--head",
        f"--port={port}",
        "--num-cpus=2",
        "--include-dashboard=false",
        "--disable-usage-stats",
        "--node-ip-address=127.0.0.1",
    ]
    proc = subprocess.Popen(
        cmd, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV
    )
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, out
    try:
        yield f"127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the head's processes stay in the group `ray start` made


def test_study_runs_on_an_existing_cluster(ray_head, tmp_path, make_table, make_spec):
    table = make_table(tmp_path / "t.csv")
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(make_spec(table, **{"search.n_trials": 6, "search.concurrency": 2})))
    res = subprocess.run(
        [
            str(BIN / "frontier"),
            "run",
            str(spec_path),
            "--run-dir",
            str(tmp_path / "run"),
            "--address",
            ray_head,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "finished: 6/6 trials" in res.stdout
    # the driver joined the running cluster (same GCS port) instead of starting its own
    port = ray_head.split(":")[1]
    assert f":{port}" in res.stdout.split("Ray cluster:")[1].splitlines()[0]
