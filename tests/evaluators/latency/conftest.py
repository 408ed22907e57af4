from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

OPS = ("conv3", "conv1", "pool", "skip")
# Cost of each op per position on a made-up device (ms); skip is free everywhere.
BASE_COST = {"conv3": 0.9, "conv1": 0.3, "pool": 0.1, "skip": 0.0}


def synthetic_table(n: int = 300, positions: int = 6, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Architectures (string op per position, plus a numeric width) and their latency on three devices.

    ``dev_a`` is exactly additive (a lookup table plus a width term), ``dev_b`` weighs ops differently and
    has measurement noise, ``dev_c`` is a scaled ``dev_a`` with noise.
    """
    rng = np.random.default_rng(seed)
    ops = rng.choice(OPS, size=(n, positions))
    configs = pd.DataFrame(ops, columns=[f"pos{i}" for i in range(positions)])
    configs["width"] = rng.choice([16, 32, 48], size=n)
    position_scale = 1.0 + 0.2 * np.arange(positions)
    cost_a = np.vectorize(BASE_COST.get)(ops) * position_scale
    dev_a = 2.0 + cost_a.sum(axis=1) + 0.02 * configs["width"].to_numpy()
    weights_b = {"conv3": 0.4, "conv1": 0.5, "pool": 0.3, "skip": 0.05}
    dev_b = 1.0 + np.vectorize(weights_b.get)(ops).sum(axis=1) + rng.normal(0, 0.05, n)
    dev_c = 1.5 * dev_a + rng.normal(0, 0.1, n)
    sources = pd.DataFrame({"dev_a": dev_a, "dev_b": dev_b, "dev_c": dev_c})
    return configs, sources


@pytest.fixture(scope="session")
def table() -> tuple[pd.DataFrame, pd.DataFrame]:
    return synthetic_table()


@pytest.fixture(scope="session")
def make_table() -> Callable[..., tuple[pd.DataFrame, pd.DataFrame]]:
    return synthetic_table
