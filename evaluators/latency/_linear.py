"""``linear``: ridge regression on one-hot choices and numeric sizes; the few-sample predictor of a study."""

from __future__ import annotations

from typing import Any, Self

import numpy as np
import pandas as pd

from frontier.evaluators.latency._base import LatencyPredictor, check_configs, check_latency
from frontier.evaluators.latency._encoding import ConfigEncoding
from frontier.evaluators.latency._registry import register_predictor


@register_predictor("linear")
class LinearPredictor(LatencyPredictor):
    """Latency as a bias, one cost per categorical choice and one slope per numeric parameter.

    ``latency ≈ bias + Σ_categorical cost[c, value] + Σ_numeric slope_c · value_c``, fitted by ridge
    regression with the penalty chosen by efficient leave-one-out cross-validation (scikit-learn
    ``RidgeCV``). Unlike :class:`~evaluators.latency.LookupTablePredictor`, a numeric parameter (a width,
    a depth) gets one slope rather than one cost per value, so a study's first handful of measurements
    already rank the rest: it is the default ``latency.predictor`` of ``hybrid`` studies.

    With ``log_target`` (the default) the model is fitted to ``log(latency)`` on ``log1p`` of the numeric
    parameters: costs then multiply, errors are relative, and a 40 µs MLP and a 0.5 ms CNN weigh alike.

    Args:
        seed: unused (the fit is deterministic); kept for the common constructor.
        alphas: candidate ridge penalties (each > 0).
        log_target: fit log-latency on log-sized numbers (see above); False fits ms on raw numbers.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        alphas: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0),
        log_target: bool = True,
    ) -> None:
        super().__init__(seed=seed)
        self.log_target = log_target
        if not alphas or not all(a > 0 for a in alphas):
            raise ValueError(
                "The 'alphas' parameter of LinearPredictor must be non-empty and > 0. "
                f"Got {alphas!r} instead."
            )
        self.alphas = tuple(alphas)
        self._encoding: ConfigEncoding | None = None
        self._model: Any = None

    def _prepare(self, configs: pd.DataFrame) -> pd.DataFrame:
        if not self.log_target:
            return configs
        out = configs.copy()
        for name in out.columns:
            col = out[name]
            if pd.api.types.is_numeric_dtype(col) and col.dtype != bool:
                out[name] = np.sign(col) * np.log1p(np.abs(col.astype(float)))
        return out

    def _features(self, enc: ConfigEncoding, configs: pd.DataFrame) -> np.ndarray:
        return np.c_[enc.one_hot(configs), enc.numbers(configs)]

    def fit(self, configs: pd.DataFrame, latency_ms: Any) -> Self:
        from sklearn.linear_model import RidgeCV

        configs = check_configs(configs, owner="LinearPredictor.fit")
        y = check_latency(latency_ms, len(configs), owner="LinearPredictor.fit")
        configs = self._prepare(configs)
        enc = ConfigEncoding.fit(configs)
        target = np.log(y) if self.log_target else y
        self._model = RidgeCV(alphas=self.alphas).fit(self._features(enc, configs), target)
        self._encoding = enc
        return self

    def predict(self, configs: pd.DataFrame) -> np.ndarray:
        self._require_fitted(self._encoding is not None)
        assert self._encoding is not None
        configs = check_configs(configs, owner="LinearPredictor.predict")
        self._encoding.check(configs, owner="LinearPredictor.predict")
        out = np.asarray(
            self._model.predict(self._features(self._encoding, self._prepare(configs))), dtype=float
        )
        return np.exp(out) if self.log_target else out
