"""The search-quality benchmark: its scores on hand-checked cases, and the harness through the real engine."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from benchmarks.search_quality import (
    Config,
    TableScorer,
    all_problems,
    get_problem,
    hv_ratio,
    igd_plus,
    run_benchmark,
    run_engine,
    run_inprocess,
    summarise,
    table_path,
)
from benchmarks.search_quality._harness import at_budget, checkpoints

# Eight candidates x = 0..7 with two minimised objectives. Medians are 3.5 in both, so the reference
# point is (3.5, 3.5) before normalisation (/8 after). Inside that box the true front is B, C, D:
# B = (1, 3), C = (2, 2), D = (3, 1); A = (0, 8) and E = (8, 0) are Pareto-optimal but outside it.
HAND = pd.DataFrame(
    {
        "x": range(8),
        "f1": [0, 1, 2, 3, 8, 4, 6, 8],
        "f2": [8, 3, 2, 1, 0, 4, 6, 8],
    }
)
# Hypervolume of the box front, by hand (staircase, raw units): B 2.5*0.5 + C 1.5*1 + D 0.5*1 = 3.25.
TRUE_HV_RAW = 3.25


def hand_scorer(**kw):
    return TableScorer(HAND, ["x"], [("f1", "minimize"), ("f2", "minimize")], **kw)


def test_hv_ratio_hand_case():
    s = hand_scorer()
    np.testing.assert_allclose(s.reference, [3.5 / 8, 3.5 / 8])
    assert s.true_hv == pytest.approx(TRUE_HV_RAW / 64)
    # {B, D}: B covers [1, 3.5] x [3, 3.5] = 1.25, D covers [3, 3.5] x [1, 3] = 1.0 -> 2.25 / 3.25.
    assert s.score([(1,), (3,)])[0] == pytest.approx(9 / 13)
    # {C}: [2, 3.5]^2 = 2.25 -> the same ratio; all of B, C, D -> 1; points outside the box add nothing.
    assert s.score([(2,)])[0] == pytest.approx(9 / 13)
    assert s.score([(1,), (2,), (3,), (0,), (4,)])[0] == pytest.approx(1.0)
    assert s.score([(0,), (4,), (7,)])[0] == 0.0
    assert s.score([None, (2,)])[0] == pytest.approx(9 / 13)  # a failed trial is skipped


def test_maximised_objective_is_flipped():
    flipped = HAND.assign(f2=-HAND["f2"])
    s = TableScorer(flipped, ["x"], [("f1", "minimize"), ("f2", "maximize")])
    assert s.score([(2,)])[0] == pytest.approx(9 / 13)


def test_igd_plus_hand_case():
    # z = (0, 2): a - z = (1, -1) -> only the worse objective counts -> 1; same for z = (2, 0).
    assert igd_plus(np.array([[1.0, 1.0]]), np.array([[0.0, 2.0], [2.0, 0.0]])) == pytest.approx(1.0)
    assert igd_plus(np.array([[0.0, 2.0], [2.0, 0.0]]), np.array([[0.0, 2.0], [2.0, 0.0]])) == 0.0
    # A point dominating the front is at distance 0 (IGD would count it as far).
    assert igd_plus(np.array([[-1.0, -1.0]]), np.array([[0.0, 2.0], [2.0, 0.0]])) == 0.0
    assert igd_plus(np.zeros((0, 2)), np.array([[0.0, 0.0]])) == math.inf
    # The scorer measures IGD+ to the whole true front: found {C} = (2, 2) against A, B, C, D, E is
    # (2 + 1 + 0 + 1 + 2) / 5 = 1.2 raw units, 0.15 after dividing by the range 8.
    assert hand_scorer().score([(2,)])[1] == pytest.approx(0.15)


def test_hv_ratio_function_and_empty_front_error():
    front = np.array([[0.25, 0.25]])
    assert hv_ratio(front, front, np.array([0.5, 0.5])) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="dominates no volume"):
        hv_ratio(front, np.array([[0.6, 0.6]]), np.array([0.5, 0.5]))


def test_constraints_and_seed_means():
    # Two seeds per configuration: scored on the mean. The constraint removes C from every front.
    noisy = pd.concat([HAND.assign(seed=0, f1=HAND.f1 - 0.5), HAND.assign(seed=1, f1=HAND.f1 + 0.5)])
    noisy["cost"] = np.where(noisy["x"] == 2, 10.0, 0.0)
    s = TableScorer(noisy, ["x"], [("f1", "minimize"), ("f2", "minimize")], [("cost", "<=", 5.0)])
    assert len(s.loss) == 8 and s.feasible.sum() == 7
    assert s.score([(2,)])[0] == 0.0
    assert s.score([(1,), (3,)])[0] == pytest.approx(1.0)
    with pytest.raises(KeyError, match="not in the table"):
        s.score([(99,)])


def test_unknown_problem_error():
    with pytest.raises(ValueError, match=r"Unknown problem 'nope'. Available: \["):
        get_problem("nope")


def test_problems_build_and_have_a_front():
    for p in all_problems():
        if p.name.startswith("nb201") and not p.quick:
            continue  # 15,625-row tables: covered by the benchmark itself
        frame = p.build()
        assert set(p.params) <= set(frame.columns) and set(p.metrics) <= set(frame.columns)
        s = TableScorer(frame, p.params, [(o["name"], o["direction"]) for o in p.objectives])
        assert s.true_hv > 0 and len(s.front) >= 1, p.name
    assert any(p.heldout for p in all_problems()) and any(p.quick for p in all_problems())


def test_checkpoints():
    assert checkpoints(25) == [10, 20, 25]


@pytest.fixture(scope="module")
def local_ray():
    """A Ray of this process's own. (The shared ``ray_session`` fixture calls ``ray.init(address=None)``,
    which joins any cluster someone started on this machine with ``ray start``.)"""
    import ray

    from benchmarks.search_quality._harness import start_local_ray

    started = not ray.is_initialized()
    start_local_ray()
    yield ray
    if started:
        ray.shutdown()


@pytest.mark.integration
def test_engine_matches_inprocess_and_harness_runs(local_ray, tmp_path):
    """The in-process loop reproduces the engine's trials exactly; the harness scores engine runs."""
    problem = get_problem("zdt1-small")
    table = table_path(problem, tmp_path)
    engine = run_engine(problem, table, tmp_path, sampler="random", n_trials=8, seed=1)
    local = run_inprocess(problem, problem.build(), sampler="random", n_trials=8, seed=1)
    assert engine.keys == local.keys and len(engine.keys) == 8

    cfg = Config(
        problems=[problem],
        seeds=[0],
        budgets=[10, 20],
        baselines=["random"],
        auto_budgets=[10],
        workdir=tmp_path,
        goal_budget=10,
        goal_reference=20,
        overhead_trials=20,
    )
    results = run_benchmark(cfg, log=lambda s: None)
    runs = {(r["sampler"], r["n_trials"]) for r in results.runs}
    assert runs == {("random", 20), ("auto", 10)}
    assert at_budget(results, "zdt1-small", "random", 10)  # a prefix of the 20-trial run
    summary = summarise(results)["zdt1-small"]
    assert 0.0 <= summary["goal"]["auto_median"] <= 1.0
    assert set(summary["samplers"]) == {"random@10", "random@20", "auto@10"}
    assert results.overhead["zdt1-small"]["ask_s_at_last_trial"] < 1.0


