"""The ``nas`` and ``moe`` space families: legality over many random draws, conditions, option errors."""

from __future__ import annotations

import re
from typing import Any

import optuna
import pytest

from frontier.spaces import SpecError, available_families, spec_from_dict, suggest

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


def _spec(family: str, options: dict[str, Any], prefix: str = "lm") -> Any:
    return spec_from_dict(
        {
            "name": "t",
            "evaluator": {"kind": "lm-train"},
            "objectives": [{"name": "perplexity", "direction": "minimize"}],
            "space": [{"kind": "family", "name": prefix, "family": family, "options": options}],
        }
    )


def _draws(spec: Any, n: int, seed: int) -> list[dict[str, Any]]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append(dict(suggest(trial, spec.params).params))
        study.tell(trial, 0.0)
    return out


def test_both_families_are_registered():
    assert {"nas", "moe"} <= set(available_families())


@pytest.mark.parametrize("per_layer", [True, False])
@pytest.mark.parametrize("heads_key", ["head_dim", "heads"])
def test_nas_draws_are_legal(per_layer, heads_key):
    heads = [16, 32] if heads_key == "head_dim" else [1, 2, 4]
    opts = {"layers": [1, 4], "hidden": [64, 128, 192], heads_key: heads, "ffn_ratio": [1, 2, 4]}
    spec = _spec("nas", {**opts, "per_layer": per_layer})
    assert all(NAME.match(p.name) for p in spec.params)
    seen_depths = set()
    for c in _draws(spec, 200, seed=0):
        depth, hidden = c["lm.depth"], c["lm.hidden"]
        seen_depths.add(depth)
        assert 1 <= depth <= 4 and hidden in (64, 128, 192)
        if per_layer:
            for i in range(1, 5):
                present = {k for k in (f"lm.{heads_key}_{i}", f"lm.ffn_ratio_{i}") if k in c}
                assert present == ({f"lm.{heads_key}_{i}", f"lm.ffn_ratio_{i}"} if i <= depth else set()), (
                    i,
                    c,
                )
            values = [c[f"lm.{heads_key}_{i}"] for i in range(1, depth + 1)]
        else:
            values = [c[f"lm.{heads_key}"]]
        assert all(hidden % v == 0 for v in values), c
    assert seen_depths == {1, 2, 3, 4}


def test_moe_draws_are_legal_over_many_draws():
    opts = {
        "layers": [2, 4],
        "hidden": [64, 128],
        "head_dim": [16, 32],
        "experts": [0, 2, 4, 8],
        "top_k": [1, 2],
        "expert_ffn": [32, 64],
    }
    spec = _spec("moe", opts)
    kinds = {"dense": 0, "moe": 0, "shared": 0}
    for c in _draws(spec, 300, seed=1):
        depth = c["lm.depth"]
        assert 2 <= depth <= 4
        for i in range(1, 5):
            layer = {k.split(".")[1].rsplit("_", 1)[0] for k in c if k.endswith(f"_{i}")}
            if i > depth:
                assert layer == set(), (i, c)
                continue
            e = c[f"lm.experts_{i}"]
            assert c["lm.hidden"] % c[f"lm.head_dim_{i}"] == 0
            if e == 0:
                kinds["dense"] += 1
                assert layer == {"head_dim", "experts", "ffn_ratio"}, c
            else:
                kinds["moe"] += 1
                kinds["shared"] += c[f"lm.shared_expert_{i}"]
                assert layer == {"head_dim", "experts", "top_k", "expert_ffn", "shared_expert"}, c
                assert 1 <= c[f"lm.top_k_{i}"] <= e
    assert min(kinds.values()) > 20  # every kind of layer is reachable


def test_moe_without_dense_choice_has_no_ffn_ratio_and_global_variant():
    spec = _spec("moe", {"experts": [4, 8], "top_k": [1, 4], "per_layer": False, "layers": [1, 2]})
    names = [p.name for p in spec.params]
    assert names == [
        "lm.depth",
        "lm.hidden",
        "lm.head_dim",
        "lm.experts",
        "lm.top_k",
        "lm.expert_ffn",
        "lm.shared_expert",
    ]
    for c in _draws(spec, 50, seed=2):
        assert c["lm.top_k"] <= c["lm.experts"]


