"""User-facing services: the ``frontier`` CLI, settings and the HTTP study service.

``create_app`` is imported lazily so that CLI commands that do not serve never import FastAPI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from frontier.services._settings import Settings, get_settings

if TYPE_CHECKING:
    from frontier.services._api import create_app

__all__ = ["Settings", "create_app", "get_settings"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from frontier.services._api import create_app

        return create_app
    raise AttributeError(f"module 'services' has no attribute {name!r}")
