"""Dependencies shared by the routers: settings, registry, scheduler and the caller's identity."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from frontier.services._db import Registry
from frontier.services._runner import Scheduler
from frontier.services._settings import ADMIN_OWNER, Settings, get_settings

SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_registry(request: Request) -> Registry:
    return request.app.state.registry


def get_scheduler(request: Request) -> Scheduler:
    return request.app.state.scheduler


RegistryDep = Annotated[Registry, Depends(get_registry)]
SchedulerDep = Annotated[Scheduler, Depends(get_scheduler)]

_bearer = HTTPBearer(auto_error=False, description="A token from FRONTIER_TOKENS or FRONTIER_ADMIN_TOKENS.")


@dataclass(frozen=True)
class Principal:
    """Who is calling: an owner name, and whether they may see every owner's studies."""

    owner: str
    admin: bool = False

    def may_see(self, owner: str) -> bool:
        return self.admin or owner == self.owner


def get_principal(
    settings: SettingsDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    unauthorized = HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        detail="missing or unknown bearer token: send 'Authorization: Bearer TOKEN'",
        headers={"WWW-Authenticate": "Bearer"},
    )
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise unauthorized
    given = credentials.credentials.encode()
    for token in settings.admin_tokens:
        if hmac.compare_digest(token.encode(), given):
            return Principal(ADMIN_OWNER, admin=True)
    for token, owner in settings.tokens.items():
        if hmac.compare_digest(token.encode(), given):
            return Principal(owner)
    raise unauthorized


PrincipalDep = Annotated[Principal, Depends(get_principal)]
