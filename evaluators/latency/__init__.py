"""Latency: the measurement protocol, device fingerprints and latency predictors."""

from evaluators.latency import _device_transfer, _linear, _lookup_table, _regressor, _source_mix  # noqa: F401  (registration)
from evaluators.latency._base import LatencyPredictor, TransferPredictor
from evaluators.latency._cache import LatencyCache
from evaluators.latency._device_transfer import DeviceTransferPredictor
from evaluators.latency._lane import LaneTimeout, LaneWait, MeasurementLane
from evaluators.latency._linear import LinearPredictor
from evaluators.latency._lookup_table import LookupTablePredictor
from evaluators.latency._measure import (
    LatencyStats,
    device_fingerprint,
    fixed_threads,
    measure_latency,
    median_ci,
)
from evaluators.latency._proxy import fbnet_flops, nasbench201_flops, ofa_flops
from evaluators.latency._reference import ReferenceWorkload
from evaluators.latency._registry import (
    available_predictors,
    get_predictor,
    get_predictor_class,
    register_predictor,
)
from evaluators.latency._regressor import RegressorPredictor
from evaluators.latency._source_mix import SourceMixPredictor

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
