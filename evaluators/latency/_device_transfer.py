"""``device-transfer``: few-shot latency transfer to a new device without meta-training."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

import numpy as np
import pandas as pd

from frontier.evaluators.latency._base import TransferPredictor, check_latency, check_rows
from frontier.evaluators.latency._encoding import ConfigEncoding
from frontier.evaluators.latency._registry import register_predictor
from frontier.evaluators.latency._source_mix import nonnegative_mix

# Hyper-prior of the residual model, in log-variance units of the standardised residual. The feature
# groups start small (e^-4): with K ~ 10 points the source mix should explain most of the target and the
# residual only what the data insist on. Chosen on the validation devices and on leave-one-source-out
# pseudo-targets of the HELP tables (see docs/latency.md), never on the test devices.
_GROUP_LOG_VAR = -4.0
_NOISE_LOG_VAR = 0.0
_PRIOR_STRENGTH = 0.05
_LOG_VAR_BOUNDS = (-10.0, 8.0)
_MIN_ROWS_FOR_RESIDUAL = 3


@register_predictor("device-transfer")
class DeviceTransferPredictor(TransferPredictor):
    """Few-shot device transfer: a denoised source-device mix plus a shrunk per-operator residual.

    In the spirit of HELP (Lee et al., "HELP: Hardware-Adaptive Efficient Latency Prediction for NAS via
    Meta-Learning", NeurIPS 2021), which conditions a latency predictor on a device's measured latency of
    a few reference architectures, but with no meta-training: the source devices enter as features and
    as a prior. Adapting to a device from K measured rows:

    1. **Denoised sources.** Each source device's latency is replaced by its least-squares per-operator
       lookup table over the whole table (ridge on one-hot per-position choices and standardised numeric
       parameters). Measurement noise of a source (batch-1 GPUs, phones timed in whole ms) would
       otherwise be copied into the prediction.
    2. **Source mix.** ``target ≈ bias + sum_j w_j * denoised_source_j`` with ``w_j >= 0`` by least
       squares on the K rows (the ``source-mix`` baseline on denoised sources).
    3. **Residual.** What the mix misses is modelled by Bayesian linear regression (a Gaussian process
       with linear kernels) on three feature groups: op counts shared across positions (how many edges
       are a 3x3 convolution), one-hot per-position choices and the numeric parameters. Each group's prior
       variance and the noise are chosen by type-II maximum likelihood on the K points under a
       log-normal hyper-prior that starts the residual small, so it is used only when the K points
       support it.

    Predictions are the posterior mean, in ms. The fit is deterministic.

    Args:
        configs: one row per architecture, one column per search-space parameter (numbers or category
            strings).
        source_latency_ms: the same rows, one column per known device (ms).
        seed: kept for the common interface; nothing here is random.
        denoise_sources: step 1 (off: mix the raw source latencies).
        residual: step 3 (off: the denoised source mix alone).

    Attributes:
        source_weights_: the mix weight of each source device (on denoised latencies); ``bias_ms_``: the
            mix bias.
        residual_log_variances_: the fitted log prior variance of each residual group and of the noise.

    Example:
        >>> p = DeviceTransferPredictor(configs, source_latency_ms, seed=0)  # doctest: +SKIP
        >>> p.adapt([3, 17, 42, 99], [10.2, 12.9, 9.7, 15.1]).predict()  # doctest: +SKIP
    """

    def __init__(
        self,
        configs: pd.DataFrame,
        source_latency_ms: Any,
        *,
        seed: int = 0,
        denoise_sources: bool = True,
        residual: bool = True,
    ) -> None:
        super().__init__(configs, source_latency_ms, seed=seed)
        self.denoise_sources = denoise_sources
        self.residual = residual
        self._cache: tuple[np.ndarray, dict[str, np.ndarray]] | None = None
        self._predicted: np.ndarray | None = None
        self.source_weights_: np.ndarray | None = None
        self.bias_ms_ = 0.0
        self.residual_log_variances_: dict[str, float] = {}

    def _prepared(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Denoised sources and the residual feature groups, computed once per table."""
        if self._cache is None:
            enc = ConfigEncoding.fit(self.configs)
            one_hot, counts, numbers = (
                enc.one_hot(self.configs),
                enc.counts(self.configs),
                enc.numbers(self.configs),
            )
            sources = self.source_latency_ms
            if self.denoise_sources:
                sources = _ridge_fit_values(np.c_[one_hot, numbers], sources)
            named = {"op_counts": counts, "one_hot": one_hot, "numeric": numbers}
            groups = {name: _standardise(g) for name, g in named.items() if g.shape[1]}
            self._cache = (sources, groups)
        return self._cache

    def adapt(self, rows: Sequence[int] | np.ndarray, latency_ms: Any) -> Self:
        owner = "DeviceTransferPredictor.adapt"
        positions = check_rows(rows, len(self.configs), owner=owner, min_rows=2)
        y = check_latency(latency_ms, len(positions), owner=owner)
        sources, named = self._prepared()
        groups = list(named.values())
        weights, bias = nonnegative_mix(sources[positions], y)
        predicted = sources @ weights + bias
        self.residual_log_variances_ = {}
        scale = float(y.mean())
        resid = (y - predicted[positions]) / scale
        center, spread = float(resid.mean()), float(resid.std())
        if (
            self.residual
            and len(positions) >= _MIN_ROWS_FOR_RESIDUAL
            and spread > 1e-12 * max(1.0, abs(center))
        ):
            z = (resid - center) / spread
            log_var, beta = _fit_linear_gp([g[positions] for g in groups], z)
            var = np.exp(log_var)
            post = var[len(groups)] * beta.sum() + sum(
                v * (g @ (g[positions].T @ beta)) for v, g in zip(var[: len(groups)], groups, strict=True)
            )
            predicted = predicted + scale * (center + spread * post)
            self.residual_log_variances_ = {
                **dict(zip(named, log_var[: len(groups)].tolist(), strict=True)),
                "constant": float(log_var[len(groups)]),
                "noise": float(log_var[-1]),
            }
        else:
            predicted = predicted + scale * center
        self.source_weights_, self.bias_ms_, self._predicted = weights, bias, predicted
        return self

    def _predict_rows(self, rows: np.ndarray) -> np.ndarray:
        predicted = self._predicted
        self._require_fitted(predicted is not None, "adapt(rows, latency_ms)")
        return np.asarray(predicted)[rows]


def _standardise(x: np.ndarray) -> np.ndarray:
    """Zero-mean, unit-variance columns, scaled so that the group's linear kernel has unit diagonal mean."""
    sd = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0) / np.sqrt(x.shape[1])