def test_autosampler_rule_follows_the_published_decision_table():
    """OptunaHub AutoSampler's rule (re-implemented): TPE for categorical spaces, GP for numerical ones
    below 250 trials, NSGA-II from 250 multi-objective trials."""
    import optuna

    from benchmarks.search_quality._peers import AutoSamplerRule

    def chosen(dist, n_done: int, n_obj: int = 2) -> type:
        sampler = AutoSamplerRule(seed=0)
        study = optuna.create_study(directions=["minimize"] * n_obj, sampler=sampler)
        for i in range(n_done):
            study.add_trial(
                optuna.trial.create_trial(
                    params={"x": dist.to_external_repr(i % 2)},
                    distributions={"x": dist},
                    values=[float(i)] * n_obj,
                )
            )
        study.ask()
        return type(sampler._sampler)

    categorical = optuna.distributions.CategoricalDistribution(["a", "b"])
    numeric = optuna.distributions.FloatDistribution(0.0, 1.0)
    assert chosen(categorical, 0) is optuna.samplers.RandomSampler  # nothing complete yet
    assert chosen(categorical, 3) is optuna.samplers.TPESampler
    assert chosen(numeric, 3) is optuna.samplers.GPSampler
    assert chosen(numeric, 250) is optuna.samplers.NSGAIISampler
    assert chosen(numeric, 3, n_obj=1) is optuna.samplers.GPSampler


def test_peer_cut_by_its_time_limit_is_reported_not_ranked(tmp_path):
    from benchmarks.search_quality import markdown

    cfg = Config(
        problems=[get_problem("zdt1-small")],
        seeds=[0],
        budgets=[10, 20],
        baselines=["random", "gp"],
        auto_budgets=[10],
        engine=False,
        workdir=tmp_path,
        goal_budget=10,
        goal_reference=20,
        overhead_trials=0,
        peer_time_limit=0.0,  # GP stops before its first trial
        slow_peers=(),
    )
    results = run_benchmark(cfg, log=lambda s: None)
    summary = summarise(results)["zdt1-small"]
    assert "gp@20" not in summary["samplers"] and summary["goal"]["best_baseline"] == "random"
    assert summary["unfinished"] == {"gp": [0]}
    assert "`gp` did not reach 20 trials within 0.0 s on 1 of 1 seeds" in markdown(results)
