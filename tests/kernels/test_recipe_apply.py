from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import torch
from torch import nn

from frontier import kernels
from frontier.kernels import (
    CompressionRecipe,
    MagnitudeSparsityConfig,
    NMSparsityConfig,
    QuantizedLinear,
    StructuredPruneConfig,
    WeightOnlyQuantConfig,
)


def _recipe() -> CompressionRecipe:
    return CompressionRecipe(
        {
            "": StructuredPruneConfig(1, ffn_ratio=0.5, round_to=8),
            "encoder.layer.*.attention.self.query": [
                NMSparsityConfig(),
                WeightOnlyQuantConfig(4, group_size=8),
            ],
            r"re:encoder\.layer\.\d+\.(intermediate|output)\.dense": WeightOnlyQuantConfig(
                8, symmetric=False
            ),
            "encoder.layer.1.attention.self.value": [MagnitudeSparsityConfig(0.25)],
        }
    )


def test_recipe_round_trips_through_json() -> None:
    recipe = _recipe()
    data = json.loads(json.dumps(recipe.to_dict()))
    assert data["version"] == 1 and list(data["entries"]) == list(recipe.entries)
    assert CompressionRecipe.from_dict(data) == recipe
    assert hash(CompressionRecipe.from_dict(data)) == hash(recipe)


def test_recipe_validation() -> None:
    with pytest.raises(TypeError, match=r"The configs for target 'fc' must be one or more CompressionConfig"):
        CompressionRecipe({"fc": ["int8"]})  # type: ignore[list-item]
    with pytest.raises(TypeError, match="targets must be str"):
        CompressionRecipe({1: WeightOnlyQuantConfig()})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match=r"Unknown field\(s\) \['steps'\] for CompressionRecipe"):
        CompressionRecipe.from_dict({"entries": {}, "steps": []})
    with pytest.raises(ValueError, match=r"Unknown compression config type 'GPTQConfig'"):
        CompressionRecipe.from_dict({"entries": {"fc": [{"type": "GPTQConfig"}]}})


def test_apply_recipe_in_one_call(
    make_bert: Callable[[], nn.Module], bert_inputs: dict[str, torch.Tensor]
) -> None:
    model = make_bert()
    with torch.no_grad():
        ref = model(**bert_inputs).last_hidden_state
    kernels.apply_(model, _recipe())
    layer = model.encoder.layer[1]  # type: ignore[index, union-attr]
    assert isinstance(layer.attention.self.query, QuantizedLinear) and layer.attention.self.query.bits == 4
    assert layer.attention.self.query.in_features == 32 and layer.attention.self.query.out_features == 24
    assert isinstance(layer.intermediate.dense, QuantizedLinear) and not layer.intermediate.dense.symmetric
    assert isinstance(layer.output.dense, QuantizedLinear) and layer.output.dense.in_features == 32
    assert isinstance(layer.attention.self.key, nn.Linear)
    assert kernels.mask_ratio(layer.attention.self.query) == pytest.approx(0.5)
    assert kernels.mask_ratio(layer.attention.self.value) == pytest.approx(0.25)
    with torch.no_grad():
        out = model(**bert_inputs).last_hidden_state
    assert out.shape == ref.shape and torch.isfinite(out).all()


def test_target_matching_nothing(make_bert: Callable[[], nn.Module]) -> None:
    recipe = CompressionRecipe({"encoder.layer.*.attention.self.qkv": WeightOnlyQuantConfig()})
    with pytest.raises(
        ValueError, match=r"The target 'encoder.layer.\*.attention.self.qkv' matched no module of BertModel"
    ):
        kernels.apply_(make_bert(), recipe)
    with pytest.raises(
        ValueError, match=r"matched 2 module\(s\), none of which WeightOnlyQuantConfig applies to"
    ):
        kernels.apply_(
            make_bert(), WeightOnlyQuantConfig(), targets="encoder.layer.*.attention.output.LayerNorm"
        )


def test_module_matched_twice_by_same_config_type(make_bert: Callable[[], nn.Module]) -> None:
    recipe = CompressionRecipe(
        {
            "encoder.**.query": WeightOnlyQuantConfig(8),
            "encoder.layer.0.attention.self.query": WeightOnlyQuantConfig(4),
        }
    )
    model = make_bert()
    with pytest.raises(
        ValueError,
        match=r"Module 'encoder.layer.0.attention.self.query' is matched by two WeightOnlyQuantConfig",
    ):
        kernels.apply_(model, recipe)
    assert isinstance(model.encoder.layer[0].attention.self.query, nn.Linear)  # type: ignore[index, union-attr]  # nothing applied


def test_apply_argument_errors() -> None:
    with pytest.raises(ValueError, match="takes 'targets' only with a single config"):
        kernels.apply_(nn.Linear(8, 8), CompressionRecipe({"": WeightOnlyQuantConfig()}), targets="")
    with pytest.raises(TypeError, match=r"expects a CompressionConfig or CompressionRecipe\. Got 'int8'"):
        kernels.apply_(nn.Linear(8, 8), "int8")  # type: ignore[arg-type]


def test_single_config_with_glob_targets_skips_non_linear(make_bert: Callable[[], nn.Module]) -> None:
    model = make_bert()
    kernels.apply_(model, WeightOnlyQuantConfig(8), targets="encoder.layer.0.**")
    quantized = sorted(n for n, m in model.named_modules() if isinstance(m, QuantizedLinear))
    assert len(quantized) == 6 and all(n.startswith("encoder.layer.0.") for n in quantized)
