"""Settings from the environment (prefix ``FRONTIER_``), read once through :func:`get_settings`."""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

OWNER_PATTERN = re.compile(r"^[A-Za-z0-9_.]{1,64}$")
# The owner name of admin tokens' studies: a user token may not use it (it would share the admin namespace).
ADMIN_OWNER = "admin"


class Settings(BaseSettings):
    """Where Frontier keeps things and how it reaches Ray and MLflow.

    Attributes:
        run_dir: home of the default Optuna storage (``frontier.db``), MLflow store and Ray files.
        storage: Optuna storage URL; default ``sqlite:///RUN_DIR/frontier.db``.
        tracking_uri: MLflow tracking URI; default ``sqlite:///RUN_DIR/mlflow.db``.
        ray_address: an existing Ray cluster; default a local Ray started on demand.
        database_url: the study service's registry (SQLAlchemy URL); default ``sqlite:///RUN_DIR/service.db``.
        tokens: bearer token -> owner name, e.g. ``FRONTIER_TOKENS='{"t0k3n": "alice"}'``.
        admin_tokens: bearer tokens that see and cancel every owner's studies (owner ``admin``).
        allowed_roots: directories that evaluator options may name files under.
        max_concurrent_studies: studies run at once; the rest wait in a FIFO queue (0 pauses the queue).
        max_trials_per_study: the largest ``search.n_trials`` the service accepts.
        max_body_bytes: the largest request body the service accepts (larger gets 413).
        mlflow_ui_url: base URL of the MLflow UI, used to build each study's run link.
        host, port: where ``frontier serve`` listens.
        poll_interval_s: how often the scheduler reaps finished studies and starts queued ones.
        cluster_cpus, cluster_gpus: what the Ray cluster offers at most; a spec whose one trial needs more
            is refused at submission. Default: this machine's without ``ray_address``, else unknown (no
            check).
        placement_timeout_s: how long a running study may wait for its cluster to have room for one trial
            (an autoscaling cluster may grow) before it fails with an error that says so.
        max_worker_failures: abnormal deaths of a study's worker (killed by a signal, e.g. the OOM killer, or
            exited without an outcome) before the study is marked failed; graceful service restarts do not
            count.
        retry_backoff_s: the wait before relaunching a study after its worker's first abnormal death,
            doubled after each further one.
    """

    model_config = SettingsConfigDict(env_prefix="FRONTIER_", extra="ignore")

    run_dir: Path = Path("runs")
    storage: str | None = None
    tracking_uri: str | None = None
    ray_address: str | None = None
    database_url: str | None = None
    tokens: dict[str, str] = Field(default_factory=dict)
    admin_tokens: list[str] = Field(default_factory=list)
    allowed_roots: list[Path] = Field(default_factory=lambda: [Path("data")])
    max_concurrent_studies: int = Field(default=2, ge=0, le=256)
    max_trials_per_study: int = Field(default=10_000, ge=1)
    max_body_bytes: int = Field(default=1 << 20, ge=1024)
    mlflow_ui_url: str = "http://127.0.0.1:5000"
    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=1, le=65535)
    poll_interval_s: float = Field(default=0.5, gt=0, le=60)
    cluster_cpus: float | None = Field(default=None, gt=0)
    cluster_gpus: float | None = Field(default=None, ge=0)
    placement_timeout_s: float = Field(default=600.0, gt=0)
    max_worker_failures: int = Field(default=3, ge=1, le=100)
    retry_backoff_s: float = Field(default=5.0, ge=0, le=3600)

    @field_validator("tokens")
    @classmethod
    def _owners(cls, v: dict[str, str]) -> dict[str, str]:
        for token, owner in v.items():
            if not OWNER_PATTERN.match(owner):
                raise ValueError(
                    f"tokens: owner {owner!r} must match {OWNER_PATTERN.pattern} (letters, digits, '_' and "
                    "'.'; no '-', which separates owner and study name in the Optuna storage)"
                )
            if owner.lower() == ADMIN_OWNER:
                raise ValueError(
                    f"tokens: owner {owner!r} is reserved for admin_tokens (a user token named so would see "
                    "and cancel the admin's studies); give this token another owner name, or list it in "
                    "admin_tokens"
                )
            if len(token) < 8:
                raise ValueError(f"tokens: the token of owner {owner!r} must have at least 8 characters")
        return v

    def cluster_limits(self) -> tuple[float | None, float | None]:
        """(CPUs, GPUs) the cluster can ever offer one trial; None where unknown (a remote cluster)."""
        if self.ray_address:
            return self.cluster_cpus, self.cluster_gpus
        return (
            self.cluster_cpus if self.cluster_cpus is not None else float(os.cpu_count() or 1),
            self.cluster_gpus if self.cluster_gpus is not None else float(local_gpus()),
        )

    def storage_url(self) -> str:
        from frontier.search import default_storage

        return self.storage or default_storage(self.run_dir)

    def tracking(self) -> str:
        from frontier.search import default_tracking_uri

        return self.tracking_uri or default_tracking_uri(self.run_dir)

    def database(self) -> str:
        if self.database_url:
            return self.database_url
        path = Path(self.run_dir).expanduser().resolve() / "service.db"
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"


def local_gpus() -> int:
    """NVIDIA GPUs a local Ray would see: the ``CUDA_VISIBLE_DEVICES`` list when set, else /dev/nvidiaN
    device files (what Ray detects too, without importing torch or starting CUDA)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    return len([p for p in Path("/dev").glob("nvidia*") if p.name.removeprefix("nvidia").isdigit()])


@functools.cache
def get_settings() -> Settings:
    return Settings()
