"""``family: experts``: options and their errors, expansion, decoding into an ExpertPlan."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from frontier import spaces
from frontier.spaces import ExpertPlan, expert_plan, spec_from_dict
from frontier.spaces._family_experts import ExpertsFamily


def _spec(options: dict[str, Any], *extra: dict[str, Any]) -> spaces.StudySpec:
    item = {"kind": "family", "name": "ex", "family": "experts", "options": options}
    return spec_from_dict(
        {
            "name": "t",
            "evaluator": {"kind": "digits-classifier"},
            "space": [item, *extra],
            "objectives": [{"name": "accuracy", "direction": "maximize"}],
        }
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"num_layers": 2}, "needs 'num_experts': the model's routed experts"),
        (
            {"num_experts": 1, "num_layers": 2},
            "'num_experts' option of family 'experts' must be an int in [2, ",
        ),
        ({"num_experts": 8}, "give either 'moe_layers' (their indices) or 'num_layers'"),
        ({"num_experts": 8, "num_layers": 2, "moe_layers": [0]}, "not both and not neither"),
        (
            {"num_experts": 8, "moe_layers": [1, 1]},
            "'moe_layers' option of family 'experts' must be a non-empty",
        ),
        (
            {"num_experts": 8, "num_layers": 2, "choices": [0, 4]},
            "distinct ints in [1, 8]. Got [0, 4] instead",
        ),
        ({"num_experts": 8, "num_layers": 2, "choices": [9]}, "distinct ints in [1, 8]. Got [9] instead"),
        ({"num_experts": 8, "num_layers": 2, "choices": [4], "fraction": [0.5]}, "not both. Got choices=[4]"),
        (
            {"num_experts": 8, "num_layers": 2, "fraction": [0, 0.5]},
            "numbers in (0, 1]. Got [0, 0.5] instead",
        ),
        (
            {"num_experts": 8, "num_layers": 2, "choices": [2, 4], "top_k": [1, 3]},
            "'top_k' option of family 'experts' must hold values <= the smallest kept count (2)",
        ),
        (
            {"num_experts": 8, "num_layers": 2, "group_by": "block"},
            "'block' and 'module_type' apply to the Linear",
        ),
        ({"num_experts": 8, "num_layers": 2, "group_by": "x"}, "must be one of ['layer', 'none', 'all']"),
        ({"num_experts": 8, "num_layers": 2, "keep": 3}, "Unknown option(s) ['keep'] for family 'experts'"),
    ],
)
def test_bad_options_name_the_option_the_rule_and_the_value(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        ExpertsFamily.compile(options)
    with pytest.raises(ValueError, match=r"space.*family 'ex' \(experts\)"):
        _spec(options)  # the spec reports which item


def test_expand_per_layer_with_top_k_and_decode() -> None:
    spec = _spec({"num_experts": 8, "moe_layers": [1, 3], "choices": [2, 4, 8], "top_k": [1, 2]})
    assert [(p.name, p.choices) for p in spec.params] == [
        ("ex.layer_1", (2, 4, 8)),
        ("ex.layer_1.top_k", (1, 2)),
        ("ex.layer_3", (2, 4, 8)),
        ("ex.layer_3.top_k", (1, 2)),
    ]
    assert all(p.when is None for p in spec.params)  # top_k <= every kept count: no condition needed
    plan = spec.decode({"ex.layer_1": 2, "ex.layer_1.top_k": 1, "ex.layer_3": 8, "ex.layer_3.top_k": 2})["ex"]
    assert plan == ExpertPlan(8, {1: 2, 3: 8}, {1: 1, 3: 2})
    assert not plan.uniform and plan.expert_fraction == pytest.approx(10 / 16)
    with pytest.raises(
        ValueError, match=re.escape("parameter 'ex.layer_1' must be one of [2, 4, 8], but got 3")
    ):
        expert_plan(spec, {"ex.layer_1": 3})


def test_fraction_default_group_by_all_and_a_fixed_top_k() -> None:
    default = ExpertsFamily.compile({"num_experts": 8, "num_layers": 2})
    assert default.counts == [2, 4, 6, 8]  # fraction 0.25, 0.5, 0.75, 1.0
    # repeats merge; a share too small for one expert keeps one
    assert ExpertsFamily.compile({"num_experts": 4, "num_layers": 1, "fraction": [0.1, 0.2, 0.5]}).counts == [
        1,
        2,
    ]
    spec = _spec({"num_experts": 8, "num_layers": 3, "fraction": [0.5, 1], "group_by": "all", "top_k": [1]})
    assert [p.name for p in spec.params] == ["ex.all"]  # one top_k value: fixed, no parameter
    plan = expert_plan(spec, {"ex.all": 4})
    assert plan == ExpertPlan(8, {0: 4, 1: 4, 2: 4}, {0: 1, 1: 1, 2: 1})
    assert plan is not None and plan.uniform and plan.expert_fraction == 0.5
    none = _spec({"num_experts": 8, "num_layers": 2, "group_by": "none"})
    assert [p.name for p in none.params] == ["ex.layer_0", "ex.layer_1"]
    # absent top_k: the evaluator resolves the model's; a missing parameter keeps every expert
    assert expert_plan(none, {"ex.layer_0": 2}) == ExpertPlan(8, {0: 2, 1: 8}, None)


def test_plan_round_trips_through_json_and_no_family_gives_none() -> None:
    for plan in (ExpertPlan(8, {0: 2, 5: 6}, {0: 1, 5: 2}), ExpertPlan(4, {0: 3}, None)):
        data = json.loads(json.dumps(plan.to_dict()))
        assert ExpertPlan.from_dict(data) == plan
    assert ExpertPlan(8, {0: 2}).to_dict() == {
        "num_experts": 8,
        "experts_per_layer": {"0": 2},
        "top_k_per_layer": None,
    }
    with pytest.raises(ValueError, match=re.escape("Got keys ['experts'] instead")):
        ExpertPlan.from_dict({"experts": {}})
    plain = spec_from_dict(
        {
            "name": "t",
            "evaluator": {"kind": "digits-classifier"},
            "space": [{"kind": "ordinal", "name": "x", "choices": [1, 2]}],
            "objectives": [{"name": "accuracy", "direction": "maximize"}],
        }
    )
    assert expert_plan(plain, {"x": 1}) is None
    options = {"num_experts": 4, "num_layers": 1}
    two = [
        spaces.FamilyParam(kind="family", name=f"e{i}", family="experts", options=options) for i in range(2)
    ]
    with pytest.raises(ValueError, match=re.escape("may hold one 'experts' family (one per model). Got 2")):
        expert_plan(two, {})
