"""MO-ASHA: the promotion rule, the scheduler driven by hand, save/restore, and one real Ray Tune run."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pytest
from ray.tune.schedulers import TrialScheduler

from frontier.search._moasha import (
    MOASHAScheduler,
    crowding_distance,
    moasha_decide,
    non_dominated_ranks,
    rung_milestones,
)

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

CONTINUE, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP


@dataclass(frozen=True)
class _FakeTrial:
    """The scheduler only reads ``trial_id``."""

    trial_id: str


def fake_trial(trial_id: str) -> Trial:
    return cast("Trial", _FakeTrial(trial_id))


# ---------------------------------------------------------------- the pure rule


def test_fewer_than_rf_records_always_continue() -> None:
    records = np.array([[0.0, 0.0], [0.1, 0.1]])
    assert moasha_decide(records, np.array([9.0, 9.0]), 3)
    assert moasha_decide(np.empty((0, 2)), np.array([9.0, 9.0]), 3)
    assert not moasha_decide(np.vstack([records, [[0.2, 0.2]]]), np.array([9.0, 9.0]), 3)


def test_dominated_point_at_full_rung_stops() -> None:
    records = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])
    assert not moasha_decide(records, np.array([3.0, 3.0]), 3)
    assert not moasha_decide(records, np.array([0.5, 0.5]), 3)  # front 1: only the first of 4 continues


def test_non_dominated_point_continues() -> None:
    records = np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    assert moasha_decide(records, np.array([-1.0, -1.0]), 3)  # dominates everything
    # Shares the first front with (1, 1) and, like it, is a boundary point (infinite crowding): the
    # candidate wins the tie, as ASHA keeps a trial equal to its cutoff.
    assert moasha_decide(records, np.array([0.0, 5.0]), 3)
    assert moasha_decide(records, np.array([1.5, 0.5]), 3)
    assert moasha_decide(records, np.array([1.0, 1.0]), 3)  # an exact duplicate of the best record


def test_crowding_distance_breaks_ties_within_the_last_front() -> None:
    front = np.array([[0.0, 1.0], [1.0, 0.0], [0.2, 0.8], [0.25, 0.75], [0.9, 0.1]])
    # n = 6 with the candidate, quota 2: the two extreme points of the front take it.
    assert not moasha_decide(front, np.array([0.5, 0.5]), 3)
    assert moasha_decide(front[1:], np.array([0.0, 1.0]), 2)  # an extreme point continues


def test_quota_is_floor_n_over_rf_on_a_chain() -> None:
    for rf in (2, 3, 4, 2.5):
        for n_records in range(math.ceil(rf), 14):
            chain = np.arange(n_records, dtype=float)[:, None] * np.ones((1, 2))
            quota = math.floor((n_records + 1) / rf)
            for position in range(n_records + 1):
                candidate = np.full(
                    2, position - 0.5
                )  # strictly between chain[position-1] and chain[position]
                assert moasha_decide(chain, candidate, rf) == (position < quota), (rf, n_records, position)


def _strictly_ahead(pts: np.ndarray) -> np.ndarray:
    """How many points NSGA-II's order puts strictly before each point (better front or more crowded)."""
    ranks = non_dominated_ranks(pts)
    crowd = np.zeros(len(pts))
    for front in np.unique(ranks):
        crowd[ranks == front] = crowding_distance(pts[ranks == front])
    better = (ranks[None, :] < ranks[:, None]) | (
        (ranks[None, :] == ranks[:, None]) & (crowd[None, :] > crowd[:, None])
    )
    return better.sum(axis=1)


