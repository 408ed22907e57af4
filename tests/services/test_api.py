"""The study service over real HTTP: a ``frontier serve`` subprocess, real Ray workers, Optuna and MLflow."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.services.conftest import ADMIN, ALICE, BOB, Service, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    service = Service(tmp_path_factory.mktemp("api"), max_concurrent=2).start()
    yield service
    service.stop()


@pytest.fixture(scope="module")
def spec(svc: Service, make_table: Any, make_spec: Any) -> dict[str, Any]:
    table = make_table(svc.data / "toy.csv")
    return make_spec(table, **{"search.n_trials": 6})  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def finished(svc: Service, spec: dict[str, Any]) -> dict[str, Any]:
    with svc.client(ALICE) as c:
        r = c.post("/studies", json=spec)
        assert r.status_code == 201, r.text
        assert r.headers["location"] == f"/studies/{r.json()['id']}"
        return wait_for(c, r.json()["id"], ("succeeded", "failed"))


def test_health_and_openapi(svc: Service) -> None:
    with svc.client(None) as c:
        assert c.get("/health").json()["status"] == "ok"
        doc = c.get("/openapi.json").json()
    assert {"/studies", "/studies/{study_id}", "/studies/{study_id}/export", "/health"} <= set(doc["paths"])
    assert "StudySpec" in doc["components"]["schemas"]


@pytest.mark.parametrize("token", [None, "not-a-token"])
def test_no_or_unknown_token_is_401(svc: Service, token: str | None, spec: dict[str, Any]) -> None:
    with svc.client(token) as c:
        for method, path in (("GET", "/studies"), ("GET", "/studies/x"), ("POST", "/studies")):
            r = c.request(method, path, json=spec if method == "POST" else None)
            assert r.status_code == 401, (path, r.text)
            assert r.headers["www-authenticate"] == "Bearer"
            assert "bearer token" in r.json()["detail"]


def test_study_runs_to_success_with_counts_and_links(finished: dict[str, Any]) -> None:
    assert finished["state"] == "succeeded", finished
    assert finished["owner"] == "alice" and finished["storage_name"] == "alice--toy"
    t = finished["trials"]
    assert t["budget"] == 6 and t["done"] == 6 and t["complete"] + t["failed"] + t["pruned"] == 6
    assert finished["elapsed_s"] > 0 and finished["hypervolume"] > 0
    assert finished["mlflow_run_url"].startswith("http://127.0.0.1:5000/#/experiments/")


def test_trials_pareto_and_export(svc: Service, finished: dict[str, Any]) -> None:
    sid = finished["id"]
    with svc.client(ALICE) as c:
        rows = c.get(f"/studies/{sid}/trials").json()
        front = c.get(f"/studies/{sid}/pareto").json()
        exported = c.get(f"/studies/{sid}/export", params={"select": "min(f1)"})
        bad = c.get(f"/studies/{sid}/export", params={"select": "speed<=1"})
    assert [r["number"] for r in rows] == list(range(6))
    assert [r["number"] for r in front] == [r["number"] for r in rows if r["pareto"]]
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("application/yaml")
    doc = yaml.safe_load(exported.text)
    assert doc["frontier_export"] == 1 and doc["study"] == "alice--toy"
    assert doc["objectives"]["f1"] == min(r["values"]["f1"] for r in front)
    assert bad.status_code == 422 and "unknown metric 'speed'" in bad.json()["detail"]


def test_export_matches_the_cli(svc: Service, finished: dict[str, Any]) -> None:
    from typer.testing import CliRunner

    from frontier.services._cli import app

    front = [r["number"] for r in svc.client(ALICE).get(f"/studies/{finished['id']}/pareto").json()]
    select = f"trial={front[0]}"
    with svc.client(ALICE) as c:
        api = yaml.safe_load(c.get(f"/studies/{finished['id']}/export", params={"select": select}).text)
    storage = f"sqlite:///{(svc.home / 'run' / 'frontier.db').resolve()}"
    tracking = f"sqlite:///{(svc.home / 'run' / 'mlflow.db').resolve()}"
    out = CliRunner().invoke(
        app, ["export", "alice--toy", "--storage", storage, "--tracking-uri", tracking, "--select", select]
    )
    cli = yaml.safe_load(out.output)
    for doc in (api, cli):
        doc["provenance"].pop("exported_at")
    assert api == cli


def test_idempotent_resubmit_and_name_conflict(
    svc: Service, spec: dict[str, Any], finished: dict[str, Any]
) -> None:
    with svc.client(ALICE) as c:
        again = c.post("/studies", content=yaml.safe_dump(spec), headers={"Content-Type": "application/yaml"})
        assert again.status_code == 200 and again.json()["id"] == finished["id"]
        other = c.post("/studies", json={**spec, "search": {**spec["search"], "seed": 7}})
        assert other.status_code == 409
        assert "owner 'alice' already has a study named 'toy'" in other.json()["detail"]


def test_owners_are_isolated_and_admin_sees_all(
    svc: Service, spec: dict[str, Any], finished: dict[str, Any]
) -> None:
    sid = finished["id"]
    with svc.client(BOB) as bob:
        for path in ("", "/trials", "/pareto", "/export"):
            r = bob.get(f"/studies/{sid}{path}")
            assert r.status_code == 404 and f"no study with id '{sid}'" in r.json()["detail"], path
        assert bob.post(f"/studies/{sid}/cancel").status_code == 404
        assert all(s["owner"] == "bob" for s in bob.get("/studies").json()["studies"])
        assert bob.get("/studies", params={"owner": "alice"}).json()["studies"] == []
        # the same name is free for another owner, in its own Optuna namespace
        mine = bob.post("/studies", json={**spec, "search": {**spec["search"], "n_trials": 2}})
        assert mine.status_code == 201 and mine.json()["storage_name"] == "bob--toy"
        bob_id = mine.json()["id"]
    with svc.client(ADMIN) as admin:
        listed = admin.get("/studies").json()["studies"]
        assert {sid, bob_id} <= {s["id"] for s in listed}
        only_alice = admin.get("/studies", params={"owner": "alice"}).json()["studies"]
        assert {s["owner"] for s in only_alice} == {"alice"}
        assert admin.get(f"/studies/{sid}").status_code == 200
        done = wait_for(admin, bob_id, ("succeeded", "failed"))
        assert done["state"] == "succeeded"
        states = admin.get("/studies", params={"state": "succeeded"}).json()["studies"]
        assert all(s["state"] == "succeeded" for s in states) and {sid, bob_id} <= {s["id"] for s in states}


def _hostile(spec: dict[str, Any], svc: Service) -> list[tuple[str, Any, str, int, str]]:
    """(case, body, content type, status, message fragment)."""
    opts = spec["evaluator"]["options"]

    def ev(**extra: Any) -> dict[str, Any]:
        return {**spec, "evaluator": {"kind": "tabular", "options": {**opts, **extra}}}

    def search(**extra: Any) -> dict[str, Any]:
        return {**spec, "search": {**spec["search"], **extra}}

    escape = str(svc.data / ".." / ".." / "t.csv")
    return [
        ("unknown evaluator", {**spec, "evaluator": {"kind": "nope", "options": {}}}, "json", 422,
         "evaluator.kind: Unknown evaluator 'nope'. Available: ["),
        ("bad direction", {**spec, "objectives": [{"name": "f1", "direction": "up"}]}, "json", 422,
         "objectives[0].direction: Input should be 'minimize' or 'maximize' (got 'up')"),
        ("unknown field", {**spec, "sampler": "tpe"}, "json", 422, "sampler"),
        ("path outside roots", ev(table="/etc/x.csv"), "json", 422,
         "evaluator.options.table: the path '/etc/x.csv' is outside the allowed roots"),
        ("dotdot escape", ev(table=escape), "json", 422, "outside the allowed roots"),
        ("trust_remote_code", ev(trust_remote_code=True), "json", 422,
         "evaluator.options.trust_remote_code: trust_remote_code is not allowed"),
        ("huge n_trials", search(n_trials=10**30), "json", 422, "search.n_trials"),
        ("over service cap", search(n_trials=100000), "json", 422,
         "search.n_trials: must be <= 500 on this service, but got 100000"),
        ("storage set", {**spec, "storage": "sqlite:////tmp/evil.db"}, "json", 422,
         "storage: is set by the service and must not be given"),
        ("python tag", "name: !!python/object/apply:os.system ['true']\n", "yaml", 422, "not valid YAML"),
        ("not a mapping", "[1, 2]", "json", 422,
         "a study spec must be a mapping at the top level, but got list"),
        ("bad json", "{", "json", 422, "the body is not valid JSON"),
        ("content type", "x", "text/plain", 415, "Content-Type 'text/plain' is not supported"),
        ("too big", {**spec, "pad": "x" * (1 << 20)}, "json", 413, "max_body_bytes"),
    ]  # fmt: skip


def test_hostile_and_invalid_specs_get_clear_4xx(svc: Service, spec: dict[str, Any]) -> None:
    ctypes = {"json": "application/json", "yaml": "application/yaml"}
    with svc.client(ALICE) as c:
        before = c.get("/studies").json()["total"]
        for case, body, ctype, code, fragment in _hostile(spec, svc):
            content = body if isinstance(body, str) else json.dumps(body)
            r = c.post("/studies", content=content, headers={"Content-Type": ctypes.get(ctype, ctype)})
            assert r.status_code == code, (case, r.status_code, r.text[:500])
            assert fragment in r.json()["detail"], (case, r.json()["detail"])
        assert c.get("/studies").json()["total"] == before


def test_cancel_running_and_queued(svc: Service, spec: dict[str, Any]) -> None:
    slow = {**spec, "search": {**spec["search"], "n_trials": 40}}
    slow["evaluator"] = {**spec["evaluator"], "options": {**spec["evaluator"]["options"], "delay_s": 1.0}}
    with svc.client(ALICE) as c:
        ids = [c.post("/studies", json={**slow, "name": f"slow{i}"}).json()["id"] for i in range(3)]
        third = c.get(f"/studies/{ids[2]}").json()
        assert third["state"] == "queued"  # two slots: the third waits
        r = c.post(f"/studies/{ids[2]}/cancel")
        assert r.status_code == 200 and r.json()["state"] == "cancelled"
        running = wait_for(c, ids[0], ("running",))
        time.sleep(1.0)
        r = c.post(f"/studies/{ids[0]}/cancel")
        assert r.json()["state"] == "cancelled" and r.json()["error"] == "cancelled by request"
        c.post(f"/studies/{ids[1]}/cancel")
        assert wait_for(c, ids[1], ("cancelled",))["state"] == "cancelled"
        assert c.post(f"/studies/{ids[0]}/cancel").json()["state"] == "cancelled"  # idempotent
        time.sleep(1.0)
        assert c.get(f"/studies/{ids[0]}").json()["state"] == "cancelled"
    assert running["state"] == "running"
    deadline = time.monotonic() + 20
    while svc.worker_pids() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert svc.worker_pids() == []


def test_cancel_finished_is_409(svc: Service, finished: dict[str, Any]) -> None:
    with svc.client(ALICE) as c:
        r = c.post(f"/studies/{finished['id']}/cancel")
    assert r.status_code == 409 and "already succeeded" in r.json()["detail"]


def test_cli_submit_status_watch_cancel(
    svc: Service, spec: dict[str, Any], tmp_path: Path, monkeypatch
) -> None:
    from typer.testing import CliRunner

    from frontier.services._cli import app

    monkeypatch.setenv("FRONTIER_SERVER", svc.url)
    monkeypatch.setenv("FRONTIER_TOKEN", BOB)
    path = tmp_path / "cli.yaml"
    path.write_text(yaml.safe_dump({**spec, "name": "cli", "search": {**spec["search"], "n_trials": 3}}))
    runner = CliRunner()
    out = runner.invoke(app, ["submit", str(path)])
    assert out.exit_code == 0, out.output
    sid = out.output.strip().splitlines()[-1]
    assert "submitted:" in out.output and "bob/cli" in out.output
    watched = runner.invoke(app, ["watch", sid, "--interval", "0.5", "--timeout", "150"])
    assert watched.exit_code == 0, watched.output
    assert "succeeded" in watched.output and "3/3 trials" in watched.output
    status = runner.invoke(app, ["status", sid])
    assert status.exit_code == 0 and "elapsed_s" in status.output
    listing = runner.invoke(app, ["status"])
    assert listing.exit_code == 0 and sid in listing.output
    again = runner.invoke(app, ["cancel", sid])
    assert again.exit_code == 2 and "409" in again.output
    resumed = runner.invoke(app, ["resume", sid])  # a succeeded study has nothing to resume
    assert resumed.exit_code == 2 and "only a failed or cancelled study can be resumed" in resumed.output
    nope = runner.invoke(app, ["status", "nope", "--token", "bad-token-0"])
    assert nope.exit_code == 2 and "401" in nope.output