def test_layers_up_to_the_minimum_depth_are_unconditional():
    spec = _spec("nas", {"layers": [2, 3]})
    when = {p.name: p.when for p in spec.params}
    assert when["lm.head_dim_1"] is None and when["lm.ffn_ratio_2"] is None
    cond = when["lm.ffn_ratio_3"]
    assert cond is not None and cond.param == "lm.depth" and cond.ge == 3


@pytest.mark.parametrize(
    ("family", "options", "match"),
    [
        ("nas", {"colour": 1}, r"Unknown option\(s\) \['colour'\] for family 'nas'. Allowed options: \["),
        ("nas", {"layers": [3, 1]}, r"'layers' option of family 'nas' must be \[low, high\] .* Got \[3, 1\]"),
        ("nas", {"layers": [0, 2]}, r"1 <= low <= high <= 64. Got \[0, 2\]"),
        ("nas", {"hidden": []}, r"'hidden' option .* must be a non-empty list of ints. Got \[\]"),
        ("nas", {"hidden": [64, 64]}, r"'hidden' option .* must not repeat a choice. Got \[64, 64\]"),
        (
            "nas",
            {"hidden": [64, 96], "head_dim": [16, 64]},
            r"'head_dim' option .* must divide every 'hidden'",
        ),
        ("nas", {"hidden": [64], "heads": [3]}, r"'heads' option .* 3 does not divide \[64\]. Got \[3\]"),
        ("nas", {"head_dim": [16], "heads": [4]}, r"'head_dim' and 'heads' options .* are alternatives"),
        ("nas", {"ffn_ratio": [0, 2]}, r"'ffn_ratio' option .* positive numbers. Got \[0, 2\]"),
        ("nas", {"per_layer": "yes"}, r"'per_layer' option .* must be true or false. Got 'yes'"),
        ("moe", {"experts": [0, 1, 4]}, r"'experts' option .* 1 expert is a dense layer. Got \[0, 1, 4\]"),
        ("moe", {"experts": [0]}, r"'experts' option .* at least one count >= 2 .* Got \[0\]"),
        (
            "moe",
            {"experts": [0, 4, 8], "top_k": [1, 8]},
            r"'top_k' option .* <= the smallest non-zero expert count 4",
        ),
        ("moe", {"expert_ffn": [0]}, r"'expert_ffn' option .* ints >= 1. Got \[0\]"),
        ("moe", {"shared_expert": [1]}, r"'shared_expert' option .* booleans. Got \[1\]"),
    ],
)
def test_option_errors_name_option_rule_and_value(family, options, match):
    with pytest.raises(SpecError, match=r"space: family 'lm' \(" + family + r"\): .*" + match):
        _spec(family, options)


def test_options_must_be_a_mapping():
    from frontier.spaces._families import expand_family

    with pytest.raises(TypeError, match="options of family 'nas' must be a mapping"):
        expand_family("nas", "lm", [1, 2])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("family", "options"),
    [
        ("nas", {"layers": [1, 4], "hidden": [32, 64], "heads": [2, 4]}),
        ("nas", {"layers": [2, 3], "per_layer": False}),
        ("moe", {"layers": [1, 4], "experts": [0, 2, 4], "top_k": [1, 2]}),
        ("moe", {"layers": [1, 3], "experts": [4, 8], "per_layer": False}),
    ],
)
def test_every_draw_decodes_into_the_architecture_it_names(family, options):
    spec = _spec(family, options)
    for params in _draws(spec, 40, seed=7):
        arch = spec.decode(params)["lm"]
        assert len(arch.layers) == params["lm.depth"] and arch.hidden == params["lm.hidden"]
        for i, layer in enumerate(arch.layers, 1):
            slot = f"_{i}" if options.get("per_layer", True) else ""
            assert arch.hidden % layer.heads == 0
            if f"lm.heads{slot}" in params:
                assert layer.heads == params[f"lm.heads{slot}"]
            else:
                assert layer.heads * params[f"lm.head_dim{slot}"] == arch.hidden
            experts = params.get(f"lm.experts{slot}", 0)
            assert layer.experts == experts and layer.top_k <= max(experts, 1)
            if experts:
                assert layer.ffn == params[f"lm.expert_ffn{slot}"]
                assert layer.shared_expert == params[f"lm.shared_expert{slot}"]
            else:
                assert layer.ffn == round(params[f"lm.ffn_ratio{slot}"] * arch.hidden)
