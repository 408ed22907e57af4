"""``/studies``: submit, list, inspect, read trials and the Pareto set, export a point, cancel."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from frontier.services._db import StudyRecord, StudyState, utcnow
from frontier.services._deps import PrincipalDep, RegistryDep, SchedulerDep, SettingsDep
from frontier.services._policy import UnsupportedMediaType, spec_hash, validate_submission
from frontier.services._settings import Settings
from frontier.spaces import SpecError

router = APIRouter(
    prefix="/studies",
    tags=["studies"],
    responses={401: {"description": "Missing or unknown bearer token (send 'Authorization: Bearer TOKEN')."}},
)


def _utc(when: dt.datetime | None) -> dt.datetime | None:
    """The registry stores naive UTC; the API says so (an RFC 3339 date-time needs its offset)."""
    return None if when is None else when.replace(tzinfo=dt.UTC)


class TrialCounts(BaseModel):
    budget: int
    done: int
    complete: int
    failed: int
    pruned: int


class StudyOut(BaseModel):
    """A study as the service reports it."""

    id: str
    owner: str
    name: str
    storage_name: str = Field(description="The Optuna study name: OWNER--NAME.")
    state: StudyState
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    elapsed_s: float | None
    trials: TrialCounts
    hypervolume: float | None
    worker_failures: int = Field(
        description="Abnormal deaths of the study's worker (killed, or exited without an outcome); each is "
        "retried after a backoff until the service's max_worker_failures."
    )
    mlflow_run_url: str | None
    error: str | None
    spec: dict[str, Any]


class StudyList(BaseModel):
    studies: list[StudyOut]
    total: int


def _out(rec: StudyRecord, settings: Settings) -> StudyOut:
    elapsed = None
    if rec.started_at is not None:
        end = rec.finished_at or utcnow()
        elapsed = max(0.0, (end - rec.started_at).total_seconds())
    url = None
    if rec.mlflow_run_id:
        url = (
            f"{settings.mlflow_ui_url.rstrip('/')}/#/experiments/{rec.mlflow_experiment_id or '0'}"
            f"/runs/{rec.mlflow_run_id}"
        )
    return StudyOut(
        id=rec.id,
        owner=rec.owner,
        name=rec.name,
        storage_name=rec.storage_name,
        state=StudyState(rec.state),
        created_at=rec.created_at.replace(tzinfo=dt.UTC),
        started_at=_utc(rec.started_at),
        finished_at=_utc(rec.finished_at),
        elapsed_s=elapsed,
        trials=TrialCounts(
            budget=rec.n_trials,
            done=rec.complete + rec.failed + rec.pruned,
            complete=rec.complete,
            failed=rec.failed,
            pruned=rec.pruned,
        ),
        hypervolume=rec.hypervolume,
        worker_failures=rec.attempts or 0,
        mlflow_run_url=url,
        error=rec.error,
        spec=rec.spec,
    )


async def _body(request: Request) -> bytes:
    return await request.body()


_spec_body = {
    "requestBody": {
        "required": True,
        "description": "A study spec as JSON or YAML (see configs/quickstart.yaml).",
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/StudySpec"}},
            "application/yaml": {"schema": {"type": "string"}},
        },
    }
}


@router.post(
    "",
    response_model=StudyOut,
    status_code=status.HTTP_201_CREATED,
    openapi_extra=_spec_body,
    responses={
        200: {"model": StudyOut, "description": "The same spec was submitted before: the existing study."},
        409: {"description": "A study of this name with another spec exists for this owner."},
        413: {"description": "The body is larger than max_body_bytes."},
        415: {"description": "The Content-Type is neither JSON nor YAML."},
        422: {"description": "The spec is invalid: the message names the field path and the rule."},
    },
)
def submit(
    body: Annotated[bytes, Depends(_body)],
    request: Request,
    response: Response,
    principal: PrincipalDep,
    registry: RegistryDep,
    scheduler: SchedulerDep,
    settings: SettingsDep,
) -> StudyOut:
    """Validate a spec and queue it. Resubmitting an identical spec returns the existing study."""
    try:
        spec = validate_submission(body, request.headers.get("content-type"), settings, owner=principal.owner)
    except UnsupportedMediaType as exc:
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, detail=str(exc)) from None
    except SpecError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, detail=str(exc)) from None
    digest = spec_hash(spec)
    for _ in range(2):
        with registry.session() as s:
            existing = s.scalar(
                select(StudyRecord).where(
                    (StudyRecord.owner == principal.owner) & (StudyRecord.name == spec.name)
                )
            )
            if existing is not None:
                if existing.spec_hash != digest:
                    raise HTTPException(
                        status.HTTP_409_CONFLICT,
                        detail=f"name: owner '{principal.owner}' already has a study named '{spec.name}' "
                        f"(id {existing.id}) with a different spec. Choose another name.",
                    )
                response.status_code = status.HTTP_200_OK
                return _out(existing, settings)
        try:
            with registry.session() as s:
                rec = StudyRecord(
                    owner=principal.owner,
                    name=spec.name,
                    storage_name=f"{principal.owner}--{spec.name}",
                    spec=spec.to_dict(),
                    spec_hash=digest,
                    state=StudyState.queued.value,
                    n_trials=spec.search.n_trials,
                    created_at=utcnow(),
                )
                s.add(rec)
        except IntegrityError:
            continue  # a concurrent identical submission won the race: report that one
        scheduler.wake()
        response.headers["Location"] = f"/studies/{rec.id}"
        return _out(rec, settings)
    raise HTTPException(status.HTTP_409_CONFLICT, detail=f"name: '{spec.name}' was submitted concurrently")


@router.get("", response_model=StudyList)
def list_studies(
    principal: PrincipalDep,
    registry: RegistryDep,
    settings: SettingsDep,
    state: Annotated[StudyState | None, Query(description="Only studies in this state.")] = None,
    owner: Annotated[str | None, Query(max_length=64, description="Only this owner's (admin).")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> StudyList:
    """Studies the caller may see, newest first."""
    query = select(StudyRecord)
    if not principal.admin:
        query = query.where(StudyRecord.owner == principal.owner)
    if owner is not None:
        query = query.where(StudyRecord.owner == owner)
    if state is not None:
        query = query.where(StudyRecord.state == state.value)
    with registry.session() as s:
        total = s.scalar(select(func.count()).select_from(query.subquery())) or 0
        page = s.scalars(
            query.order_by(StudyRecord.created_at.desc(), StudyRecord.id).limit(limit).offset(offset)
        ).all()
    return StudyList(studies=[_out(r, settings) for r in page], total=total)


def _visible(study_id: str, principal: PrincipalDep, registry: RegistryDep) -> StudyRecord:
    with registry.session() as s:
        rec = s.get(StudyRecord, study_id)
    if rec is None or not principal.may_see(rec.owner):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no study with id {study_id!r}")
    return rec


VisibleStudy = Annotated[StudyRecord, Depends(_visible)]


@router.get("/{study_id}", response_model=StudyOut, responses={404: {"description": "No such study."}})
def get_study(rec: VisibleStudy, settings: SettingsDep) -> StudyOut:
    """State, trial counts, elapsed time, hypervolume and MLflow link of one study."""
    return _out(rec, settings)


def _rows(rec: StudyRecord, settings: Settings) -> list[dict[str, Any]]:
    from frontier.search import load_study, stored_spec, trial_rows

    if rec.state == StudyState.queued.value:
        return []
    try:
        study = load_study(rec.storage_name, settings.storage_url())
        spec = stored_spec(study)
    except ValueError:  # not in the storage yet (its worker is starting)
        return []
    return [r.to_dict() for r in trial_rows(study, spec)]


@router.get("/{study_id}/trials", responses={404: {"description": "No such study."}})
def get_trials(rec: VisibleStudy, settings: SettingsDep) -> list[dict[str, Any]]:
    """Every trial in order: number, state, params, values, metrics, constraints, feasible, pareto."""
    return _rows(rec, settings)


@router.get("/{study_id}/pareto", responses={404: {"description": "No such study."}})
def get_pareto(rec: VisibleStudy, settings: SettingsDep) -> list[dict[str, Any]]:
    """The Pareto set so far: complete, feasible, non-dominated trials."""
    return [r for r in _rows(rec, settings) if r["pareto"]]


@router.get(
    "/{study_id}/export",
    response_class=PlainTextResponse,
    responses={
        200: {
            "content": {"application/yaml": {}},
            "description": "The export document (as frontier export).",
        },
        404: {"description": "No such study."},
        409: {"description": "The study has no Pareto point yet."},
        422: {"description": "The select expression cannot be read or matches nothing."},
    },
)
def export(
    rec: VisibleStudy,
    settings: SettingsDep,
    select_: Annotated[
        str | None,
        Query(alias="select", max_length=500, description="e.g. 'f2<=0.5, min(f1)' or 'trial=3'."),
    ] = None,
) -> PlainTextResponse:
    """One Pareto point as YAML: the same document as ``frontier export``."""
    from frontier.search import export_point

    if rec.state == StudyState.queued.value:
        raise HTTPException(status.HTTP_409_CONFLICT, detail="the study is queued: it has no trials yet")
    try:
        doc = export_point(rec.storage_name, settings.storage_url(), select_, settings.tracking())
    except ValueError as exc:
        message = str(exc)
        code = status.HTTP_409_CONFLICT if "no feasible" in message or "Unknown study" in message else 422
        raise HTTPException(code, detail=f"select: {message}" if code == 422 else message) from None
    return PlainTextResponse(yaml.safe_dump(doc, sort_keys=False), media_type="application/yaml")


@router.post(
    "/{study_id}/cancel",
    response_model=StudyOut,
    responses={404: {"description": "No such study."}, 409: {"description": "Already finished."}},
)
def cancel(
    rec: VisibleStudy, scheduler: SchedulerDep, registry: RegistryDep, settings: SettingsDep
) -> StudyOut:
    """Cancel a queued or running study (its worker's process group is terminated)."""
    state = scheduler.cancel(rec.id)
    if state in (StudyState.succeeded.value, StudyState.failed.value):
        raise HTTPException(status.HTTP_409_CONFLICT, detail=f"the study already {state}; nothing to cancel")
    with registry.session() as s:
        fresh = s.get(StudyRecord, rec.id)
    assert fresh is not None
    return _out(fresh, settings)


@router.post(
    "/{study_id}/resume",
    response_model=StudyOut,
    responses={
        404: {"description": "No such study."},
        409: {"description": "The study is queued, running or succeeded: nothing to resume."},
    },
)
def resume(rec: VisibleStudy, scheduler: SchedulerDep, settings: SettingsDep) -> StudyOut:
    """Queue a failed or cancelled study again under its name: it resumes from the Optuna storage, keeping
    every finished trial, with a fresh count of worker failures."""
    try:
        fresh = scheduler.resume(rec.id)
    except ValueError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from None
    return _out(fresh, settings)
