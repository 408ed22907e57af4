"""Joint lm-train spaces: bits/sparsity allocations gated by the architecture family's depth (depth_of)."""

from __future__ import annotations

import copy
from typing import Any

import optuna
import pytest

from frontier.spaces import SpecError, compression_recipe, spec_from_dict, suggest
from frontier.spaces._family_compress import layer_index

LM = {"layers": [1, 4], "hidden": [32], "head_dim": [8], "experts": [0, 4], "top_k": [1], "expert_ffn": [16]}


def joint(*, group_by: str = "layer", num_layers: int = 4, lm: dict[str, Any] | None = None) -> dict:
    def alloc(name: str, family: str, targets: list[str], **extra: Any) -> dict:
        options = {"num_layers": num_layers, "layout": "tiny_lm", "targets": targets, "depth_of": "lm"}
        return {"kind": "family", "name": name, "family": family, "options": {**options, **extra}}

    return {
        "name": "joint",
        "evaluator": {"kind": "lm-train", "options": {}},
        "space": [
            {"kind": "family", "name": "lm", "family": "moe", "options": lm or LM},
            alloc("q", "bits", ["blocks.*.*"], choices=[4, 8], group_by=group_by),
            alloc("s", "sparsity", ["blocks.*.proj"], group_by="none"),
        ],
        "objectives": [{"name": "perplexity", "direction": "minimize"}],
    }


@pytest.mark.parametrize(
    "sampler",
    [optuna.samplers.TPESampler(seed=0, n_startup_trials=10), optuna.samplers.RandomSampler(seed=0)],
)
def test_sampled_allocations_follow_the_sampled_depth(sampler: optuna.samplers.BaseSampler) -> None:
    spec = spec_from_dict(joint())
    params = spec.params
    groups = [p.name for p in params if p.name.startswith(("q.", "s."))]
    # module blocks.I is 0-based, the family's layer I + 1 is 1-based: each group's layer by its modules
    layer_of = {"q.layer_0": 0, "q.layer_1": 1, "q.layer_2": 2, "q.layer_3": 3}
    layer_of.update({f"s.blocks.{i}.proj": i for i in range(4)})
    assert sorted(groups) == sorted(layer_of)
    study = optuna.create_study(sampler=sampler)
    depths = set()
    for _ in range(40):
        trial = study.ask()
        candidate = suggest(trial, params)
        depth = candidate.params["lm.depth"]
        depths.add(depth)
        present = {g for g in groups if layer_of[g] < depth}
        assert {g for g in groups if g in candidate.params} == present, (depth, sorted(candidate.params))
        recipe = compression_recipe(spec, candidate.params)
        assert {layer_index(m) for m in recipe.entries} == set(range(depth))  # bits reach every layer
        study.tell(trial, float(depth) + sum(v for k, v in candidate.params.items() if k.startswith("q.")))
    assert depths == {1, 2, 3, 4}


def test_module_type_groups_gate_on_the_shallowest_layer_and_apply_to_present_layers() -> None:
    spec = spec_from_dict(joint(group_by="module_type"))
    bits = {p.name: p.when for p in spec.params if p.name.startswith("q.")}
    assert bits == {"q.qkv": None, "q.proj": None}  # layer 0 always exists
    lm = {"lm.depth": 2, "lm.hidden": 32}
    recipe = compression_recipe(spec, {**lm, "q.qkv": 4, "q.proj": 8})
    assert sorted(recipe.entries) == ["blocks.0.proj", "blocks.0.qkv", "blocks.1.proj", "blocks.1.qkv"]


def test_spec_allocating_beyond_the_maximum_depth_is_rejected() -> None:
    with pytest.raises(
        SpecError,
        match=r"family 'q' \(bits\) allocates layer 4 \('blocks\.4\.qkv'; module indices are 0-based\), "
        r"but family 'lm' \(moe\) has at most 4 layers .*Set num_layers <= 4",
    ):
        spec_from_dict(joint(num_layers=5))
    bad = joint()
    bad["space"][1]["options"]["depth_of"] = "arch"
    with pytest.raises(SpecError, match=r"'depth_of' must name an earlier 'nas' or 'moe' family.*Got 'arch'"):
        spec_from_dict(bad)
    late = copy.deepcopy(joint())
    late["space"] = [late["space"][1], late["space"][0]]  # the gating family comes after the allocation
    with pytest.raises(SpecError, match=r"'depth_of' must name an earlier 'nas' or 'moe' family.*Got 'lm'"):
        spec_from_dict(late)


def test_candidate_valuing_an_absent_layer_is_rejected() -> None:
    spec = spec_from_dict(joint())
    with pytest.raises(
        ValueError,
        match=r"family 'q' \(bits\): parameter 'q\.layer_2' allocates layer 2 .*family 'lm' has 2 layers "
        r"\('lm\.depth' = 2: layers 0\.\.1\)",
    ):
        compression_recipe(spec, {"lm.depth": 2, "q.layer_0": 4, "q.layer_1": 4, "q.layer_2": 8})
    with pytest.raises(ValueError, match=r"gated by 'lm\.depth' \(depth_of: lm\), but the candidate has no"):
        compression_recipe(spec, {"q.layer_0": 4})
