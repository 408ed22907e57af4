"""Issue 18's hostile inputs against a real ``frontier serve`` on 127.0.0.1 (queue paused: nothing runs).

Each body is the outside probe's: a YAML alias bomb, deep nesting, NaN/Infinity, ``n_trials: true``, a name
too long once the owner is prefixed, resources no cluster here has, a path field outside the allowed roots.
Each must get a 422 that names the rule, quickly, while ``/health`` keeps answering.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.services.conftest import ADMIN, ALICE, BOB, Service

pytestmark = pytest.mark.integration

JSON, YAML = "application/json", "application/yaml"


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    service = Service(tmp_path_factory.mktemp("hostile"), max_concurrent=0).start()
    yield service
    service.stop()


@pytest.fixture(scope="module")
def spec(svc: Service, make_table: Any, make_spec: Any) -> dict[str, Any]:
    return make_spec(make_table(svc.data / "toy.csv"), **{"search.n_trials": 3})  # type: ignore[no-any-return]


def post(svc: Service, body: str | dict[str, Any], ctype: str = JSON, token: str = ALICE) -> httpx.Response:
    content = body if isinstance(body, str) else json.dumps(body)
    with svc.client(token) as c:
        return c.post("/studies", content=content, headers={"Content-Type": ctype})


def alias_bomb(levels: int = 8) -> str:
    """The probe's billion-laughs body: each level lists the previous one 10 times (10^levels strings)."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


def test_yaml_alias_bomb_is_refused_before_expansion_and_health_stays_up(svc: Service) -> None:
    bomb = alias_bomb()
    assert 450 < len(bomb) < 600  # the probe's was 503 bytes
    latencies: list[float] = []
    stop = threading.Event()

    def poll_health() -> None:
        with httpx.Client(base_url=svc.url, timeout=30) as c:
            while not stop.is_set():
                start = time.monotonic()
                assert c.get("/health").status_code == 200
                latencies.append(time.monotonic() - start)
                time.sleep(0.05)

    poller = threading.Thread(target=poll_health)
    poller.start()
    try:
        start = time.monotonic()
        responses = [post(svc, bomb, YAML) for _ in range(3)]
        took = time.monotonic() - start
    finally:
        stop.set()
        poller.join(60)
    for r in responses:
        assert r.status_code == 422, r.text[:300]
        assert "YAML anchors and aliases are not allowed in a spec" in r.json()["detail"]
        assert "line 1 has the anchor (&a0)" in r.json()["detail"]
    assert took < 10, took  # the probe's took 102 s and 2.7 GB
    assert latencies and max(latencies) < 5, latencies


def test_yaml_aliases_without_a_bomb_are_refused_too(svc: Service) -> None:
    r = post(svc, "name: &n toy\nother: *n\n", YAML)
    assert r.status_code == 422 and "anchors and aliases are not allowed" in r.json()["detail"]


def _deep_list(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


@pytest.mark.parametrize(
    ("case", "body", "ctype"),
    [
        ("300-deep list in a spec (JSON)", "DEEP_SPEC", JSON),
        ("300-deep list in a spec (YAML)", "DEEP_SPEC", YAML),
        ("[ x 100000 as JSON", "[" * 100_000, JSON),
        ("[ x 100000 as YAML", "[" * 100_000, YAML),
        ("{ x 50000 as JSON", '{"a":' * 50_000, JSON),
        ("300-deep closed list as JSON", _deep_list(300), JSON),
    ],
)
def test_deep_nesting_is_a_422_naming_the_bound(
    svc: Service, spec: dict[str, Any], case: str, body: str, ctype: str
) -> None:
    if body == "DEEP_SPEC":
        text = json.dumps({**spec, "evaluator": {**spec["evaluator"], "options": {"deep": "@"}}})
        body = text.replace('"@"', _deep_list(300))
        assert len(body) < 1200  # the probe's was 781 bytes
    r = post(svc, body, ctype)
    assert r.status_code == 422, (case, r.status_code, r.text[:300])
    assert "nested deeper than 32 levels of lists and mappings" in r.json()["detail"], case
    with svc.client(None) as c:
        assert c.get("/health").status_code == 200


@pytest.mark.parametrize(
    ("body", "ctype", "fragment"),
    [
        ('"reference": NaN', JSON, "numbers in a spec must be finite, but the JSON has NaN"),
        ('"reference": Infinity', JSON, "numbers in a spec must be finite, but the JSON has Infinity"),
        ('"reference": -Infinity', JSON, "numbers in a spec must be finite, but the JSON has -Infinity"),
        ("reference: .nan", YAML, "objectives[0].reference: numbers in a spec must be finite, but got nan"),
        ("reference: .inf", YAML, "objectives[0].reference: numbers in a spec must be finite, but got inf"),
        ("options_x: -.inf", YAML, "evaluator.options.x: numbers in a spec must be finite, but got -inf"),
    ],
)
def test_non_finite_numbers_are_refused_everywhere(
    svc: Service, spec: dict[str, Any], body: str, ctype: str, fragment: str
) -> None:
    if body.startswith("options_x"):
        doc = {
            **spec,
            "evaluator": {**spec["evaluator"], "options": {**spec["evaluator"]["options"], "x": 1}},
        }
        text = json.dumps(doc).replace('"x": 1', '"x": -.inf')  # JSON is YAML; -.inf is YAML's -infinity
    else:
        doc = {
            **spec,
            "objectives": [{"name": "f1", "direction": "minimize", "reference": 1.0}, spec["objectives"][1]],
        }
        text = json.dumps(doc).replace(
            '"reference": 1.0', body if ctype == JSON else body.replace("reference", '"reference"')
        )
    r = post(svc, text, ctype)
    assert r.status_code == 422, r.text[:300]
    assert fragment in r.json()["detail"]


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("n_trials", True, "search.n_trials: Input should be a valid integer (got True)"),
        ("n_trials", "3", "search.n_trials: Input should be a valid integer (got '3')"),
        ("n_trials", 3.0, "search.n_trials: Input should be a valid integer (got 3.0)"),
        ("concurrency", False, "search.concurrency: Input should be a valid integer (got False)"),
        ("seed", True, "search.seed: Input should be a valid integer (got True)"),
    ],
)
def test_counts_are_strict_integers(
    svc: Service, spec: dict[str, Any], field: str, value: Any, fragment: str
) -> None:
    r = post(svc, {**spec, "search": {**spec["search"], field: value}})
    assert r.status_code == 422, r.text[:300]
    assert fragment in r.json()["detail"]


