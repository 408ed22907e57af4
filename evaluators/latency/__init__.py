"""Latency: the measurement protocol and device fingerprints."""

from evaluators.latency._measure import (
    LatencyStats,
    device_fingerprint,
    fixed_threads,
    measure_latency,
    median_ci,
)

__all__ = ["LatencyStats", "device_fingerprint", "fixed_threads", "measure_latency", "median_ci"]
