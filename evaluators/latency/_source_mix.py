"""``source-mix``: the target device as a non-negative least-squares mix of the source devices."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

import numpy as np
import pandas as pd

from frontier.evaluators.latency._base import TransferPredictor, check_latency, check_rows
from frontier.evaluators.latency._registry import register_predictor


def nonnegative_mix(sources: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Least squares ``y ≈ bias + sources @ weights`` with ``weights >= 0`` and a free bias."""
    from scipy.optimize import lsq_linear

    n, d = sources.shape
    lower = np.r_[np.zeros(d), -np.inf]
    sol = lsq_linear(np.c_[sources, np.ones(n)], y, bounds=(lower, np.full(d + 1, np.inf)), method="bvls")
    return sol.x[:d], float(sol.x[d])


@register_predictor("source-mix")
class SourceMixPredictor(TransferPredictor):
    """The few-shot baseline: target latency as a non-negative linear combination of source devices.

    ``target_ms ≈ bias + sum_j w_j * source_j_ms`` with ``w_j >= 0``, fitted by least squares on the K
    rows measured on the target device, then applied to every row. This is the baseline that HELP (Lee et
    al., NeurIPS 2021) and :class:`~evaluators.latency.DeviceTransferPredictor` are compared with.

    Args:
        configs: one row per architecture, one column per search-space parameter (unused by this
            baseline beyond row matching).
        source_latency_ms: the same rows, one column per source device (ms).
        seed: unused (the fit is deterministic).

    Attributes:
        weights_: the source-device weights; ``bias_ms_``: the bias.
    """

    def __init__(self, configs: pd.DataFrame, source_latency_ms: Any, *, seed: int = 0) -> None:
        super().__init__(configs, source_latency_ms, seed=seed)
        self.weights_: np.ndarray | None = None
        self.bias_ms_ = 0.0

    def adapt(self, rows: Sequence[int] | np.ndarray, latency_ms: Any) -> Self:
        owner = "SourceMixPredictor.adapt"
        positions = check_rows(rows, len(self.configs), owner=owner, min_rows=2)
        y = check_latency(latency_ms, len(positions), owner=owner)
        self.weights_, self.bias_ms_ = nonnegative_mix(self.source_latency_ms[positions], y)
        return self

    def _predict_rows(self, rows: np.ndarray) -> np.ndarray:
        self._require_fitted(self.weights_ is not None, "adapt(rows, latency_ms)")
        return self.source_latency_ms[rows] @ self.weights_ + self.bias_ms_