def _ridge_fit_values(x: np.ndarray, y: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """Fitted values of a ridge regression of every column of ``y`` on ``x`` with a free intercept."""
    xc = x - x.mean(axis=0)
    coef = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ (y - y.mean(axis=0)))
    return xc @ coef + y.mean(axis=0)


def _fit_linear_gp(groups: list[np.ndarray], z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Type-II ML (with a log-normal hyper-prior) of a sum of linear kernels plus a constant and noise.

    Returns the log variances ``[group..., constant, noise]`` and ``beta = K^-1 z``.
    """
    from scipy.linalg import cho_factor, cho_solve
    from scipy.optimize import minimize
    from threadpoolctl import threadpool_limits  # a scikit-learn requirement

    n = len(z)
    kernels = [g @ g.T for g in groups] + [np.ones((n, n))]
    prior_mean = np.r_[np.full(len(groups), _GROUP_LOG_VAR), 0.0, _NOISE_LOG_VAR]
    eye = np.eye(n)

    def covariance(theta: np.ndarray) -> np.ndarray:
        var = np.exp(theta)
        return sum(v * km for v, km in zip(var[:-1], kernels, strict=True)) + (var[-1] + 1e-8) * eye

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        try:
            factor = cho_factor(covariance(theta), lower=True)
        except np.linalg.LinAlgError:
            return 1e10, np.zeros_like(theta)
        k_inv = cho_solve(factor, eye)
        beta = k_inv @ z
        d = theta - prior_mean
        value = 0.5 * z @ beta + np.log(np.diag(factor[0])).sum() + _PRIOR_STRENGTH * d @ d
        inner = k_inv - np.outer(beta, beta)
        var = np.exp(theta)
        grad = np.array([0.5 * v * np.sum(inner * km) for v, km in zip(var, [*kernels, eye], strict=True)])
        return float(value), grad + 2 * _PRIOR_STRENGTH * d

    # The matrices are K x K with K ~ 10-100: BLAS threads only add contention (up to 100x slower on a
    # busy machine), so the optimisation runs single-threaded.
    with threadpool_limits(limits=1, user_api="blas"):
        best: Any = None
        for shift in (0.0, -2.0, 2.0):
            res = minimize(
                objective,
                prior_mean + shift,
                jac=True,
                method="L-BFGS-B",
                bounds=[_LOG_VAR_BOUNDS] * len(prior_mean),
            )
            if best is None or res.fun < best.fun:
                best = res
        return best.x, cho_solve(cho_factor(covariance(best.x), lower=True), z)
