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


def test_settings_reserve_the_admin_owner_name() -> None:
    for owner in ("admin", "Admin"):
        with pytest.raises(ValueError, match=f"owner '{owner}' is reserved for admin_tokens"):
            Settings(tokens={"long-enough-token": owner})


def test_final_state_is_honest_about_studies_without_a_complete_trial() -> None:
    from frontier.search import TrialRow
    from frontier.services._db import StudyState
    from frontier.services._worker import final_state

    def row(n: int, state: str, error: str | None = None) -> TrialRow:
        return TrialRow(n, state, {}, {}, {}, {}, False, False, error=error)

    timeout = "TimeoutError: trial 0 ran over trial_timeout_s=120.0"
    failed = [row(0, "fail", timeout), row(1, "fail", "ValueError: x"), row(2, "fail", timeout)]
    assert final_state(failed, "finished") == (
        StudyState.failed,
        f"no trial completed (3 fail of 3); the commonest error (2 of 3): {timeout}",
    )
    assert final_state([], "stopped") == (StudyState.failed, "no trial ran (the run ended stopped)")
    assert final_state([row(0, "pruned")], "finished") == (
        StudyState.failed,
        "no trial completed (1 pruned of 1)",
    )
    assert final_state([row(0, "complete"), *failed], "finished") == (StudyState.succeeded, None)
    assert final_state([row(0, "complete")], "stopped") == (
        StudyState.succeeded,
        "stopped before the budget (stopped)",
    )


def test_resume_requeues_a_failed_study(client: TestClient, spec: dict[str, Any]) -> None:
    from frontier.services._db import StudyRecord

    sid = client.post("/studies", json=spec, headers=auth(ALICE)).json()["id"]
    registry = client.app.state.registry  # type: ignore[attr-defined]
    with registry.session() as s:
        rec = s.get(StudyRecord, sid)
        rec.state, rec.error, rec.attempts, rec.pid = (
            "failed",
            "gave up after 3 abnormal worker deaths",
            3,
            99,
        )
    r = client.post(f"/studies/{sid}/resume", headers=auth(ALICE))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["state"] == "queued" and body["error"] is None and body["worker_failures"] == 0
    assert body["finished_at"] is None and body["created_at"].endswith("Z")
    again = client.post(f"/studies/{sid}/resume", headers=auth(ALICE))
    assert again.status_code == 409
    assert again.json()["detail"] == (
        "the study is queued: only a failed or cancelled study can be resumed (it is already going)"
    )


def test_effective_name_and_resources_in_process(settings: Settings, spec: dict[str, Any]) -> None:
    from frontier.services._policy import check_effective_name

    check_effective_name("alice", "n" * 121)
    with pytest.raises(SpecError, match=r"name: this service runs the study as 'alice--<name>'.*at most 121"):
        check_effective_name("alice", "n" * 122)
    with pytest.raises(SpecError, match="must match"):
        check_effective_name("_alice", "toy")  # an owner the pattern's first character refuses
    small = settings.model_copy(update={"cluster_cpus": 2.0, "cluster_gpus": 0.0})
    with pytest.raises(SpecError, match=r"resources\.gpu: each trial asks for 1 GPUs, but .* has 0"):
        check_policy(spec_from_dict({**spec, "resources": {"gpu": 1}}), small)
    with pytest.raises(SpecError, match=r"resources\.cpu: each trial asks for 2\.5 CPUs, but .* has 2"):
        check_policy(spec_from_dict({**spec, "resources": {"cpu": 2.5}}), small)
    remote = settings.model_copy(update={"ray_address": "10.0.0.5:6379"})
    assert check_policy(spec_from_dict({**spec, "resources": {"gpu": 8}}), remote).resources.gpu == 8
