from __future__ import annotations

import pytest
import torch
from torch import nn

from frontier import kernels
from frontier.kernels import (
    MagnitudeSparsityConfig,
    NMSparsityConfig,
    QuantizedLinear,
    WandaSparsityConfig,
    WeightOnlyQuantConfig,
    calibrate,
    mask_ratio,
    reapply_masks,
    sparsity,
)
from frontier.kernels._masks import get_mask, pack_mask, unpack_mask


def _mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(32, 48), nn.ReLU(), nn.Linear(48, 16)).eval()


@pytest.mark.parametrize("seed", range(5))
def test_mask_packing_round_trip(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(7, 13, generator=g) > 0.5
    bits = pack_mask(mask)
    assert bits.dtype == torch.uint8 and bits.numel() == (7 * 13 + 7) // 8
    assert torch.equal(unpack_mask(bits, mask.shape), mask)


@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.5, 0.9])
def test_magnitude_meets_ratio_and_drops_smallest(ratio: float) -> None:
    model = _mlp()
    before = model[0].weight.detach().clone()
    kernels.apply_(model, MagnitudeSparsityConfig(ratio))
    for layer in (model[0], model[2]):
        assert mask_ratio(layer) == pytest.approx(round(ratio * layer.weight.numel()) / layer.weight.numel())
        assert float((layer.weight == 0).float().mean()) == pytest.approx(mask_ratio(layer))
    mask = get_mask(model[0], before.shape)
    assert mask is not None
    if ratio > 0:
        assert before.abs()[~mask].max() <= before.abs()[mask].min()
    assert sparsity(model) == pytest.approx(ratio, abs=0.01)


def test_calibrate_returns_input_feature_norms() -> None:
    model = _mlp()
    batches = [torch.randn(5, 32), (torch.randn(3, 32),)]
    norms = calibrate(model, batches)
    assert set(norms) == {"0", "2"}
    x = torch.cat([batches[0], batches[1][0]])
    assert torch.allclose(norms["0"], x.norm(dim=0))
    with torch.no_grad():
        hidden = torch.relu(model[0](x))
    assert torch.allclose(norms["2"], hidden.norm(dim=0), atol=1e-5)
    assert list(calibrate(model, [torch.randn(2, 32)], modules="2")) == ["2"]


def test_calibrate_errors() -> None:
    with pytest.raises(ValueError, match="at least one batch"):
        calibrate(_mlp(), [])
    with pytest.raises(ValueError, match="found no Linear module"):
        calibrate(_mlp(), [torch.randn(1, 32)], modules="1")


@pytest.mark.parametrize("seed", range(3))
def test_wanda_per_row_ratio_and_activation_awareness(seed: int) -> None:
    model = _mlp(seed)
    x = torch.randn(64, 32)
    x[:, 0] *= 100.0  # one loud input feature: Wanda must keep its weights, magnitude would not care
    norms = calibrate(model, [x])
    kernels.apply_(model, WandaSparsityConfig(0.5), calibration=norms)
    w = model[0].weight
    assert bool(((w == 0).sum(dim=1) == 16).all())  # exactly half of each row
    assert bool((w[:, 0] != 0).all())


def test_wanda_needs_calibration() -> None:
    with pytest.raises(ValueError, match=r"WandaSparsityConfig needs calibration input norms for module '0'"):
        kernels.apply_(_mlp(), WandaSparsityConfig(0.5))
    with pytest.raises(ValueError, match=r"must have shape \(32,\)"):
        kernels.apply_(_mlp(), WandaSparsityConfig(0.5), targets="0", calibration={"0": torch.ones(5)})


@pytest.mark.parametrize(
    ("n", "m", "importance"), [(2, 4, "magnitude"), (1, 4, "activation"), (4, 8, "magnitude")]
)
def test_nm_pattern(n: int, m: int, importance: str) -> None:
    model = _mlp()
    norms = calibrate(model, [torch.randn(8, 32)])
    kernels.apply_(model, NMSparsityConfig(n, m, importance=importance), calibration=norms)  # type: ignore[arg-type]
    for layer in (model[0], model[2]):
        nonzero = (layer.weight != 0).reshape(layer.out_features, -1, m).sum(dim=-1)
        assert bool((nonzero <= n).all())
        assert mask_ratio(layer) == pytest.approx(1 - n / m)


def test_nm_group_must_divide_in_features() -> None:
    model = nn.Sequential(nn.Linear(30, 8))
    with pytest.raises(
        ValueError,
        match=r"'m' parameter of NMSparsityConfig must be a divisor of in_features of '0' \(30\). Got 4",
    ):
        kernels.apply_(model, NMSparsityConfig())


def test_masks_compose_and_reapply() -> None:
    model = _mlp()
    kernels.apply_(model, MagnitudeSparsityConfig(0.3), targets="0")
    first = get_mask(model[0], model[0].weight.shape)
    kernels.apply_(model, NMSparsityConfig(2, 4), targets="0")
    second = get_mask(model[0], model[0].weight.shape)
    assert first is not None and second is not None
    assert bool((second <= first).all())
    with torch.no_grad():
        model[0].weight.add_(1.0)  # a "fine-tuning step" that revives pruned weights
    assert reapply_masks(model) == 1
    assert bool((model[0].weight[~second] == 0).all())


def test_sparsity_survives_quantization_and_order_is_enforced() -> None:
    model = _mlp()
    recipe = kernels.CompressionRecipe(
        {"0": [WeightOnlyQuantConfig(4, group_size=8, symmetric=False), MagnitudeSparsityConfig(0.5)]}
    )
    kernels.apply_(model, recipe)  # listed quant-first; apply_ still prunes first
    layer = model[0]
    assert isinstance(layer, QuantizedLinear)
    assert sparsity(model, "0") == pytest.approx(0.5)
    assert mask_ratio(layer) == pytest.approx(0.5)
    with pytest.raises(
        ValueError, match=r"Module '0' is already a QuantizedLinear: sparsity must be applied before"
    ):
        kernels.apply_(model, MagnitudeSparsityConfig(0.5), targets="0")
