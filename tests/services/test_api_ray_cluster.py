"""The service on an existing two-node Ray cluster on 127.0.0.1 (``--ray-address``).

The fixture starts a head and a second node (one CPU each) with ``ray start --block`` in their own process
groups and a private temp dir, and stops exactly those processes afterwards (never ``ray stop``, which would
also stop other people's Ray on a shared machine).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services.conftest import ALICE, free_port, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _ours(tag: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if tag.encode() in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
    return pids


@pytest.fixture
def ray_cluster() -> Iterator[str]:
    ray = shutil.which("ray", path=str(Path(sys.executable).parent))
    if ray is None:
        pytest.skip("the ray command is not installed")
    tmp = Path(tempfile.mkdtemp(prefix="frray-", dir="/tmp"))
    port = free_port()
    # Ray 2.5x enables token auth for `ray start` clusters; drivers would then need the token. Off here.
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": str(tmp), "RAY_AUTH_MODE": "disabled"}
    common = ["--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--disable-usage-stats", "--block"]
    procs = []
    try:
        head = [ray, "start", "--head", "--port", str(port), "--temp-dir", str(tmp / "ray"),
                "--include-dashboard", "false", *common]  # fmt: skip
        procs.append(subprocess.Popen(head, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True))  # fmt: skip
        time.sleep(8)
        node = [ray, "start", "--address", f"127.0.0.1:{port}", *common]
        procs.append(subprocess.Popen(node, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True))  # fmt: skip
        probe = (
            "import ray, sys; ray.init(address=sys.argv[1]); "
            "n = len([x for x in ray.nodes() if x['Alive']]); print(n); sys.exit(0 if n == 2 else 1)"
        )
        deadline = time.monotonic() + 90
        ok = False
        while time.monotonic() < deadline and not ok:
            time.sleep(3)
            cmd = [sys.executable, "-c", probe, f"127.0.0.1:{port}"]
            r = subprocess.run(cmd, env=env, capture_output=True, timeout=60)
            ok = r.returncode == 0
        if not ok:
            pytest.skip(f"could not bring up a two-node Ray cluster on 127.0.0.1:{port}")
        yield f"127.0.0.1:{port}"
    finally:
        for p in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        time.sleep(3)
        for pid in _ours(str(tmp)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for p in procs:
            with contextlib.suppress(Exception):
                p.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


def test_study_runs_on_an_existing_two_node_cluster(
    service_factory, ray_cluster, make_table, make_spec
) -> None:
    # The cluster runs without token auth; so must its drivers. An earlier test's in-process ray.init() leaves
    # RAY_AUTH_MODE=token in this process's environment, and a driver with it rejects the GCS's calls (every
    # actor it creates is then destroyed at once: the trials used to fail, all of them, unnoticed).
    svc = service_factory(env={"FRONTIER_RAY_ADDRESS": ray_cluster, "RAY_AUTH_MODE": "disabled"})
    spec = make_spec(make_table(svc.data / "toy.csv"), **{"search.n_trials": 6, "search.concurrency": 2})
    svc.start()
    with svc.client(ALICE) as c:
        sid = c.post("/studies", json=spec).json()["id"]
        done = wait_for(c, sid, ("succeeded", "failed"), timeout=200)
    assert done["state"] == "succeeded" and done["trials"]["done"] == done["trials"]["complete"] == 6, done
