"""The bits and sparsity families: expansion, grouping, the per-module plan, and their errors."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from frontier.spaces import (
    MagnitudeSparsity,
    SpecError,
    StructuredPrune,
    WandaSparsity,
    WeightOnlyQuant,
    compression_recipe,
    spec_from_dict,
)
from frontier.spaces._families import expand_family
from frontier.spaces._family_compress import (
    allocations,
    compile_target,
    group_key,
)

BERT = {"num_layers": 2, "targets": ["encoder.layer.*.**"]}


def names(params: list[dict[str, Any]]) -> list[str]:
    return [p["name"] for p in params]


def study(space: list[dict[str, Any]]) -> Any:
    return spec_from_dict(
        {
            "name": "s",
            "evaluator": {"kind": "hf-embedding-fidelity"},
            "space": space,
            "objectives": [{"name": "fidelity", "direction": "maximize"}],
            "constraints": [{"metric": "avg_bits", "op": "<=", "value": 4.5}],
        }
    )


@pytest.mark.parametrize(
    ("group_by", "expected"),
    [
        ("layer", ["q.layer_0", "q.layer_1"]),
        ("block", ["q.layer_0.attention", "q.layer_0.ffn", "q.layer_1.attention", "q.layer_1.ffn"]),
        (
            "module_type",
            [
                "q.attention.self.query",
                "q.attention.self.key",
                "q.attention.self.value",
                "q.attention.output.dense",
                "q.intermediate.dense",
                "q.output.dense",
            ],
        ),
        ("all", ["q.all"]),
    ],
)
def test_group_by(group_by: str, expected: list[str]) -> None:
    params = expand_family("bits", "q", {**BERT, "group_by": group_by})
    assert names(params) == expected
    assert all(p["kind"] == "ordinal" and p["choices"] == [2, 3, 4, 8] for p in params)


def test_group_by_none_and_explicit_modules_and_llama_layout() -> None:
    params = expand_family(
        "bits", "q", {**BERT, "group_by": "none", "targets": ["re:.*query"], "choices": [8, 4]}
    )
    assert names(params) == [
        "q.encoder.layer.0.attention.self.query",
        "q.encoder.layer.1.attention.self.query",
    ]
    assert params[0]["choices"] == [4, 8]
    explicit = expand_family(
        "bits", "q", {"modules": ["fc1", "blocks.0.mlp", "blocks.1.mlp"], "targets": ["**"]}
    )
    assert names(explicit) == ["q.fc1", "q.layer_0", "q.layer_1"]
    llama = expand_family(
        "sparsity", "s", {"num_layers": 1, "layout": "llama", "targets": ["**.mlp.*"], "kind": "2:4"}
    )
    assert names(llama) == ["s.layer_0"] and llama[0]["choices"] == [0, 0.5]
    assert group_key("model.layers.3.self_attn.q_proj", "block") == "layer_3.attention"
    assert group_key("model.layers.3.mlp.up_proj", "block") == "layer_3.ffn"


def test_plan_combines_bits_and_sparsity() -> None:
    spec = study(
        [
            {"kind": "family", "name": "q", "family": "bits", "options": {**BERT, "group_size": 32}},
            {
                "kind": "family",
                "name": "s",
                "family": "sparsity",
                "options": {
                    **BERT,
                    "targets": ["re:.*intermediate.dense"],
                    "group_by": "all",
                    "kind": "wanda",
                },
            },
        ]
    )
    recipe = compression_recipe(spec, {"q.layer_0": 4, "q.layer_1": 8, "s.all": 0.5})
    assert len(recipe.entries) == 12
    assert recipe.entries["encoder.layer.0.attention.self.key"] == (WeightOnlyQuant(4, group_size=32),)
    # sparsity applies before bits, as kernels.apply_ runs them
    assert recipe.entries["encoder.layer.1.intermediate.dense"] == (
        WandaSparsity(0.5),
        WeightOnlyQuant(8, group_size=32),
    )
    # ratio 0 is dense: no sparsity entry; a missing parameter leaves its modules alone
    assert not compression_recipe(spec, {"s.all": 0}) and compression_recipe(spec, {}).entries == {}
    with pytest.raises(ValueError, match=r"parameter 'q.layer_0' must be one of \[2, 3, 4, 8\], but got 5"):
        compression_recipe(spec, {"q.layer_0": 5})


def test_targets_follow_kernels_select_rules() -> None:
    pytest.importorskip("torch")
    from frontier.kernels._select import name_matches

    cases = ["encoder.layer.*.attention.self.query", "encoder.**.dense", "**", "encoder.layer.?.output.dense"]
    mods = [
        "encoder.layer.0.attention.self.query",
        "encoder.layer.10.output.dense",
        "encoder.layer.1.output.dense",
        "encoder.dense",
        "pooler.dense",
    ]
    for pattern in [*cases, "re:.*(query|key)"]:
        assert [bool(compile_target(pattern).fullmatch(m)) for m in mods] == [
            name_matches(pattern, m) for m in mods
        ], pattern


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({**BERT, "colour": 1}, r"Unknown option\(s\) \['colour'\] for family 'bits'"),
        ({"num_layers": 2}, "Family 'bits' needs 'targets'"),
        ({"targets": ["**"]}, "needs a model description: give either 'modules'"),
        ({**BERT, "modules": ["a"]}, "not both and not neither"),
        (
            {**BERT, "num_layers": 0},
            r"The 'num_layers' option of family 'bits' must be an int in \[1, 1024\]",
        ),
        (
            {**BERT, "layout": "gpt"},
            r"The 'layout' option of family 'bits' must be one of "
            r"\['bert', 'llama', 'mixtral', 'qwen2_moe', 'qwen3_moe', 'tiny_lm'\]",
        ),
        ({"modules": ["a"], "layout": "bert", "targets": ["a"]}, "only applies with 'num_layers'"),
        ({"modules": ["a", "a"], "targets": ["a"]}, r"must not repeat a module \(repeated: \['a'\]\)"),
        ({**BERT, "targets": ["decoder.*"]}, "'decoder.\\*' matches none of"),
        ({**BERT, "targets": ["re:("]}, "must hold valid patterns"),
        (
            {**BERT, "targets": "encoder"},
            "'targets' option of family 'bits' must be a non-empty list of strings",
        ),
        (
            {**BERT, "choices": [1, 4]},
            r"'choices' option of family 'bits' must be a non-empty list of distinct",
        ),
        ({**BERT, "choices": [4, 4]}, "distinct ints"),
        (
            {**BERT, "group_by": "head"},
            r"'group_by' option of family 'bits' must be one of \['none', 'layer'",
        ),
        (
            {**BERT, "group_size": 12},
            "'group_size' option of family 'bits' must be null .* or a multiple of 8",
        ),
        ({**BERT, "symmetric": "yes"}, "'symmetric' option of family 'bits' must be true or false"),
        ({**BERT, "kind": "wanda"}, r"Unknown option\(s\) \['kind'\] for family 'bits'"),
    ],
)
def test_bits_errors(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        expand_family("bits", "q", options)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        (
            {**BERT, "kind": "random"},
            r"'kind' option of family 'sparsity' must be one of \['magnitude', 'wanda'",
        ),
        ({**BERT, "choices": [0, 0.99]}, r"must be a non-empty list of distinct numbers in \[0, 0.95\]"),
        ({**BERT, "kind": "2:4", "choices": [0, 0.25]}, "must hold 0 \\(dense\\) and/or 0.5"),
        ({**BERT, "group_size": 32}, r"Unknown option\(s\) \['group_size'\] for family 'sparsity'"),
        (
            {**BERT, "kind": "channels"},
            r"'targets' option of family 'sparsity' must select only FFN up-projections .* these are not: "
            r"\['encoder\.layer\.0\.attention\.self\.query'",
        ),
        (
            {**BERT, "targets": ["**.intermediate.dense"], "kind": "channels", "choices": [0, 0.95]},
            r"must be a non-empty list of distinct numbers in \[0, 0.9\]",
        ),
    ],
)
def test_sparsity_errors(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        expand_family("sparsity", "s", options)


def test_spec_level_errors_name_the_family() -> None:
    bits = {"kind": "family", "name": "q", "family": "bits", "options": BERT}
    with pytest.raises(SpecError, match=r"family 'q' \(bits\): The 'group_by' option"):
        study([{**bits, "options": {**BERT, "group_by": "x"}}])
    with pytest.raises(
        SpecError, match=r"module 'encoder\.layer\.0\.attention\.self\.query' is allocated by two 'bits'"
    ):
        study([bits, {**bits, "name": "q2"}])
    # one bits and one sparsity family may share modules
    assert len(study([bits, {**bits, "name": "s", "family": "sparsity"}]).params) == 4


def test_options_must_be_a_mapping() -> None:
    with pytest.raises(TypeError, match="options of family 'bits' must be a mapping"):
        expand_family("bits", "q", ["num_layers", 2])  # type: ignore[arg-type]


def test_channels_kind_groups_ffn_up_projections_and_covers_the_down_projections() -> None:
    opts = {**BERT, "targets": ["encoder.layer.*.intermediate.dense"], "kind": "channels"}
    params = expand_family("sparsity", "p", opts)
    assert names(params) == ["p.layer_0", "p.layer_1"] and params[0]["choices"] == [0, 0.125, 0.25]
    space = study(
        [
            {"kind": "family", "name": "q", "family": "bits", "options": {**BERT, "group_size": 32}},
            {"kind": "family", "name": "p", "family": "sparsity", "options": opts},
        ]
    )
    recipe = compression_recipe(space, {"q.layer_0": 4, "q.layer_1": 8, "p.layer_0": 0.25, "p.layer_1": 0})
    # channels target the layer; the kept width stays a whole number of the down projection's 32-groups
    prune = StructuredPrune(ffn_ratio=0.25, importance="activation", round_to=32)
    assert recipe.entries["encoder.layer.0"] == (prune,)
    assert recipe.entries["encoder.layer.0.intermediate.dense"] == (WeightOnlyQuant(4, group_size=32),)
    assert "encoder.layer.1" not in recipe.entries  # ratio 0: nothing removed
    alone = compression_recipe(space, {"p.layer_0": 0.25})  # no bits on the down projection: packing units
    assert alone.entries == {"encoder.layer.0": (dataclasses.replace(prune, round_to=8),)}
    pruning = allocations(space)[1]
    assert pruning.covers == [
        "encoder.layer.0.intermediate.dense",
        "encoder.layer.1.intermediate.dense",
        "encoder.layer.0.output.dense",
        "encoder.layer.1.output.dense",
    ]


def test_each_family_decodes_its_own_configs_and_the_spec_decodes_every_family() -> None:
    bits = {"kind": "family", "name": "q", "family": "bits", "options": {**BERT, "group_by": "all"}}
    prune = {"kind": "family", "name": "s", "family": "sparsity", "options": {**BERT, "group_by": "all"}}
    spec = study([bits, prune])
    decoded = spec.decode({"q.all": 4, "s.all": 0.5})
    assert set(decoded) == {"q", "s"}
    assert decoded["q"].entries["encoder.layer.0.output.dense"] == (WeightOnlyQuant(4),)
    assert decoded["s"].entries["encoder.layer.0.output.dense"] == (MagnitudeSparsity(0.5),)
    # the space-level recipe is both, sparsity before bits on each module
    both = compression_recipe(spec, {"q.all": 4, "s.all": 0.5}).entries["encoder.layer.0.output.dense"]
    assert both == (MagnitudeSparsity(0.5), WeightOnlyQuant(4))