@pytest.mark.parametrize("seed", range(20))
def test_quota_on_random_full_rungs(seed: int) -> None:
    """Judging each of N random points against the other N-1: a point continues iff fewer than
    floor(N / rf) points are strictly ahead of it, so at least floor(N / rf) continue; with one objective
    (no ties) exactly floor(N / rf)."""
    rng = np.random.default_rng(seed)
    n, m = int(rng.integers(4, 40)), int(rng.integers(1, 4))
    rf = float(rng.choice([2, 3, 4]))
    quota = math.floor(n / rf)
    pts = rng.random((n, m))
    kept = np.array([moasha_decide(np.delete(pts, i, axis=0), pts[i], rf) for i in range(n)])
    np.testing.assert_array_equal(kept, _strictly_ahead(pts) < quota)
    assert kept.sum() >= quota
    one = pts[:, :1]
    assert sum(moasha_decide(np.delete(one, i, axis=0), one[i], rf) for i in range(n)) == quota
    # A dominated point never continues while the first front alone fills the quota.
    ranks = non_dominated_ranks(pts)
    if (ranks == 0).sum() >= quota:
        assert not kept[ranks > 0].any()


def test_single_objective_is_asha() -> None:
    records = np.array([[3.0], [1.0], [2.0], [5.0], [4.0]])  # n = 6 with the candidate, rf 3: top 2
    assert moasha_decide(records, np.array([0.5]), 3)
    assert moasha_decide(records, np.array([1.5]), 3)
    assert not moasha_decide(records, np.array([2.5]), 3)


def test_nan_is_the_worst_value() -> None:
    records = np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    assert not moasha_decide(records, np.array([1.5, np.nan]), 3)  # dominated by (1, 1) once NaN is inf
    assert moasha_decide(records, np.array([0.0, np.nan]), 3)  # still best on the first objective
    nan_records = np.array([[1.0, np.nan], [2.0, np.nan], [3.0, 3.0]])
    assert moasha_decide(nan_records, np.array([0.5, 2.5]), 3)  # dominates both NaN records
    assert not moasha_decide(nan_records, np.array([2.5, 3.5]), 3)


def test_decide_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"'rung_records' must have shape \(n, 2\).*Got shape \(3, 3\)"):
        moasha_decide(np.zeros((3, 3)), np.zeros(2), 3)
    with pytest.raises(ValueError, match=r"'reduction_factor' must be > 1. Got 1"):
        moasha_decide(np.zeros((3, 2)), np.zeros(2), 1)


def test_non_dominated_ranks_match_optuna() -> None:
    from optuna.study._multi_objective import _fast_non_domination_rank

    rng = np.random.default_rng(0)
    for _ in range(30):
        n, m = int(rng.integers(1, 50)), int(rng.integers(2, 4))
        pts = rng.integers(0, 6, size=(n, m)).astype(float)  # a coarse grid: many ties and duplicates
        np.testing.assert_array_equal(non_dominated_ranks(pts), _fast_non_domination_rank(pts))


def test_crowding_distance_hand_case() -> None:
    pts = np.array([[0.0, 4.0], [1.0, 3.0], [3.0, 1.0], [4.0, 0.0]])
    # interior (1, 3): (3 - 0)/4 + (4 - 1)/4 = 1.5; interior (3, 1): (4 - 1)/4 + (3 - 0)/4 = 1.5
    np.testing.assert_allclose(crowding_distance(pts), [np.inf, 1.5, 1.5, np.inf])
    assert np.all(np.isinf(crowding_distance(pts[:2])))


def test_rung_milestones() -> None:
    assert rung_milestones(1, 9, 3) == [1, 3, 9]
    assert rung_milestones(1, 9, 3, bracket=1) == [3, 9]
    assert rung_milestones(2, 100, 4) == [2, 8, 32]
    assert rung_milestones(1, 1000, 10) == [1, 10, 100, 1000]  # no float round-off drops the last rung


# ------------------------------------------------------- the scheduler, by hand


def _sched(**kwargs: Any) -> MOASHAScheduler:
    args: dict[str, Any] = {"grace_period": 1, "max_t": 9, "reduction_factor": 3, "seed": 0}
    return MOASHAScheduler(["loss", "acc"], ["min", "max"], **(args | kwargs))


def _report(s: MOASHAScheduler, tid: str, it: int, loss: float, acc: float) -> str:
    return s.on_trial_result(None, fake_trial(tid), {"training_iteration": it, "loss": loss, "acc": acc})


