"""A fixed reference workload timed next to every candidate call, so the machine's drift cancels out.

On a shared or virtual CPU the speed of the machine itself drifts by 10-30 % over seconds to minutes (CPU
frequency, steal time, noisy neighbours): two runs of the same candidate, each with a tight confidence
interval, then report medians 25 % apart. Every call of the candidate is therefore paired with a few calls
of this fixed float32 workload (a small MLP block, on the same threads); a slowdown stretches both alike,
and their *ratio* stays put. The protocol (:func:`~evaluators.latency.measure_latency`) reports
``median(candidate / reference) * nominal_ms``: the candidate's latency at the device's calibrated speed.
``nominal_ms`` is the reference's own time on this device, measured once and stored with the latency cache
(per device fingerprint), so every figure in a cache, across trials and studies, shares one scale.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable
from typing import Any

REFERENCE_VERSION = 1
"""Bump when the workload changes: stored nominal times are keyed by it."""


class ReferenceWorkload:
    """One unit of reference work: ``gelu(x @ w1) @ w2`` with ``x`` [8, 256], ``w1`` [256, 1024] and ``w2``
    [1024, 256] in float32 (about 8 MFLOP, ~0.2 ms on one core), on torch's current threads.

    Args:
        nominal_ms: the unit's calibrated time on this device (see :meth:`calibrate`); ``None`` calibrates
            on first use of :attr:`nominal`, once per process and thread count.
    """

    def __init__(self, nominal_ms: float | None = None) -> None:
        import torch

        g = torch.Generator().manual_seed(0)
        self._x = torch.randn(8, 256, generator=g)
        self._w1 = torch.randn(256, 1024, generator=g) / 16
        self._w2 = torch.randn(1024, 256, generator=g) / 32
        self._gelu = torch.nn.functional.gelu
        self._grad = torch.no_grad
        self.nominal_ms = nominal_ms

    def __call__(self) -> None:
        with self._grad():
            self._gelu(self._x @ self._w1) @ self._w2

    def calibrate(self, seconds: float = 1.0, clock: Callable[[], float] = time.perf_counter) -> float:
        """The unit's time on this machine now, in ms: the 20th percentile of ``seconds`` of calls (a low
        quantile, so a burst of contention during calibration does not set the scale)."""
        for _ in range(20):
            self()
        samples: list[float] = []
        end = clock() + seconds
        while clock() < end or len(samples) < 20:
            t0 = clock()
            self()
            samples.append((clock() - t0) * 1e3)
        return statistics.quantiles(samples, n=5)[0]

    @property
    def nominal(self) -> float:
        """``nominal_ms``, calibrating (once per process and thread count) when it was not given."""
        if self.nominal_ms is None:
            self.nominal_ms = _process_nominal(_threads())
        return self.nominal_ms


def _threads() -> int:
    import torch

    return int(torch.get_num_threads())


@functools.cache
def _process_nominal(threads: int) -> float:
    del threads  # the cache key: the calibration runs on torch's current thread count
    return ReferenceWorkload().calibrate()


def reference_key() -> dict[str, Any]:
    """What a stored nominal time is valid for besides the device fingerprint."""
    return {"reference": "mlp-8x256x1024", "version": REFERENCE_VERSION}
