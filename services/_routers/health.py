"""``/health``: liveness and a count of studies by state (no auth)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from frontier.services._deps import SchedulerDep

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str
    studies: dict[str, int]
    workers: int


@router.get("/health", response_model=Health)
def health(scheduler: SchedulerDep) -> Health:
    return Health(status="ok", studies=scheduler.counts(), workers=scheduler.running_count())
