from __future__ import annotations

import itertools
import math
import os
from pathlib import Path
from typing import Any

import pytest

import frontier  # noqa: F401  (puts this checkout's root behind site-packages: see frontier/__init__)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except Exception:
        has_gpu = False
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(skip)


def write_table(
    path: Path, *, nan_at: tuple[int, str] | None = None, missing: tuple[int, str] | None = None
) -> Path:
    """A small recorded problem: x in 0..9, kind in {a, b, c}; two objectives f1, f2 and a cost.

    f1 (minimise) and f2 (minimise) conflict along x; ``kind`` shifts both. ``cost`` grows with x.
    """
    import pandas as pd

    rows = []
    shift = {"a": 0.0, "b": 0.3, "c": 0.6}
    for x, kind in itertools.product(range(10), "abc"):
        if missing == (x, kind):
            continue
        f1 = x / 9 + shift[kind]
        f2 = (1 - x / 9) ** 2 + shift[kind]
        if nan_at == (x, kind):
            f1 = math.nan
        rows.append({"x": x, "kind": kind, "f1": f1, "f2": f2, "cost": 10 * x})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def tabular_spec(table: Path, **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": "toy",
        "evaluator": {
            "kind": "tabular",
            "options": {"table": str(table), "metrics": {"f1": "f1", "f2": "f2", "cost": "cost"}},
        },
        "space": [
            {"name": "x", "kind": "int", "low": 0, "high": 9},
            {"name": "kind", "kind": "categorical", "choices": ["a", "b", "c"]},
        ],
        "objectives": [{"name": "f1", "direction": "minimize"}, {"name": "f2", "direction": "minimize"}],
        "constraints": [{"metric": "cost", "op": "<=", "value": 70}],
        "search": {"sampler": "tpe", "n_trials": 12, "seed": 0, "concurrency": 1},
    }
    for key, value in overrides.items():
        node = spec
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return spec


@pytest.fixture(scope="session")
def make_table():
    return write_table


@pytest.fixture(scope="session")
def make_spec():
    return tabular_spec


@pytest.fixture
def table(tmp_path: Path) -> Path:
    return write_table(tmp_path / "toy.csv")


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the in-process engine tests (starting Ray costs seconds)."""
    import ray

    from frontier.search._engine import init_ray

    init_ray(None)
    yield ray
    ray.shutdown()
