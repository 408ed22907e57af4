"""The verdicts of the compression-vs-uniform-baselines benchmark on a hand-checked case."""

from __future__ import annotations

from benchmarks.bench_compression_pareto import analyse, dominates
from frontier.search._results import TrialRow


def _row(n, fidelity, latency, size, *, feasible=True, pareto=False, baseline=None):
    return TrialRow(
        number=n,
        state="complete",
        params={},
        values={"fidelity": fidelity, "latency_norm_ms": latency, "size_mb": size},
        metrics={"avg_bits": 4.0},
        constraints={},
        feasible=feasible,
        pareto=pareto,
        tags={"baseline": baseline} if baseline else {},
    )


def test_dominance_is_strict_in_fidelity_and_weak_in_cost():
    b = {"fidelity": 0.9, "latency_norm_ms": 1.0, "size_mb": 50.0}
    assert dominates({"fidelity": 0.91, "latency_norm_ms": 1.0, "size_mb": 50.0}, b)
    assert not dominates({"fidelity": 0.9, "latency_norm_ms": 0.5, "size_mb": 40.0}, b)  # not higher fidelity
    assert not dominates({"fidelity": 0.95, "latency_norm_ms": 1.02, "size_mb": 50.0}, b)
    assert dominates({"fidelity": 0.95, "latency_norm_ms": 1.02, "size_mb": 50.0}, b, latency_tol=0.03)


def test_verdicts_per_baseline():
    trials = [
        _row(0, 0.999, 1.0, 60.0, feasible=False, baseline="uniform-8bit"),
        _row(1, 0.95, 1.0, 50.0, baseline="uniform-4bit"),
        _row(2, 0.80, 1.0, 45.0, pareto=True, baseline="uniform-3bit"),  # the smallest: an extreme point
        _row(3, 0.97, 0.99, 50.0, pareto=True),
        _row(4, 0.96, 1.02, 49.0, pareto=True),
        _row(5, 0.99, 0.98, 49.0, feasible=False),  # infeasible points never dominate
    ]
    result = analyse(trials, latency_tol=0.03)
    verdicts = {b["baseline"]: b for b in result["baselines"]}
    assert verdicts["uniform-8bit"]["verdict"].startswith("infeasible")
    assert verdicts["uniform-3bit"]["verdict"] == "extreme point (best size_mb)"
    four = verdicts["uniform-4bit"]
    assert four["verdict"] == "strictly dominated"
    assert [d["trial"] for d in four["dominated_by"]] == [3]
    assert [d["trial"] for d in four["dominated_within_tol_by"]] == [3, 4]
    assert (result["judged_baselines"], result["strictly_dominated"]) == (1, 1)
