from __future__ import annotations

import itertools

import pytest

from frontier.evaluators.latency import device_fingerprint, measure_latency, median_ci


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


class DriftingMachine:
    """A fake clock whose speed drifts: every call costs its base time times the current slowdown."""

    def __init__(self, slowdowns, candidate_s=0.010, unit_s=0.0005, nominal_ms=0.5):
        self.t = 0.0
        self.slowdowns = slowdowns
        self.calls = 0
        self.candidate_s = candidate_s
        self.unit_s = unit_s
        self.nominal = nominal_ms

    def __call__(self):
        return self.t

    def slowdown(self):
        return self.slowdowns(self.t)

    def fn(self):
        self.calls += 1
        self.t += self.candidate_s * self.slowdown()

    def unit(self):
        self.t += self.unit_s * self.slowdown()


class Unit:
    """The Reference protocol: one unit of work per call; ``nominal`` its calibrated time (ms)."""

    def __init__(self, machine):
        self.machine = machine
        self.nominal = machine.nominal

    def __call__(self):
        self.machine.unit()


def test_reference_cancels_the_drift_of_the_machine_speed():
    # The machine runs at full speed, then 30 % slower for a while: the plain median moves, the
    # reference-normalised one does not.
    for slow in (1.0, 1.3):
        m = DriftingMachine(lambda t, slow=slow: slow)
        stats = measure_latency(m.fn, warmup=3, clock=m, reference=Unit(m))
        assert stats.median_ms == pytest.approx(10.0)
        assert stats.raw_median_ms == pytest.approx(10.0 * slow)
        assert stats.speed == pytest.approx(slow)
        # reps chosen so the reference takes about half a candidate call: 0.5 * 10 ms / 0.5 ms
        assert stats.reference_reps == 10


def test_reference_tracks_drift_within_a_run():
    # Speed changes every 0.1 s of fake time (a sawtooth between 1.0 and 1.4x slower): each pair's ratio
    # is unchanged (but for the few pairs a step falls into), so the median is exact and the CI converges
    # at once, while the raw times spread.
    m = DriftingMachine(lambda t: 1.0 + 0.1 * (int(t / 0.1) % 5))
    stats = measure_latency(m.fn, warmup=3, min_repeats=30, clock=m, reference=Unit(m))
    assert stats.converged and stats.repeats == 30
    assert stats.median_ms == pytest.approx(10.0) and stats.cv < 0.05
    assert 10.0 < stats.raw_median_ms < 14.0
    plain = DriftingMachine(lambda t: 1.0 + 0.1 * (int(t / 0.1) % 5))
    assert measure_latency(plain.fn, warmup=3, min_repeats=30, clock=plain).cv > 0.1


def test_without_reference_the_stats_have_no_raw_fields():
    clock = FakeClock(itertools.repeat(0.001))
    stats = measure_latency(clock.fn, warmup=2, clock=clock)
    assert stats.raw_median_ms is None and stats.speed is None and stats.reference_reps == 0


def test_reference_workload_calibrates_a_positive_time():
    from frontier.evaluators.latency import ReferenceWorkload

    ref = ReferenceWorkload()
    ms = ref.calibrate(seconds=0.05)
    assert 0.0 < ms < 100.0
    assert ReferenceWorkload(nominal_ms=0.3).nominal == 0.3


def test_metrics_name_the_raw_wall_clock_and_the_normalised_figure_apart() -> None:
    from frontier.evaluators.latency import LatencyStats

    normalised = LatencyStats(
        10.0, 9.0, 11.0, 0.05, 40, True, raw_median_ms=12.5, speed=1.25, reference_reps=2
    )
    assert normalised.metrics() == {
        "latency_ms": 12.5,  # what a user timing the model on this machine sees
        "latency_norm_ms": 10.0,  # at the machine's calibrated speed
        "latency_ci_ms": 1.0,
        "latency_cv": 0.05,
    }
    plain = LatencyStats(3.0, 2.5, 3.5, 0.1, 20, True)  # no reference (a GPU): both are the median
    assert plain.metrics("prefill") == {
        "prefill_ms": 3.0,
        "prefill_norm_ms": 3.0,
        "prefill_ci_ms": 0.5,
        "prefill_cv": 0.1,
    }
