"""Settings from the environment (prefix ``FRONTIER_``), read once through :func:`get_settings`."""

from __future__ import annotations

import functools
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Where Frontier keeps things and how it reaches Ray and MLflow.

    Attributes:
        run_dir: home of the default Optuna storage (``frontier.db``), MLflow store and Ray files.
        storage: Optuna storage URL; default ``sqlite:///RUN_DIR/frontier.db``.
        tracking_uri: MLflow tracking URI; default ``sqlite:///RUN_DIR/mlflow.db``.
        ray_address: an existing Ray cluster; default a local Ray started on demand.
    """

    model_config = SettingsConfigDict(env_prefix="FRONTIER_", extra="ignore")

    run_dir: Path = Path("runs")
    storage: str | None = None
    tracking_uri: str | None = None
    ray_address: str | None = None

    def storage_url(self) -> str:
        from search import default_storage

        return self.storage or default_storage(self.run_dir)

    def tracking(self) -> str:
        from search import default_tracking_uri

        return self.tracking_uri or default_tracking_uri(self.run_dir)


@functools.cache
def get_settings() -> Settings:
    return Settings()
