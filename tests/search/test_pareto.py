from __future__ import annotations

import numpy as np
import optuna
import pytest

from frontier.search import hypervolume, pareto_mask, pareto_trials
from frontier.search._pareto import default_reference, to_loss


def test_hypervolume_hand_checked_2d():
    # points (1,3), (2,2), (3,1) with reference (4,4): staircase area = 3 + 2 + 1 = 6
    pts = np.array([[1, 3], [2, 2], [3, 1], [3, 3]])
    assert hypervolume(pts, np.array([4.0, 4.0])) == pytest.approx(6.0)
    # a point outside the reference box adds nothing
    assert hypervolume(np.vstack([pts, [5, 0]]), np.array([4.0, 4.0])) == pytest.approx(6.0)
    assert hypervolume(np.empty((0, 2)), np.array([1.0, 1.0])) == 0.0


def test_hypervolume_hand_checked_3d():
    # unit cube corner at origin with ref (1,1,1) -> 1; adding (0.5,0.5,0.5) changes nothing
    assert hypervolume(np.array([[0, 0, 0], [0.5, 0.5, 0.5]]), np.ones(3)) == pytest.approx(1.0)
    # two boxes overlapping: [0,1]x[0,.5]x[0,1] u [0,.5]x[0,1]x[0,1] = .5 + .5 - .25
    assert hypervolume(np.array([[0, 0.5, 0], [0.5, 0, 0]]), np.ones(3)) == pytest.approx(0.75)


def test_pareto_mask_and_maximize_flip():
    loss = to_loss(np.array([[0.9, 1.0], [0.8, 0.5], [0.7, 0.6], [0.95, 2.0]]), ["maximize", "minimize"])
    assert pareto_mask(loss).tolist() == [True, True, False, True]


def test_default_reference_pads_the_nadir():
    ref = default_reference(np.array([[0.0, 10.0], [1.0, 20.0]]))
    assert ref.tolist() == pytest.approx([1.1, 21.0])


def test_infeasible_trials_are_never_on_the_front():
    study = optuna.create_study(directions=["minimize", "minimize"])
    for values, violation in [((0, 0), 1.0), ((1, 1), 0.0), ((2, 0.5), -1.0), ((0.5, 2), 0.0)]:
        t = study.ask()
        t.set_constraint("c", violation)
        study.tell(t, values)
    front = pareto_trials(study.trials, study.directions)
    assert [t.number for t in front] == [1, 2, 3]  # (0, 0) dominates all but is infeasible


def test_one_reference_rule_for_mlflow_and_the_service():
    from types import SimpleNamespace

    from frontier.search._pareto import reference_point, study_hypervolume
    from frontier.spaces import spec_from_dict

    def spec(reference: float | None) -> object:
        return spec_from_dict(
            {
                "name": "hv",
                "evaluator": {"kind": "tabular", "options": {"table": "t.csv"}},
                "space": [{"name": "x", "kind": "int", "low": 0, "high": 9}],
                "objectives": [
                    {"name": "acc", "direction": "maximize", **({"reference": 0.0} if reference else {})},
                    {
                        "name": "ms",
                        "direction": "minimize",
                        **({"reference": reference} if reference else {}),
                    },
                ],
            }
        )

    def row(acc: float, ms: float, *, state: str = "complete", feasible: bool = True) -> SimpleNamespace:
        return SimpleNamespace(values={"acc": acc, "ms": ms}, state=state, feasible=feasible)

    rows = [row(0.9, 2.0), row(0.8, 1.0), row(0.99, 9.0, feasible=False), row(0.5, 0.5, state="fail")]
    loss = to_loss(np.array([[0.9, 2.0], [0.8, 1.0]]), ["maximize", "minimize"])
    # the spec's references, in loss space, win over anything stored
    given = spec(4.0)
    assert reference_point(given, loss, [9.0, 9.0]).tolist() == [0.0, 4.0]
    assert study_hypervolume(given, rows, [9.0, 9.0]) == pytest.approx(
        hypervolume(loss, np.array([0.0, 4.0]))
    )
    # else the stored one, else the default from the feasible complete rows (once there are enough)
    free = spec(None)
    assert reference_point(free, loss, [0.0, 3.0]).tolist() == [0.0, 3.0]
    assert reference_point(free, loss, None, min_rows=5) is None
    assert reference_point(free, loss, None).tolist() == pytest.approx(default_reference(loss).tolist())
    assert study_hypervolume(free, rows, None) == pytest.approx(hypervolume(loss, default_reference(loss)))
    assert study_hypervolume(free, [row(0.5, 0.5, state="fail")], None) is None
