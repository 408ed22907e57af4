"""The service with PostgreSQL as its registry and Optuna storage (a throwaway cluster per test module).

Skips cleanly when the PostgreSQL server binaries (initdb, pg_ctl) or the psycopg driver are missing.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services.conftest import ALICE, free_port, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for root in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (root / name).exists():
            return str(root / name)
    return None


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    pytest.importorskip("psycopg", reason="the psycopg driver is not installed")
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    prefix: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run PostgreSQL as")
        prefix = ["runuser", "-u", "postgres", "--"]
    home = Path(tempfile.mkdtemp(prefix="frpg-", dir="/tmp"))
    data = home / "data"
    if prefix:
        os.chown(home, user.pw_uid, user.pw_gid)
    port = free_port()
    run = dict(check=True, capture_output=True, timeout=120)
    try:
        subprocess.run([*prefix, initdb, "-D", str(data), "-A", "trust", "-U", "postgres"], **run)
        subprocess.run(
            [*prefix, pg_ctl, "-D", str(data), "-l", str(home / "log"), "-w", "-o",
             f"-p {port} -h 127.0.0.1 -k {home} -c fsync=off", "start"],
            **run,
        )  # fmt: skip
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(home, ignore_errors=True)
        pytest.skip(f"could not start a throwaway PostgreSQL: {exc.stderr.decode()[-500:]}")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        with contextlib.suppress(Exception):
            subprocess.run([*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"], **run)
        shutil.rmtree(home, ignore_errors=True)


def test_submit_run_restart_on_postgres(service_factory, postgres_url, make_table, make_spec) -> None:
    svc = service_factory(env={"FRONTIER_DATABASE_URL": postgres_url, "FRONTIER_STORAGE": postgres_url})
    spec = make_spec(make_table(svc.data / "toy.csv"), **{"search.n_trials": 4})
    svc.start()
    with svc.client(ALICE) as c:
        sid = c.post("/studies", json=spec).json()["id"]
        done = wait_for(c, sid, ("succeeded", "failed"))
        assert done["state"] == "succeeded" and done["trials"]["done"] == 4, done
        assert len(c.get(f"/studies/{sid}/trials").json()) == 4
    svc.stop()
    svc.start()  # the registry lives in PostgreSQL: the study and its idempotency survive a restart
    with svc.client(ALICE) as c:
        again = c.post("/studies", json=spec)
        assert again.status_code == 200 and again.json()["id"] == sid
        assert c.get(f"/studies/{sid}").json()["state"] == "succeeded"