def test_scheduler_stops_a_dominated_trial_at_a_full_rung() -> None:
    s = _sched()
    for i, (loss, acc) in enumerate([(1.0, 0.9), (0.5, 0.5), (2.0, 0.95)]):
        s.on_trial_add(None, fake_trial(f"t{i}"))
        assert _report(s, f"t{i}", 1, loss, acc) == CONTINUE  # fewer than rf records
    s.on_trial_add(None, fake_trial("bad"))
    assert _report(s, "bad", 1, 3.0, 0.1) == STOP
    s.on_trial_add(None, fake_trial("best"))
    assert _report(s, "best", 1, 0.1, 0.99) == CONTINUE
    assert "num_judged=5, num_stopped=1" in s.debug_string()
    assert "1: 5 recorded | 3: 0 recorded | 9: 0 recorded" in s.debug_string()


def test_scheduler_flips_max_modes() -> None:
    """High accuracy is good: (loss 1, acc 0.99) continues, (loss 1, acc 0.01) with all else equal stops."""
    base = [(1.0, 0.5), (1.0, 0.6), (1.0, 0.7)]
    for acc, expected in ((0.99, CONTINUE), (0.01, STOP)):
        s = _sched()
        for i, (loss, a) in enumerate(base):
            _report(s, f"t{i}", 1, loss, a)
        assert _report(s, "x", 1, 1.0, acc) == expected
    s = MOASHAScheduler(["loss", "acc"], ["min", "min"], max_t=9)
    for i, (loss, a) in enumerate(base):
        _report(s, f"t{i}", 1, loss, a)
    assert _report(s, "x", 1, 1.0, 0.99) == STOP


def test_each_rung_judges_a_trial_once_and_max_t_stops() -> None:
    s = _sched()
    for i in range(3):
        _report(s, f"t{i}", 1, 0.1 * i, 0.9)
    assert _report(s, "slow", 1, 0.0, 0.95) == CONTINUE
    assert _report(s, "slow", 2, 99.0, 0.0) == CONTINUE  # between rungs: no decision
    assert _report(s, "slow", 3, 99.0, 0.0) == CONTINUE  # rung 3 has no other records yet
    assert _report(s, "slow", 4, 99.0, 0.0) == CONTINUE  # already judged at rung 3
    assert _report(s, "slow", 9, 99.0, 0.0) == STOP  # max_t
    assert "num_judged=5, num_stopped=0" in s.debug_string()
    state = s.get_state()
    assert list(state["brackets"][0][1]["records"]) == ["slow"]
    assert "slow" not in state["brackets"][0][2]["records"]  # max_t stops before recording


def test_results_missing_an_objective_are_not_judged() -> None:
    s = _sched()
    for i in range(3):
        _report(s, f"t{i}", 1, 0.1 * i, 0.9)
    trial = fake_trial("partial")
    assert s.on_trial_result(None, trial, {"training_iteration": 1, "loss": 99.0}) == CONTINUE
    assert s.on_trial_result(None, trial, {"loss": 99.0, "acc": 0.0}) == CONTINUE
    assert s.on_trial_result(None, trial, {"training_iteration": 1, "loss": None, "acc": 0.0}) == CONTINUE
    assert "partial" not in s.get_state()["brackets"][0][0]["records"]
    assert _report(s, "partial", 1, 99.0, 0.0) == STOP  # judged once the vector is complete


def test_complete_records_and_forgets_remove_forgets() -> None:
    s = _sched(stop_last_trials=False)
    s.on_trial_add(None, fake_trial("a"))
    s.on_trial_add(None, fake_trial("b"))
    s.on_trial_complete(None, fake_trial("a"), {"training_iteration": 3, "loss": 1.0, "acc": 0.5})
    s.on_trial_remove(None, fake_trial("b"))
    state = s.get_state()
    assert state["trial_bracket"] == {}
    assert state["brackets"][0][1]["records"] == {"a": [1.0, -0.5]}  # stored as minimisation values
    s.on_trial_complete(None, fake_trial("never-added"), {})


def test_set_search_properties() -> None:
    s = _sched()
    assert s.set_search_properties(None, None)
    assert s.set_search_properties("loss", "min")
    assert s.set_search_properties("acc", None)
    assert s.set_search_properties(["loss", "acc"], ["min", "max"])
    assert not s.set_search_properties("acc", "min")  # conflicts with the constructor's mode
    assert not s.set_search_properties("other", "min")
    assert not s.set_search_properties(None, "min")
    assert s.metric is None  # Tune's strict metric check must not demand one objective per result
    assert s.metrics == ("loss", "acc") and s.modes == ("min", "max")


