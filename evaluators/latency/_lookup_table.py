"""``lookup-table``: a per-operator latency table summed over the network."""

from __future__ import annotations

from typing import Any, Self

import numpy as np
import pandas as pd

from frontier.evaluators.latency._base import LatencyPredictor, check_configs, check_latency
from frontier.evaluators.latency._encoding import ConfigEncoding
from frontier.evaluators.latency._registry import register_predictor


@register_predictor("lookup-table")
class LookupTablePredictor(LatencyPredictor):
    """Latency as a bias plus one cost per (position, op) choice, summed over the network.

    ``latency ≈ bias + sum over columns c of cost[c, configs[c]]``: every column (layer, edge or block
    position) is treated as a categorical choice, numbers included. The costs are fitted to measured
    architectures by ridge-regularised least squares, non-negative by default, as in the layer-wise
    lookup tables of ProxylessNAS (Cai et al., ICLR 2019) and FBNet (Wu et al., CVPR 2019), here learned
    from end-to-end measurements instead of per-layer ones. Non-negativity with a small ridge makes the
    table identifiable: the cheapest op at each position gets cost ~0 and the rest goes to the bias.

    A value unseen at fit time costs the mean of its column's fitted costs.

    Args:
        seed: unused (the fit is deterministic); kept for the common constructor.
        alpha: ridge penalty on the costs, relative to the number of measured architectures (>= 0).
        nonnegative: constrain the costs to be >= 0 (the bias is free).

    Attributes:
        bias_ms_: the fitted bias.
        costs_: a DataFrame with columns ``column``, ``value``, ``cost_ms``.
    """

    def __init__(self, *, seed: int = 0, alpha: float = 1e-6, nonnegative: bool = True) -> None:
        super().__init__(seed=seed)
        if not alpha >= 0:
            raise ValueError(
                f"The 'alpha' parameter of LookupTablePredictor must be >= 0. Got {alpha!r} instead."
            )
        self.alpha = alpha
        self.nonnegative = nonnegative
        self._encoding: ConfigEncoding | None = None
        self._coef = np.zeros(0)
        self.bias_ms_ = 0.0

    def fit(self, configs: pd.DataFrame, latency_ms: Any) -> Self:
        from scipy.optimize import lsq_linear

        configs = check_configs(configs, owner="LookupTablePredictor.fit")
        y = check_latency(latency_ms, len(configs), owner="LookupTablePredictor.fit")
        enc = ConfigEncoding.fit(configs, all_categorical=True)
        x = enc.one_hot(configs)
        n, p = x.shape
        # Ridge rows penalise the costs only; the bias (last column) stays free.
        penalty = np.sqrt(self.alpha * n) * np.eye(p, p + 1)
        a = np.vstack([np.c_[x, np.ones(n)], penalty])
        b = np.r_[y, np.zeros(p)]
        lower = np.r_[np.zeros(p) if self.nonnegative else np.full(p, -np.inf), -np.inf]
        sol = lsq_linear(a, b, bounds=(lower, np.full(p + 1, np.inf)), method="bvls" if p < 400 else "trf")
        self._encoding, self._coef, self.bias_ms_ = enc, sol.x[:p], float(sol.x[p])
        return self

    def _fitted(self) -> ConfigEncoding:
        self._require_fitted(self._encoding is not None)
        return self._encoding  # type: ignore[return-value]

    @property
    def costs_(self) -> pd.DataFrame:
        names = self._fitted().one_hot_names
        return pd.DataFrame(
            {"column": [c for c, _ in names], "value": [v for _, v in names], "cost_ms": self._coef}
        )

    def predict(self, configs: pd.DataFrame) -> np.ndarray:
        enc = self._fitted()
        configs = check_configs(configs, owner="LookupTablePredictor.predict")
        enc.check(configs, owner="LookupTablePredictor.predict")
        codes = enc.codes(configs)
        out = np.full(len(configs), self.bias_ms_)
        start = 0
        for j, cats in enumerate(enc.categories.values()):
            block = self._coef[start : start + len(cats)]
            cost = np.where(codes[:, j] >= 0, block[np.maximum(codes[:, j], 0)], block.mean())
            out += cost
            start += len(cats)
        return out
