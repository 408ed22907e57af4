from __future__ import annotations

import itertools

import pytest

from evaluators.latency import device_fingerprint, measure_latency, median_ci


class FakeClock:
    """Each call to fn() advances time by the next duration; the clock reads it."""

    def __init__(self, durations):
        self.t = 0.0
        self.durations = iter(durations)

    def __call__(self):
        return self.t

    def fn(self):
        self.t += next(self.durations)


def test_stops_as_soon_as_the_median_is_precise():
    clock = FakeClock(itertools.repeat(0.001))
    stats = measure_latency(clock.fn, warmup=2, min_repeats=15, clock=clock)
    assert stats.converged and stats.repeats == 15
    assert stats.median_ms == pytest.approx(1.0) and stats.cv == pytest.approx(0.0, abs=1e-9)


def test_noisy_calls_run_until_the_time_cap():
    noisy = itertools.cycle([0.001, 0.003, 0.0005, 0.004, 0.002])
    clock = FakeClock(noisy)
    stats = measure_latency(clock.fn, warmup=0, min_repeats=15, rel_ci=0.001, time_cap_s=0.2, clock=clock)
    assert not stats.converged
    assert 0.2 <= sum([0.001, 0.003, 0.0005, 0.004, 0.002]) / 5 * stats.repeats <= 0.25
    assert stats.ci_low_ms <= stats.median_ms <= stats.ci_high_ms


def test_median_ci_brackets_the_median_and_shrinks_with_n():
    xs = [float(i % 10) for i in range(100)]
    med, lo, hi = median_ci(xs)
    assert lo <= med <= hi
    _, lo2, hi2 = median_ci(xs * 10)
    assert hi2 - lo2 <= hi - lo


def test_fingerprint_names_hardware_software_and_settings():
    fp = device_fingerprint(threads=2)
    assert {"device", "hardware", "torch", "threads", "dtype"} == set(fp)
    assert fp["threads"] == "2" and fp["device"] == "cpu"


def test_min_repeats_rule():
    with pytest.raises(ValueError, match="min_repeats must be >= 3, but got 1"):
        measure_latency(lambda: None, min_repeats=1)
