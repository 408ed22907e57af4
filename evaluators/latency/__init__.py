"""Latency: the measurement protocol, device fingerprints and latency predictors."""

from frontier.evaluators.latency import _device_transfer, _linear, _lookup_table, _regressor, _source_mix  # noqa: F401  (registration)
from frontier.evaluators.latency._base import LatencyPredictor, TransferPredictor
from frontier.evaluators.latency._cache import LatencyCache
from frontier.evaluators.latency._device_transfer import DeviceTransferPredictor
from frontier.evaluators.latency._lane import LaneTimeout, LaneWait, MeasurementLane
from frontier.evaluators.latency._linear import LinearPredictor
from frontier.evaluators.latency._lookup_table import LookupTablePredictor
from frontier.evaluators.latency._measure import (
    LatencyStats,
    device_fingerprint,
    fixed_threads,
    measure_latency,
    median_ci,
)
from frontier.evaluators.latency._proxy import fbnet_flops, nasbench201_flops, ofa_flops
from frontier.evaluators.latency._reference import ReferenceWorkload
from frontier.evaluators.latency._registry import (
    available_predictors,
    get_predictor,
    get_predictor_class,
    register_predictor,
)
from frontier.evaluators.latency._regressor import RegressorPredictor
from frontier.evaluators.latency._source_mix import SourceMixPredictor

__all__ = [
    "DeviceTransferPredictor",
    "LaneTimeout",
    "LaneWait",
    "LatencyCache",
    "LatencyPredictor",
    "LatencyStats",
    "LinearPredictor",
    "LookupTablePredictor",
    "MeasurementLane",
    "ReferenceWorkload",
    "RegressorPredictor",
    "SourceMixPredictor",
    "TransferPredictor",
    "available_predictors",
    "device_fingerprint",
    "fbnet_flops",
    "fixed_threads",
    "get_predictor",
    "get_predictor_class",
    "measure_latency",
    "median_ci",
    "nasbench201_flops",
    "ofa_flops",
    "register_predictor",
]
