from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from frontier import kernels
from frontier.kernels import (
    MagnitudeSparsityConfig,
    ModuleSize,
    WeightOnlyQuantConfig,
    avg_bits,
    model_size_bytes,
    size_breakdown,
    sparsity,
)


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 24), nn.LayerNorm(24), nn.Linear(24, 8))


def test_float_model_bytes() -> None:
    model = _model()
    assert model_size_bytes(model) == (64 * 24 + 24) * 4 + 2 * 24 * 4 + (24 * 8 + 8) * 4
    assert size_breakdown(model)["0"] == ModuleSize(weight_bytes=64 * 24 * 4, other_bytes=24 * 4)
    assert avg_bits(model) == 32.0


def test_quantized_masked_layer_bytes_by_hand() -> None:
    model = _model()
    recipe = kernels.CompressionRecipe(
        {"0": [MagnitudeSparsityConfig(0.5), WeightOnlyQuantConfig(4, group_size=32, symmetric=False)]}
    )
    kernels.apply_(model, recipe)
    expected = ModuleSize(
        weight_bytes=24 * 64 // 2,  # int4: two codes per byte
        scale_bytes=24 * 2 * 4,  # 2 groups of 32 per row, float32
        zero_point_bytes=24 * 2,  # uint8 per scale
        mask_bytes=24 * 64 // 8,  # one bit per weight
        other_bytes=24 * 4,  # float32 bias
    )
    breakdown = size_breakdown(model)
    assert breakdown["0"] == expected and expected.total_bytes == 1296
    assert breakdown["1"] == ModuleSize(weight_bytes=24 * 4, other_bytes=24 * 4)
    assert model_size_bytes(model) == 1296 + 2 * 24 * 4 + (24 * 8 + 8) * 4
    assert model_size_bytes(model) == sum(t.numel() * t.element_size() for t in model.state_dict().values())
    assert avg_bits(model) == pytest.approx((4 * 64 * 24 + 32 * 24 * 8) / (64 * 24 + 24 * 8))
    assert avg_bits(model, "0") == 4.0
    assert sparsity(model, "0") == pytest.approx(0.5)
    assert sparsity(model) == pytest.approx(0.5 * 64 * 24 / (64 * 24 + 24 * 8), abs=1e-3)


@pytest.mark.parametrize("bits", range(2, 9))
def test_every_code_takes_exactly_bits(bits: int) -> None:
    model = nn.Sequential(nn.Linear(64, 16, bias=False))
    kernels.apply_(model, WeightOnlyQuantConfig(bits))
    assert size_breakdown(model)["0"] == ModuleSize(weight_bytes=64 * 16 * bits // 8, scale_bytes=16 * 4)


def test_fewer_bits_store_fewer_bytes(make_bert) -> None:
    sizes = [model_size_bytes(kernels.apply_(make_bert(), WeightOnlyQuantConfig(b))) for b in range(2, 9)]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
    # one bit more costs 1/8 byte per Linear weight (17408 in the tiny BERT: 2 x 8192 in layers, 1024 pooler)
    assert {b - a for a, b in itertools.pairwise(sizes)} == {17408 // 8}


def test_tied_weights_counted_once() -> None:
    emb = nn.Embedding(10, 4)
    head = nn.Linear(4, 10, bias=False)
    head.weight = emb.weight
    model = nn.ModuleDict({"emb": emb, "head": head})
    assert model_size_bytes(model) == 10 * 4 * 4
    assert list(size_breakdown(model)) == ["emb"]


def test_avg_bits_and_sparsity_need_linear_targets() -> None:
    with pytest.raises(ValueError, match="avg_bits found no Linear module among targets '1'"):
        avg_bits(_model(), "1")
    with pytest.raises(ValueError, match="sparsity found no Linear module"):
        sparsity(nn.Sequential(nn.ReLU()))


def test_masked_fraction_counts_masks_not_weights_that_quantized_to_zero(make_bert):
    from frontier.kernels import apply_, masked_fraction

    model = apply_(make_bert(), WeightOnlyQuantConfig(2), targets="encoder.layer.*.attention.self.query")
    query = "encoder.layer.*.attention.self.query"
    assert masked_fraction(model, query) == 0.0
    assert sparsity(model, query) > 0.0  # 2-bit codes put some weights exactly at zero
    apply_(model, MagnitudeSparsityConfig(0.5), targets="encoder.layer.*.output.dense")
    # per layer: output.dense 64x32 half masked, intermediate.dense 32x64 unmasked
    both = ["encoder.layer.*.output.dense", "encoder.layer.*.intermediate.dense"]
    assert masked_fraction(model, both) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="found no Linear module"):
        masked_fraction(model, "encoder.layer.0.attention.self.dropout")
