"""The persistent latency cache and EvalContext.measure_latency (lane + cache)."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

from frontier.evaluators import EvalContext
from frontier.evaluators.latency import (
    LatencyCache,
    LatencyStats,
    MeasurementLane,
    device_fingerprint,
    fixed_threads,
)

STATS = LatencyStats(1.5, 1.4, 1.6, 0.03, 40, True)
SIG = {"evaluator": "x", "params": {"depth": 2, "arch": "mlp"}}


def test_hit_miss_and_a_different_fingerprint_is_a_miss(tmp_path: Path) -> None:
    cache = LatencyCache(tmp_path / "sub" / "latency.db")
    fp = device_fingerprint(threads=1)
    assert cache.get(SIG, input_shape=(1, 64), fingerprint=fp) is None
    assert len(cache) == 0
    cache.put(SIG, input_shape=(1, 64), fingerprint=fp, stats=STATS)
    assert cache.get(SIG, input_shape=(1, 64), fingerprint=fp) == STATS
    # Key order of the signature does not matter; the values do.
    assert cache.get(
        {"params": {"arch": "mlp", "depth": 2}, "evaluator": "x"}, input_shape=(1, 64), fingerprint=fp
    )
    assert (
        cache.get({**SIG, "params": {"depth": 3, "arch": "mlp"}}, input_shape=(1, 64), fingerprint=fp) is None
    )
    assert cache.get(SIG, input_shape=(8, 64), fingerprint=fp) is None
    # Invalidation: another thread count, torch version or machine is another device.
    assert cache.get(SIG, input_shape=(1, 64), fingerprint=device_fingerprint(threads=2)) is None
    assert cache.get(SIG, input_shape=(1, 64), fingerprint={**fp, "hardware": "other cpu"}) is None
    assert cache.get(SIG, input_shape=(1, 64), fingerprint={**fp, "torch": "0.0"}) is None
    # A later study opening the same file sees the figure.
    again = LatencyCache(tmp_path / "sub" / "latency.db")
    assert again.get(SIG, input_shape=(1, 64), fingerprint=fp) == STATS
    [entry] = again.entries()
    assert entry["signature"] == SIG and entry["fingerprint"] == fp and entry["stats"]["median_ms"] == 1.5


def _writer(path: str, i: int) -> None:
    cache = LatencyCache(path)
    for j in range(20):
        cache.put({"i": i, "j": j}, input_shape=(1,), fingerprint={"d": "x"}, stats=STATS)


def test_processes_share_one_file(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path / "c.db"), i)) for i in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert len(LatencyCache(tmp_path / "c.db")) == 60


def test_context_measures_once_then_serves_from_the_cache(tmp_path: Path) -> None:
    calls = []
    ctx = EvalContext(lane=MeasurementLane(directory=tmp_path), latency_cache=LatencyCache(tmp_path / "c.db"))
    kwargs = {"signature": SIG, "input_shape": (1, 64), "warmup": 0, "min_repeats": 5, "time_cap_s": 0.05}
    first = ctx.measure_latency(lambda: calls.append(1), **kwargs)
    n = len(calls)
    second = ctx.measure_latency(lambda: calls.append(1), **kwargs)
    assert second == first and len(calls) == n
    fresh = ctx.measure_latency(lambda: calls.append(1), refresh=True, **kwargs)
    assert len(calls) > n and fresh.repeats >= 5
    assert [e["cached"] for e in ctx.latency_log] == [False, True, False]
    other_threads = EvalContext(threads=2, latency_cache=ctx.latency_cache)
    other_threads.measure_latency(lambda: calls.append(1), **kwargs)
    assert other_threads.latency_log[0]["cached"] is False


def test_context_without_lane_or_cache_just_measures() -> None:
    ctx = EvalContext()
    stats = ctx.measure_latency(lambda: None, signature={}, input_shape=(), warmup=0, time_cap_s=0.05)
    assert stats.repeats >= 15
    with ctx.training():
        pass


def test_reference_nominal_is_calibrated_once_per_fingerprint(tmp_path: Path) -> None:
    cache = LatencyCache(tmp_path / "c.db")
    fp = device_fingerprint(threads=1)
    calls: list[float] = []

    def calibrate(value: float = 0.25) -> float:
        calls.append(value)
        return value

    assert cache.reference_ms(fp, calibrate) == 0.25
    # Later callers (another process or study opening the file) get the stored scale, not a new one.
    assert LatencyCache(tmp_path / "c.db").reference_ms(fp, lambda: calibrate(9.0)) == 0.25
    assert calls == [0.25]
    assert cache.reference_ms({**fp, "threads": "2"}, lambda: calibrate(0.5)) == 0.5


def test_context_on_cpu_normalises_by_the_stored_reference(tmp_path: Path) -> None:
    cache = LatencyCache(tmp_path / "c.db")
    ctx = EvalContext(latency_cache=cache)
    kwargs = {"signature": SIG, "input_shape": (1, 64), "warmup": 2, "min_repeats": 5, "time_cap_s": 0.2}
    with fixed_threads(1):
        stats = ctx.measure_latency(lambda: sum(range(20000)), **kwargs)
    assert stats.reference_reps >= 1 and stats.raw_median_ms is not None and stats.speed is not None
    [entry] = cache.entries()
    assert entry["fingerprint"]["scale"].startswith("reference-")
    # one scale for the cache: the nominal stored at the first measurement
    nominal = cache.reference_ms(entry["fingerprint"], lambda: -1.0)
    assert nominal > 0 and stats.median_ms > 0 and stats.speed > 0
