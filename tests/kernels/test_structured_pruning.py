from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from frontier import kernels
from frontier.kernels import StructuredPruneConfig, WeightOnlyQuantConfig, calibrate


def _shapes(model: nn.Module, i: int) -> dict[str, tuple[int, ...]]:
    layer = model.encoder.layer[i]  # type: ignore[index, union-attr]
    return {
        "query": tuple(layer.attention.self.query.weight.shape),
        "value": tuple(layer.attention.self.value.weight.shape),
        "attn_out": tuple(layer.attention.output.dense.weight.shape),
        "up": tuple(layer.intermediate.dense.weight.shape),
        "down": tuple(layer.output.dense.weight.shape),
    }


@pytest.mark.parametrize("importance", ["magnitude", "activation"])
def test_prune_heads_and_ffn_shrinks_and_runs(
    importance: str, make_bert: Callable[[], nn.Module], bert_inputs: dict[str, torch.Tensor]
) -> None:
    model = make_bert()
    calib = calibrate(model, [bert_inputs]) if importance == "activation" else None
    params_before = sum(p.numel() for p in model.parameters())
    kernels.apply_(model, StructuredPruneConfig(1, ffn_ratio=0.5, importance=importance), calibration=calib)  # type: ignore[arg-type]
    for i in range(2):
        # 4 heads of 8 dims -> 3 heads; FFN 64 -> 32
        assert _shapes(model, i) == {
            "query": (24, 32),
            "value": (24, 32),
            "attn_out": (32, 24),
            "up": (32, 32),
            "down": (32, 32),
        }
        attn = model.encoder.layer[i].attention.self  # type: ignore[index, union-attr]
        assert (attn.num_attention_heads, attn.all_head_size) == (3, 24)
    assert sum(p.numel() for p in model.parameters()) < params_before
    assert model.config.intermediate_size == 32  # type: ignore[union-attr]
    assert set(model.config.pruned_heads) == {0, 1}  # type: ignore[union-attr]
    with torch.no_grad():
        out = model(**bert_inputs).last_hidden_state
    assert out.shape == (2, 7, 32) and torch.isfinite(out).all()


def test_pruning_keeps_the_most_important_head(
    make_bert: Callable[[], nn.Module], bert_inputs: dict[str, torch.Tensor]
) -> None:
    model = make_bert()
    layer = model.encoder.layer[0]  # type: ignore[index, union-attr]
    with torch.no_grad():
        for lin in (layer.attention.self.query, layer.attention.self.key, layer.attention.self.value):
            lin.weight[16:24] *= 50.0  # head 2 dominates by magnitude
    kernels.apply_(model, StructuredPruneConfig(3), targets="encoder.layer.0")
    assert layer.attention.pruned_heads == {0, 1, 3}
    assert model.config.pruned_heads == {0: [0, 1, 3]}  # type: ignore[union-attr]
    assert _shapes(model, 1)["query"] == (32, 32)  # other layer untouched


def test_repeated_pruning_records_original_head_indices(make_bert: Callable[[], nn.Module]) -> None:
    model = make_bert()
    kernels.apply_(model, StructuredPruneConfig(1), targets="encoder.layer.1")
    first = set(model.encoder.layer[1].attention.pruned_heads)  # type: ignore[index, union-attr]
    kernels.apply_(model, StructuredPruneConfig(1), targets="encoder.layer.1")
    both = model.encoder.layer[1].attention.pruned_heads  # type: ignore[index, union-attr]
    assert len(both) == 2 and first <= both and both <= {0, 1, 2, 3}


def test_activation_importance_needs_calibration_and_prunes_calibration_too(
    make_bert: Callable[[], nn.Module], bert_inputs: dict[str, torch.Tensor]
) -> None:
    model = make_bert()
    with pytest.raises(
        ValueError,
        match=r"importance='activation'\) needs calibration input norms of shape \(32,\) for "
        r"'encoder.layer.0.attention.output.dense'",
    ):
        kernels.apply_(model, StructuredPruneConfig(1, importance="activation"))
    model = make_bert()
    calib = calibrate(model, [bert_inputs])
    recipe = kernels.CompressionRecipe(
        {
            "": StructuredPruneConfig(0, ffn_ratio=0.25, importance="activation"),
            "encoder.layer.*.output.dense": kernels.WandaSparsityConfig(0.5),
        }
    )
    kernels.apply_(model, recipe, calibration=calib)  # Wanda sees norms sliced to the pruned FFN width
    assert calib["encoder.layer.0.output.dense"].shape == (64,)  # the caller's dict is not mutated
    assert _shapes(model, 0)["down"] == (32, 48)


def test_round_to_and_too_many_heads(make_bert: Callable[[], nn.Module]) -> None:
    model = make_bert()
    kernels.apply_(model, StructuredPruneConfig(ffn_ratio=0.3, round_to=16))
    assert _shapes(model, 0)["up"] == (48, 32)  # 64 * 0.7 = 44.8 -> 48
    with pytest.raises(
        ValueError,
        match=r"'heads' parameter of StructuredPruneConfig must be less than the 4 attention heads left "
        r"in 'encoder.layer.0'",
    ):
        kernels.apply_(make_bert(), StructuredPruneConfig(4))


def test_prune_after_quantization_is_refused(make_bert: Callable[[], nn.Module]) -> None:
    model = make_bert()
    kernels.apply_(model, WeightOnlyQuantConfig(8))
    with pytest.raises(ValueError, match="structured pruning must come before quantization"):
        kernels.apply_(model, StructuredPruneConfig(1))


def test_targets_without_encoder_layers(make_bert: Callable[[], nn.Module]) -> None:
    with pytest.raises(
        ValueError,
        match=r"The target 'pooler' matched 1 module\(s\), none of which StructuredPruneConfig applies to",
    ):
        kernels.apply_(make_bert(), StructuredPruneConfig(1), targets="pooler")
