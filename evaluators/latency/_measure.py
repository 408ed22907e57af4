"""Latency measurement protocol: warm-up, then repeat until the median is known to a stated precision."""

from __future__ import annotations

import functools
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class LatencyStats:
    """A latency figure with its uncertainty.

    Attributes:
        median_ms: the reported latency.
        ci_low_ms, ci_high_ms: distribution-free 95 % confidence interval of the median (order statistics).
        cv: coefficient of variation of the samples (stdev / mean).
        repeats: timed calls.
        converged: whether the CI half-width reached the target before the time cap.
        raw_median_ms: with a reference workload, the plain median of the candidate's call times (None
            without one, when ``median_ms`` is that median).
        speed: with a reference workload, how slow the machine ran against its calibration (the
            reference's median time over its nominal time; 1.1 = 10 % slower).
        reference_reps: reference units timed next to each candidate call (0: no reference).
    """

    median_ms: float
    ci_low_ms: float
    ci_high_ms: float
    cv: float
    repeats: int
    converged: bool
    raw_median_ms: float | None = None
    speed: float | None = None
    reference_reps: int = 0

    @property
    def wall_ms(self) -> float:
        """The plain median wall-clock time of one call, as measured on this machine now."""
        return self.median_ms if self.raw_median_ms is None else self.raw_median_ms

    def metrics(self, name: str = "latency") -> dict[str, float]:
        """The trial metrics of this figure, one name each:

        - ``{name}_ms``: the raw wall-clock median (:attr:`wall_ms`), what a user timing the model here sees;
        - ``{name}_norm_ms``: the median at the machine's calibrated speed (the candidate's times scaled by an
          interleaved reference workload, so a shared machine's drift cancels); equal to ``{name}_ms`` where
          no reference runs (GPUs). Studies on shared CPUs optimise this one;
        - ``{name}_ci_ms``: half-width of the 95 % confidence interval of ``{name}_norm_ms``;
        - ``{name}_cv``: coefficient of variation of the samples.
        """
        return {
            f"{name}_ms": self.wall_ms,
            f"{name}_norm_ms": self.median_ms,
            f"{name}_ci_ms": (self.ci_high_ms - self.ci_low_ms) / 2,
            f"{name}_cv": self.cv,
        }

    @property
    def rel_half_width(self) -> float:
        return (self.ci_high_ms - self.ci_low_ms) / 2 / self.median_ms if self.median_ms > 0 else math.inf

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def median_ci(samples: list[float], z: float = 1.96) -> tuple[float, float, float]:
    """Median and its distribution-free confidence interval from order statistics (Conover 1999)."""
    xs = sorted(samples)
    n = len(xs)
    med = statistics.median(xs)
    half = z * math.sqrt(n) / 2
    lo = max(0, math.floor(n / 2 - half) - 1)
    hi = min(n - 1, math.ceil(n / 2 + half))
    return med, xs[lo], xs[hi]


class Reference(Protocol):
    """A fixed workload timed next to the candidate (:class:`~evaluators.latency.ReferenceWorkload`):
    one unit per call, ``nominal`` its calibrated time on this device in ms."""

    def __call__(self) -> Any: ...

    @property
    def nominal(self) -> float: ...


REFERENCE_SHARE = 0.5
"""With a reference, each candidate call is paired with about this much reference time (>= one unit)."""


def measure_latency(
    fn: Callable[[], Any],
    *,
    warmup: int = 5,
    min_repeats: int = 15,
    max_repeats: int = 5000,
    rel_ci: float = 0.02,
    time_cap_s: float = 3.0,
    clock: Callable[[], float] = time.perf_counter,
    sync: Callable[[], None] | None = None,
    reference: Reference | None = None,
) -> LatencyStats:
    """Time ``fn()``: ``warmup`` untimed calls, then repeats until the median's relative 95 % CI
    half-width is <= ``rel_ci`` (checked after ``min_repeats``) or ``time_cap_s`` has passed.

    ``sync`` (e.g. ``torch.cuda.synchronize``) is called after each call so asynchronous devices are timed
    to completion.

    With a ``reference`` (CPU), every timed call of ``fn`` follows a timed run of ``reps`` reference units
    (``reps`` chosen after the warm-up so they take about :data:`REFERENCE_SHARE` of a call), and each
    sample is ``fn``'s time over the reference's per-unit time in the same pair, times the reference's
    nominal time: the drift of the machine's speed, which stretches both, cancels (see
    :mod:`evaluators.latency._reference`). The stopping rule and the CI apply to these samples; the plain
    median is kept as ``raw_median_ms``.
    """
    if min_repeats < 3:
        raise ValueError(f"min_repeats must be >= 3, but got {min_repeats}")
    warm: list[float] = []
    for _ in range(warmup):
        t0 = clock()
        fn()
        if sync is not None:
            sync()
        warm.append(clock() - t0)
    reps = 0
    nominal = 0.0
    if reference is not None:
        nominal = reference.nominal  # before the timed loop: it may calibrate (~1 s) on first use
        unit = []
        for _ in range(max(3, warmup)):
            t0 = clock()
            reference()
            unit.append(clock() - t0)
        call_s = min(warm[-3:]) if warm else 0.0
        reps = max(1, min(10_000, round(REFERENCE_SHARE * call_s / max(min(unit[-3:]), 1e-9))))
    samples: list[float] = []
    raw: list[float] = []
    ref_unit: list[float] = []
    start = clock()
    converged = False
    while len(samples) < max_repeats:
        if reference is not None:
            t0 = clock()
            for _ in range(reps):
                reference()
            ref_unit.append((clock() - t0) * 1e3 / reps)
        t0 = clock()
        fn()
        if sync is not None:
            sync()
        raw.append((clock() - t0) * 1e3)
        if reference is not None:
            samples.append(raw[-1] / ref_unit[-1] * nominal if ref_unit[-1] > 0 else raw[-1])
        else:
            samples.append(raw[-1])
        if len(samples) >= min_repeats and len(samples) % 5 == 0:
            med, lo, hi = median_ci(samples)
            if med > 0 and (hi - lo) / 2 / med <= rel_ci:
                converged = True
                break
            if clock() - start >= time_cap_s:
                break
    med, lo, hi = median_ci(samples)
    mean = statistics.fmean(samples)
    cv = statistics.pstdev(samples) / mean if mean > 0 else 0.0
    if reference is None:
        return LatencyStats(med, lo, hi, cv, len(samples), converged)
    return LatencyStats(
        med,
        lo,
        hi,
        cv,
        len(samples),
        converged,
        raw_median_ms=statistics.median(raw),
        speed=statistics.median(ref_unit) / nominal if nominal > 0 else None,
        reference_reps=reps,
    )


@contextmanager
def fixed_threads(n: int) -> Iterator[None]:
    """Pin torch's intra-op thread count for the block (restored after)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


@functools.cache
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_fingerprint(*, device: str = "cpu", threads: int = 1, dtype: str = "float32") -> dict[str, str]:
    """What a latency figure is only valid for: hardware, software and run settings."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        hw = torch.cuda.get_device_name(torch.device(device))
    else:
        hw = f"{_cpu_model()} x{os.cpu_count()}"
    return {
        "device": device,
        "hardware": hw,
        "torch": torch.__version__,
        "threads": str(threads),
        "dtype": dtype,
    }
