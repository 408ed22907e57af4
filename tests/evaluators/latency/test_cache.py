"""The persistent latency cache and EvalContext.measure_latency (lane + cache)."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

from evaluators import EvalContext
from evaluators.latency import LatencyCache, LatencyStats, MeasurementLane, device_fingerprint

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