def test_brackets_are_seeded_and_start_higher() -> None:
    a, b = _sched(brackets=2, seed=7), _sched(brackets=2, seed=7)
    for i in range(20):
        a.on_trial_add(None, fake_trial(str(i)))
        b.on_trial_add(None, fake_trial(str(i)))
    assert a.get_state()["trial_bracket"] == b.get_state()["trial_bracket"]
    assert set(a.get_state()["trial_bracket"].values()) == {0, 1}
    assert [r["milestone"] for r in a.get_state()["brackets"][1]] == [3, 9]


def _drive(
    s: MOASHAScheduler, trials: range, rng: np.random.Generator, seen: dict[str, list[dict]] | None = None
) -> list[str]:
    decisions = []
    for i in trials:
        s.on_trial_add(None, fake_trial(f"t{i}"))
        for it in (1, 3):
            result = {"training_iteration": it, "loss": float(rng.random()), "acc": float(rng.random())}
            decisions.append(s.on_trial_result(None, fake_trial(f"t{i}"), result))
            if seen is not None:
                seen.setdefault(f"t{i}", []).append(result)
    return decisions


def test_state_round_trips_through_json() -> None:
    import json

    s = _sched(brackets=2, seed=3)
    _drive(s, range(12), np.random.default_rng(0))
    restored = _sched(brackets=2, seed=999)
    restored.set_state(json.loads(json.dumps(s.get_state())))
    assert restored.get_state() == s.get_state()
    assert restored.debug_string() == s.debug_string()
    # Same future: same bracket draws and the same decisions on the same results.
    assert _drive(restored, range(12, 30), np.random.default_rng(1)) == _drive(
        s, range(12, 30), np.random.default_rng(1)
    )
    assert restored.get_state() == s.get_state()


def test_replaying_stored_results_rebuilds_the_rungs_and_the_decisions_to_come() -> None:
    """What a resumed study does: a fresh scheduler replays the finished trials' results in order."""
    live, seen = _sched(brackets=2, seed=3), {}
    _drive(live, range(12), np.random.default_rng(0), seen)
    resumed = _sched(brackets=2, seed=3)
    for trial_id, results in seen.items():
        resumed.replay(trial_id, results)
    rungs = [[r["records"] for r in b] for b in live.get_state()["brackets"]]
    assert [[r["records"] for r in b] for b in resumed.get_state()["brackets"]] == rungs
    assert sum(len(r) for b in rungs for r in b) > 12  # trials recorded at more than one rung
    future = _drive(resumed, range(12, 30), np.random.default_rng(1))
    assert future == _drive(live, range(12, 30), np.random.default_rng(1))
    assert STOP in future and CONTINUE in future
    # Without the replay the rungs start empty, and the same trials are judged otherwise.
    assert _drive(_sched(brackets=2, seed=3), range(12, 30), np.random.default_rng(1)) != future