def test_effective_name_is_validated_at_submission(svc: Service, spec: dict[str, Any]) -> None:
    r = post(svc, {**spec, "name": "n" * 128})
    assert r.status_code == 422, r.text[:300]
    detail = r.json()["detail"]
    assert "name: this service runs the study as 'alice--<name>'" in detail
    assert "got 135 characters" in detail and "Use a name of at most 121 characters" in detail
    fits = post(svc, {**spec, "name": "n" * 121})
    assert fits.status_code == 201, fits.text[:300]
    assert fits.json()["storage_name"] == "alice--" + "n" * 121
    with svc.client(ALICE) as c:
        c.post(f"/studies/{fits.json()['id']}/cancel")


def test_resources_no_cluster_here_has_are_refused(svc: Service, spec: dict[str, Any]) -> None:
    from frontier.services._settings import local_gpus

    if local_gpus() >= 8 or (os.cpu_count() or 1) >= 64:
        pytest.skip("this machine has 8 GPUs or 64 CPUs")
    gpu = post(svc, {**spec, "resources": {"gpu": 8}})
    assert gpu.status_code == 422, gpu.text[:300]
    assert (
        f"resources.gpu: each trial asks for 8 GPUs, but this service's Ray cluster has {local_gpus()}"
        in (gpu.json()["detail"])
    )
    cpu = post(svc, {**spec, "resources": {"cpu": 64}})
    assert cpu.status_code == 422
    assert (
        f"resources.cpu: each trial asks for 64 CPUs, but this service's Ray cluster has {os.cpu_count()}"
        in (cpu.json()["detail"])
    )
    assert "no trial could ever be placed" in cpu.json()["detail"]


def test_every_path_field_is_held_to_the_allowed_roots(svc: Service, spec: dict[str, Any], tmp_path) -> None:
    outside = tmp_path / "elsewhere" / "cache.db"
    r = post(svc, {**spec, "latency": {"cache": str(outside)}})
    assert r.status_code == 422, r.text[:300]
    assert f"latency.cache: the path '{outside}' is outside the allowed roots" in r.json()["detail"]
    assert not outside.parent.exists()  # nothing was created
    escape = post(svc, {**spec, "latency": {"cache": str(svc.data / ".." / "cache.db")}})
    assert escape.status_code == 422 and "latency.cache: the path" in escape.json()["detail"]
    inside = post(svc, {**spec, "name": "cache-inside", "latency": {"cache": str(svc.data / "lat.db")}})
    assert inside.status_code == 201, inside.text[:300]
    assert inside.json()["spec"]["latency"]["cache"] == str((svc.data / "lat.db").resolve())
    with svc.client(ALICE) as c:
        c.post(f"/studies/{inside.json()['id']}/cancel")


def test_admin_owner_name_is_reserved(service_factory) -> None:
    bad = service_factory(env={"FRONTIER_TOKENS": json.dumps({"user-token-1234": "admin"})})
    with pytest.raises(RuntimeError, match="owner 'admin' is reserved for admin_tokens"):
        bad.start()


def test_openapi_documents_401_and_datetimes_carry_an_offset(svc: Service, spec: dict[str, Any]) -> None:
    with svc.client(None) as c:
        doc = c.get("/openapi.json").json()
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if path == "/health":
                assert "401" not in op["responses"]
            else:
                assert "401" in op["responses"], (method, path)
    created = doc["components"]["schemas"]["StudyOut"]["properties"]["created_at"]
    assert created["format"] == "date-time"
    r = post(svc, {**spec, "name": "dates"})
    assert r.status_code == 201, r.text[:300]
    with svc.client(ALICE) as c:
        c.post(f"/studies/{r.json()['id']}/cancel")
        body = c.get(f"/studies/{r.json()['id']}").json()
    for key in ("created_at", "finished_at"):
        when = dt.datetime.fromisoformat(body[key])
        assert when.utcoffset() == dt.timedelta(0), (key, body[key])


def test_resume_route(svc: Service, spec: dict[str, Any]) -> None:
    r = post(svc, {**spec, "name": "resumable"})
    sid = r.json()["id"]
    with svc.client(ALICE) as c:
        queued = c.post(f"/studies/{sid}/resume")
        assert queued.status_code == 409
        assert (
            "the study is queued: only a failed or cancelled study can be resumed" in queued.json()["detail"]
        )
        c.post(f"/studies/{sid}/cancel")
        again = c.post(f"/studies/{sid}/resume")
        assert again.status_code == 200, again.text
        assert again.json()["state"] == "queued" and again.json()["error"] is None
        assert again.json()["id"] == sid and again.json()["worker_failures"] == 0
        assert c.post("/studies/nope/resume").status_code == 404
    with svc.client(BOB) as bob:
        assert bob.post(f"/studies/{sid}/resume").status_code == 404
    with svc.client(None) as anon:
        assert anon.post(f"/studies/{sid}/resume").status_code == 401
    with svc.client(ADMIN) as admin:
        admin.post(f"/studies/{sid}/cancel")
