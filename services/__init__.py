"""User-facing services: the ``frontier`` CLI and settings (the HTTP API comes next)."""

from services._settings import Settings, get_settings

__all__ = ["Settings", "get_settings"]
