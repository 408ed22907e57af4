from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

import kernels
from kernels import (
    CompressionRecipe,
    NMSparsityConfig,
    StructuredPruneConfig,
    WandaSparsityConfig,
    WeightOnlyQuantConfig,
)


def test_save_and_reload_reproduces_outputs(
    tmp_path: Path, make_bert: Callable[[], nn.Module], bert_inputs: dict[str, torch.Tensor]
) -> None:
    model = make_bert()
    calib = kernels.calibrate(model, [bert_inputs])
    recipe = CompressionRecipe(
        {
            "": StructuredPruneConfig(1, ffn_ratio=0.25, importance="activation"),
            "encoder.layer.*.attention.self.*": [
                WandaSparsityConfig(0.5),
                WeightOnlyQuantConfig(4, group_size=16),
            ],
            "encoder.layer.*.intermediate.dense": [
                NMSparsityConfig(),
                WeightOnlyQuantConfig(2, group_size=8, symmetric=False),
            ],
            "encoder.layer.*.output.dense": WeightOnlyQuantConfig(8),
            "pooler.dense": WandaSparsityConfig(0.3),
        }
    )
    kernels.apply_(model, recipe, calibration=calib)
    with torch.no_grad():
        expected = model(**bert_inputs)
    kernels.save_compressed(model, recipe, tmp_path / "artifact")
    assert json.loads((tmp_path / "artifact" / "recipe.json").read_text())["recipe"] == recipe.to_dict()
    reloaded = kernels.load_compressed(make_bert, tmp_path / "artifact")
    with torch.no_grad():
        got = reloaded(**bert_inputs)
    assert torch.equal(got.last_hidden_state, expected.last_hidden_state)
    assert torch.equal(got.pooler_output, expected.pooler_output)
    assert kernels.model_size_bytes(reloaded) == kernels.model_size_bytes(model)
    assert reloaded.config.intermediate_size == model.config.intermediate_size  # type: ignore[union-attr]
    assert reloaded.config.pruned_heads == model.config.pruned_heads  # type: ignore[union-attr]
    assert kernels.load_recipe(tmp_path / "artifact") == recipe


def test_single_config_and_bad_manifest(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 8))
    kernels.apply_(model, WeightOnlyQuantConfig(4))
    kernels.save_compressed(model, WeightOnlyQuantConfig(4), tmp_path)
    assert kernels.load_recipe(tmp_path) == WeightOnlyQuantConfig(4)
    reloaded = kernels.load_compressed(lambda: nn.Sequential(nn.Linear(16, 8)), tmp_path)
    x = torch.randn(3, 16)
    with torch.no_grad():
        assert torch.equal(reloaded(x), model(x))
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "other", "version": 1, "modules": {}}))
    with pytest.raises(
        ValueError, match=r"must be a 'frontier-compressed' manifest of version 1. Got format='other'"
    ):
        kernels.load_compressed(lambda: nn.Sequential(nn.Linear(16, 8)), tmp_path)
    with pytest.raises(TypeError, match="expects a CompressionRecipe or CompressionConfig"):
        kernels.save_compressed(model, {"bits": 4}, tmp_path)  # type: ignore[arg-type]