def test_set_state_rejects_other_settings() -> None:
    with pytest.raises(ValueError, match=r"saved with other settings.*'reduction_factor': \(3, 2\)"):
        _sched(reduction_factor=2).set_state(_sched().get_state())
    with pytest.raises(ValueError, match=r"state has version 0"):
        _sched().set_state({"version": 0})


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        (
            {"metrics": "loss", "modes": ["min"]},
            TypeError,
            r"'metrics' parameter .* list of result keys.*Got 'loss'",
        ),
        (
            {"metrics": ["a", "a"], "modes": ["min", "min"]},
            ValueError,
            r"distinct non-empty str. Got \['a', 'a'\]",
        ),
        ({"modes": ["min"]}, ValueError, r"'modes' .* one of \['min', 'max'\] per metric \(2 metrics\)"),
        ({"modes": ["min", "maximize"]}, ValueError, r"Got \['min', 'maximize'\]"),
        ({"grace_period": 0}, ValueError, r"'grace_period' parameter of MOASHAScheduler must be > 0. Got 0"),
        (
            {"max_t": 0.5},
            ValueError,
            r"'max_t' .* must be >= grace_period. Got max_t=0.5 with grace_period=1",
        ),
        ({"reduction_factor": 1}, ValueError, r"'reduction_factor' .* must be > 1. Got 1"),
        ({"brackets": 4}, ValueError, r"'brackets' .* int in \[1, 3\].*Got 4"),
        ({"max_t": "9"}, TypeError, r"'max_t' .* finite number. Got '9'"),
        ({"time_attr": ""}, ValueError, r"'time_attr' .* must name a result key.*Got ''"),
        ({"time_attr": 1}, TypeError, r"'time_attr' .* must be a str. Got 1"),
    ],
)
def test_constructor_errors(kwargs: dict[str, Any], exc: type[Exception], match: str) -> None:
    args: dict[str, Any] = {"metrics": ["loss", "acc"], "modes": ["min", "max"], "max_t": 9} | kwargs
    metrics, modes = args.pop("metrics"), args.pop("modes")
    with pytest.raises(exc, match=match):
        MOASHAScheduler(metrics, modes, **args)


# ------------------------------------------------------------ real Ray Tune run

# Per-trial (loss, error) at convergence. Trials 5 and 10 dominate every other trial, so they alone form
# the final Pareto set; the rest form a chain that gets worse with the index.
_PARETO = {5: (0.05, 0.50), 10: (0.50, 0.05)}
_BASE = {i: _PARETO.get(i, (0.6 + 0.03 * i, 0.6 + 0.03 * i)) for i in range(12)}
_MAX_T = 9


def _trainable(config: dict[str, Any]) -> None:
    from ray import tune

    loss, err = _BASE[config["idx"]]
    for it in range(1, _MAX_T + 1):
        # A shared learning-curve factor keeps every dominance relation the same at every rung.
        factor = 1 + 2 / it
        tune.report({"loss": loss * factor, "acc": 1 - err * factor})


@pytest.mark.integration
def test_ray_tune_run_stops_dominated_trials_early(tmp_path: Path, ray_session: Any) -> None:
    from ray import tune

    # The session's local Ray (tests/conftest.py): a second ray.init here would be refused.
    scheduler = MOASHAScheduler(
        ["loss", "acc"], ["min", "max"], grace_period=1, max_t=_MAX_T, reduction_factor=3
    )
    tuner = tune.Tuner(
        _trainable,
        param_space={"idx": tune.grid_search(list(range(12)))},
        tune_config=tune.TuneConfig(scheduler=scheduler, max_concurrent_trials=2, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="moasha", verbose=0),
    )
    results = tuner.fit()
    assert not results.errors
    runs = [results[i] for i in range(len(results))]
    final_iter = {_idx(r.config): _metrics(r)["training_iteration"] for r in runs}
    assert len(final_iter) == 12
    stopped_early = [i for i, it in final_iter.items() if it < _MAX_T]
    assert stopped_early, final_iter
    assert all(final_iter[i] == _MAX_T for i in _PARETO), final_iter
    # Pareto-optimal among all trials' last results: exactly the two designed ones, both ran to max_t.
    last = np.array([[_metrics(r)["loss"], -_metrics(r)["acc"]] for r in runs])
    front = {_idx(runs[j].config) for j in np.flatnonzero(non_dominated_ranks(last) == 0)}
    assert front == set(_PARETO)


def _metrics(result: Any) -> dict[str, Any]:
    assert result.metrics is not None
    return dict(result.metrics)


def _idx(config: dict[str, Any] | None) -> int:
    assert config is not None
    return int(config["idx"])


def test_trials_at_max_t_are_never_judged_when_left_to_finish() -> None:
    s = _sched(stop_last_trials=False)
    for name, loss in (("a", 1.0), ("b", 2.0), ("c", 3.0), ("d", 4.0)):
        s.on_trial_add(None, fake_trial(name))
        # a dominated trial that reached the full budget finishes: it is not stopped at the max_t rung
        assert _report(s, name, 9, loss, 0.0) == CONTINUE
