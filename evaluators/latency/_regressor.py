"""``regressor``: a tree-ensemble regressor on the candidate's parameters."""

from __future__ import annotations

from typing import Any, Literal, Self

import numpy as np
import pandas as pd

from frontier.evaluators.latency._base import LatencyPredictor, check_configs, check_latency
from frontier.evaluators.latency._encoding import ConfigEncoding
from frontier.evaluators.latency._registry import register_predictor

RegressorModel = Literal["gradient-boosting", "random-forest"]
_MODELS: tuple[str, ...] = ("gradient-boosting", "random-forest")


@register_predictor("regressor")
class RegressorPredictor(LatencyPredictor):
    """A learned regressor from a candidate's parameters to its log-latency.

    Category parameters (strings, booleans) are one-hot encoded, numbers are used as they are (trees do
    not need scaling); the regressor fits ``log(latency_ms)`` so that errors are relative. A learned
    model of this kind is the usual baseline of latency-predictor studies (Dudziak et al., "BRP-NAS",
    NeurIPS 2020; Li et al., "HW-NAS-Bench", ICLR 2021).

    Args:
        seed: seeds the ensemble.
        model: ``"gradient-boosting"`` (scikit-learn ``GradientBoostingRegressor``) or
            ``"random-forest"``.
        n_estimators: number of trees (>= 1).
    """

    def __init__(
        self, *, seed: int = 0, model: RegressorModel = "gradient-boosting", n_estimators: int = 300
    ) -> None:
        super().__init__(seed=seed)
        if model not in _MODELS:
            raise ValueError(
                f"The 'model' parameter of RegressorPredictor must be one of {list(_MODELS)}. "
                f"Got {model!r} instead."
            )
        if not (isinstance(n_estimators, int) and n_estimators >= 1):
            raise ValueError(
                f"The 'n_estimators' parameter of RegressorPredictor must be an int >= 1. "
                f"Got {n_estimators!r} instead."
            )
        self.model = model
        self.n_estimators = n_estimators
        self._encoding: ConfigEncoding | None = None
        self._estimator: Any = None

    def _features(self, enc: ConfigEncoding, configs: pd.DataFrame) -> np.ndarray:
        nums = (
            configs[list(enc.numeric)].to_numpy(dtype=float) if enc.numeric else np.zeros((len(configs), 0))
        )
        return np.c_[enc.one_hot(configs), nums]

    def fit(self, configs: pd.DataFrame, latency_ms: Any) -> Self:
        from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor

        configs = check_configs(configs, owner="RegressorPredictor.fit")
        y = check_latency(latency_ms, len(configs), owner="RegressorPredictor.fit")
        enc = ConfigEncoding.fit(configs)
        if self.model == "gradient-boosting":
            est: Any = GradientBoostingRegressor(
                n_estimators=self.n_estimators,
                learning_rate=0.05,
                max_depth=3,
                subsample=0.8,
                random_state=self.seed,
            )
        else:
            est = RandomForestRegressor(
                n_estimators=self.n_estimators, min_samples_leaf=2, random_state=self.seed
            )
        est.fit(self._features(enc, configs), np.log(y))
        self._encoding, self._estimator = enc, est
        return self

    def predict(self, configs: pd.DataFrame) -> np.ndarray:
        self._require_fitted(self._encoding is not None)
        enc: ConfigEncoding = self._encoding  # type: ignore[assignment]
        configs = check_configs(configs, owner="RegressorPredictor.predict")
        enc.check(configs, owner="RegressorPredictor.predict")
        return np.exp(self._estimator.predict(self._features(enc, configs)))
