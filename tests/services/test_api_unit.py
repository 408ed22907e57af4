"""The HTTP layer in-process (no scheduler, no workers): auth, validation messages, idempotency, cancel."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from frontier.services import Settings
from frontier.services._api import create_app
from frontier.services._policy import check_policy, parse_body
from frontier.spaces import SpecError, spec_from_dict

ALICE, BOB, ADMIN = "alice-token-1", "bob-token-22", "admin-token-333"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    (tmp_path / "data").mkdir()
    return Settings(
        run_dir=tmp_path / "run",
        tokens={ALICE: "alice", BOB: "bob"},
        admin_tokens=[ADMIN],
        allowed_roots=[tmp_path / "data"],
        max_trials_per_study=100,
        max_body_bytes=4096,
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, start_scheduler=False)) as c:
        yield c


@pytest.fixture
def spec(settings: Settings, make_table: Any, make_spec: Any) -> dict[str, Any]:
    return make_spec(make_table(settings.allowed_roots[0] / "toy.csv"))  # type: ignore[no-any-return]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_submit_is_queued_idempotent_and_private(client: TestClient, spec: dict[str, Any]) -> None:
    first = client.post("/studies", json=spec, headers=auth(ALICE))
    assert first.status_code == 201, first.text
    body = first.json()
    assert (
        body["state"] == "queued" and body["storage_name"] == "alice--toy" and body["trials"]["budget"] == 12
    )
    again = client.post("/studies", json=spec, headers=auth(ALICE))
    assert again.status_code == 200 and again.json()["id"] == body["id"]
    assert client.get(f"/studies/{body['id']}", headers=auth(BOB)).status_code == 404
    assert client.get(f"/studies/{body['id']}/trials", headers=auth(ALICE)).json() == []
    assert client.get(f"/studies/{body['id']}/export", headers=auth(ALICE)).status_code == 409
    assert client.get("/studies", headers=auth(BOB)).json() == {"studies": [], "total": 0}
    assert client.get("/studies", headers=auth(ADMIN), params={"state": "queued"}).json()["total"] == 1
    cancelled = client.post(f"/studies/{body['id']}/cancel", headers=auth(ALICE))
    assert cancelled.json()["state"] == "cancelled"
    assert client.get("/studies", headers=auth(ALICE), params={"state": "queued"}).json()["total"] == 0


def test_missing_token_is_401(client: TestClient) -> None:
    r = client.get("/studies")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"


def test_body_over_the_limit_is_413(client: TestClient) -> None:
    r = client.post(
        "/studies", content=b"x" * 5000, headers={**auth(ALICE), "Content-Type": "application/json"}
    )
    assert r.status_code == 413 and "max_body_bytes=4096" in r.json()["detail"]


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (
            lambda s: s["evaluator"]["options"].update(table="/etc/passwd.csv"),
            "evaluator.options.table: the path",
        ),
        (
            lambda s: s["evaluator"]["options"].update(Trust_Remote_Code=True),
            "trust_remote_code is not allowed",
        ),
        (
            lambda s: s["search"].update(n_trials=101),
            "search.n_trials: must be <= 100 on this service, but got 101",
        ),
        (lambda s: s.update(address="ray://evil:10001"), "address: is set by the service"),
        (lambda s: s.update(tracking={"uri": "file:///tmp"}), "tracking.uri: is set by the service"),
    ],
)
def test_policy_errors_name_the_field(
    settings: Settings, spec: dict[str, Any], mutate: Any, match: str
) -> None:
    mutate(spec)
    with pytest.raises(SpecError, match=match.replace("(", r"\(").replace(".", r"\.")):
        check_policy(spec_from_dict(spec), settings)


def test_yaml_tags_and_unknown_media_types_are_refused() -> None:
    with pytest.raises(SpecError, match="tags such as !!python"):
        parse_body(b"a: !!python/name:os.system\n", "application/yaml")
    with pytest.raises(ValueError, match="Content-Type 'text/plain' is not supported"):
        parse_body(b"{}", "text/plain")


def test_relative_table_path_inside_a_root_is_made_absolute(
    settings: Settings, spec: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(settings.allowed_roots[0])
    spec["evaluator"]["options"]["table"] = "toy.csv"
    checked = check_policy(spec_from_dict(spec), settings)
    assert checked.evaluator.options["table"] == str((settings.allowed_roots[0] / "toy.csv").resolve())


def test_settings_reject_owner_names_with_dashes() -> None:
    with pytest.raises(ValueError, match="owner 'a--b' must match"):
        Settings(tokens={"long-enough-token": "a--b"})
