from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from frontier import kernels
from frontier.kernels import (
    CompressionRecipe,
    NMSparsityConfig,
    StructuredPruneConfig,
    WandaSparsityConfig,
    WeightOnlyQuantConfig,
)
from frontier.kernels._quant import unpack_codes


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
        ValueError, match=r"must be a 'frontier-compressed' manifest of version 1 or 2. Got format='other'"
    ):
        kernels.load_compressed(lambda: nn.Sequential(nn.Linear(16, 8)), tmp_path)
    with pytest.raises(TypeError, match="expects a CompressionRecipe or CompressionConfig"):
        kernels.save_compressed(model, {"bits": 4}, tmp_path)  # type: ignore[arg-type]


def _write_version_1(path: Path) -> None:
    """Rewrite a directory :func:`kernels.save_compressed` wrote in the version-1 layout: 3-bit codes two
    per byte (lower nibble first), 5/6/7-bit codes one per byte."""
    manifest = json.loads((path / "manifest.json").read_text())
    state = torch.load(path / "state_dict.pt", weights_only=True)
    for name, spec in manifest["modules"].items():
        bits = spec.get("bits")
        if spec.get("kind") == "QuantizedLinear" and bits not in (2, 4, 8):
            key = f"{name}.weight_packed"
            codes = unpack_codes(state[key], bits, spec["in_features"])
            state[key] = codes[:, 0::2] | codes[:, 1::2] << 4 if bits == 3 else codes
    manifest["version"] = 1
    (path / "manifest.json").write_text(json.dumps(manifest))
    torch.save(state, path / "state_dict.pt")


def test_version_1_directories_are_repacked_on_load(
    tmp_path: Path, make_bert: Callable[[], nn.Module], bert_inputs: dict[str, torch.Tensor]
) -> None:
    model = make_bert()
    recipe = CompressionRecipe(
        {
            "encoder.layer.*.attention.self.*": WeightOnlyQuantConfig(3, group_size=16),
            "encoder.layer.*.intermediate.dense": WeightOnlyQuantConfig(6, symmetric=False),
            "encoder.layer.*.output.dense": WeightOnlyQuantConfig(5, group_size=32),
            "encoder.layer.*.attention.output.dense": WeightOnlyQuantConfig(7),
            "pooler.dense": WeightOnlyQuantConfig(4),
        }
    )
    kernels.apply_(model, recipe)
    with torch.no_grad():
        expected = model(**bert_inputs).last_hidden_state
    kernels.save_compressed(model, recipe, tmp_path)
    assert json.loads((tmp_path / "manifest.json").read_text())["version"] == 2
    _write_version_1(tmp_path)
    old = torch.load(tmp_path / "state_dict.pt", weights_only=True)
    assert old["encoder.layer.0.attention.self.query.weight_packed"].shape == (32, 16)  # 4-bit nibbles
    assert old["encoder.layer.0.intermediate.dense.weight_packed"].shape == (64, 32)  # bytes
    reloaded = kernels.load_compressed(make_bert, tmp_path)
    with torch.no_grad():
        assert torch.equal(reloaded(**bert_inputs).last_hidden_state, expected)
    assert kernels.model_size_bytes(reloaded) == kernels.model_size_bytes(model)


def test_version_1_layer_that_cannot_be_packed_densely(tmp_path: Path) -> None:
    manifest = {
        "format": "frontier-compressed",
        "version": 1,
        "modules": {
            "0": {
                "kind": "QuantizedLinear",
                "in_features": 12,
                "out_features": 4,
                "bits": 3,
                "group_size": None,
                "symmetric": True,
                "bias": True,
                "masked": False,
            }
        },
    }
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(
        ValueError,
        match=r"manifest version 1\), and its 3-bit layer '0' has in_features=12, which dense 3-bit packing "
        r"cannot hold \(it needs a multiple of 8\). Re-run `frontier apply`",
    ):
        kernels.load_compressed(lambda: nn.Sequential(nn.Linear(12, 4)), tmp_path)
