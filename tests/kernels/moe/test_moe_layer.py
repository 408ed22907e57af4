"""MoELayer against the naive masked reference: outputs, gradients, routing losses and parameter counts."""

from __future__ import annotations

import math
from typing import Literal

import pytest
import torch

import frontier.kernels.moe as moe
from frontier.kernels.moe import MoELayer, load_balancing_loss, moe_param_counts, moe_reference, router_z_loss

# (num_experts, top_k, shared_expert, activation, normalize_top_k)
Case = tuple[int, int, bool, Literal["swiglu", "gelu"], bool]
CASES: list[Case] = [
    (4, 1, False, "swiglu", True),
    (4, 2, True, "gelu", True),
    (8, 2, False, "swiglu", False),
    (8, 8, False, "gelu", True),
    (16, 4, True, "swiglu", False),
    (0, 2, False, "swiglu", True),
    (1, 1, True, "gelu", True),
]


def _ids(case: Case) -> str:
    e, k, shared, act, norm = case
    return f"E{e}-k{k}-{'shared' if shared else 'noshared'}-{act}-{'norm' if norm else 'raw'}"


def _layer(case: Case, dtype: torch.dtype, seed: int = 0) -> MoELayer:
    e, k, shared, act, norm = case
    torch.manual_seed(seed)
    return MoELayer(
        24, 40, e, top_k=k, shared_expert=shared, activation=act, normalize_top_k=norm, dtype=dtype
    )


def _grads(layer: MoELayer, x: torch.Tensor, fn: object) -> dict[str, torch.Tensor]:
    layer.zero_grad(set_to_none=True)
    xg = x.detach().clone().requires_grad_(True)
    out = fn(xg)  # type: ignore[operator]
    # A fixed random cotangent exercises every output coordinate, not just their sum.
    cot = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    (out * cot).sum().backward()
    grads = {name: p.grad.detach().clone() for name, p in layer.named_parameters() if p.grad is not None}
    assert xg.grad is not None
    grads["input"] = xg.grad.detach().clone()
    return grads


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_matches_reference_float64(case: Case) -> None:
    """Tight check in float64: outputs and all gradients within 1e-10 absolute of the naive loop."""
    layer = _layer(case, torch.float64)
    x = torch.randn(3, 37, 24, dtype=torch.float64)
    torch.testing.assert_close(layer(x), moe_reference(layer, x), rtol=0, atol=1e-10)
    fast = _grads(layer, x, layer)
    ref = _grads(layer, x, lambda t: moe_reference(layer, t))
    assert set(fast) == set(ref) == {n for n, _ in layer.named_parameters()} | {"input"}
    for name in fast:
        torch.testing.assert_close(fast[name], ref[name], rtol=0, atol=1e-10, msg=name)


@pytest.mark.parametrize("seed", range(5))
def test_matches_reference_float32_over_seeds(seed: int) -> None:
    """float32 over seeds: relative error of outputs and grads below 1e-5 (SQNR above 100 dB)."""
    layer = _layer((8, 2, True, "swiglu", True), torch.float32, seed=seed)
    x = torch.randn(256, 24)
    fast, ref = layer(x), moe_reference(layer, x)
    assert (fast - ref).norm() / ref.norm() < 1e-5
    g_fast = _grads(layer, x, layer)
    g_ref = _grads(layer, x, lambda t: moe_reference(layer, t))
    for name in g_fast:
        assert (g_fast[name] - g_ref[name]).norm() <= 1e-5 * g_ref[name].norm() + 1e-7, name


def test_unused_experts_get_zero_gradients() -> None:
    torch.manual_seed(0)
    layer = MoELayer(8, 16, 4, top_k=1, dtype=torch.float64)
    assert layer.router is not None
    with torch.no_grad():
        layer.router.weight.zero_()
        layer.router.weight[2, 0] = 100.0  # every token with x[0] > 0 goes to expert 2
    x = torch.randn(50, 8, dtype=torch.float64).abs()
    layer(x).sum().backward()
    assert layer.expert_counts is not None and layer.expert_counts.tolist() == [0, 0, 50, 0]
    assert layer.experts_up.grad is not None
    assert torch.count_nonzero(layer.experts_up.grad[[0, 1, 3]]) == 0
    assert torch.count_nonzero(layer.experts_up.grad[2]) > 0


def test_identical_experts_with_normalised_weights_equal_one_ffn() -> None:
    """Invariant: if all experts are one FFN and top-k weights sum to 1, routing cannot change the output."""
    torch.manual_seed(0)
    layer = MoELayer(16, 32, 6, top_k=3, dtype=torch.float64)
    dense = MoELayer(16, 32, 1, dtype=torch.float64)
    with torch.no_grad():
        for name in ("experts_gate", "experts_up", "experts_down"):
            getattr(layer, name).copy_(getattr(dense, name).expand_as(getattr(layer, name)))
    x = torch.randn(64, 16, dtype=torch.float64)
    torch.testing.assert_close(layer(x), dense(x), rtol=0, atol=1e-12)


def test_shape_and_dtype_preserved() -> None:
    layer = MoELayer(16, 8, 4, top_k=2, dtype=torch.bfloat16)
    x = torch.randn(2, 3, 5, 16, dtype=torch.bfloat16)
    y = layer(x)
    assert y.shape == x.shape and y.dtype == torch.bfloat16


def test_aux_loss_hand_case() -> None:
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]], dtype=torch.float64)
    top1 = torch.tensor([[0], [0], [1], [0]])
    # f = (3/4, 1/4), P = (0.65, 0.35): 2 * (0.75 * 0.65 + 0.25 * 0.35) = 1.15
    assert load_balancing_loss(probs, top1).item() == pytest.approx(1.15, abs=1e-12)
    # top-2 on two experts: f = (1/2, 1/2), so the loss is 2 * 0.5 * (0.65 + 0.35) = 1.0
    top2 = torch.tensor([[0, 1]] * 4)
    assert load_balancing_loss(probs, top2).item() == pytest.approx(1.0, abs=1e-12)


def test_layer_aux_loss_is_the_formula_on_its_own_routing() -> None:
    torch.manual_seed(3)
    layer = MoELayer(12, 16, 5, top_k=2, dtype=torch.float64)
    x = torch.randn(40, 12, dtype=torch.float64)
    layer(x)
    assert layer.router is not None and layer.aux_loss is not None and layer.expert_counts is not None
    probs = torch.softmax(x @ layer.router.weight.t(), dim=-1)
    top = probs.topk(2, dim=-1).indices
    f = torch.stack([(top == e).sum() for e in range(5)]).double() / (40 * 2)
    expected = 5 * (f * probs.mean(dim=0)).sum()
    assert layer.aux_loss.item() == pytest.approx(expected.item(), abs=1e-12)
    assert layer.expert_counts.sum().item() == 80


@pytest.mark.parametrize("top_k", [1, 2])
def test_uniform_router_aux_loss_is_one(top_k: int) -> None:
    layer = MoELayer(16, 8, 8, top_k=top_k)
    assert layer.router is not None
    with torch.no_grad():
        layer.router.weight.zero_()
    layer(torch.randn(100, 16))
    assert layer.aux_loss is not None
    assert layer.aux_loss.item() == pytest.approx(1.0, abs=1e-6)


def test_z_loss_and_router_loss() -> None:
    layer = MoELayer(16, 8, 4, top_k=1, aux_loss_coef=0.1, z_loss_coef=0.01)
    assert layer.router is not None
    with torch.no_grad():
        layer.router.weight.zero_()
    layer(torch.randn(10, 16))
    assert layer.z_loss is not None and layer.router_loss is not None
    assert layer.z_loss.item() == pytest.approx(math.log(4) ** 2, rel=1e-6)
    assert layer.router_loss.item() == pytest.approx(0.1 * 1.0 + 0.01 * math.log(4) ** 2, rel=1e-6)
    assert router_z_loss(torch.zeros(3, 4)).item() == pytest.approx(math.log(4) ** 2, rel=1e-6)


def test_z_loss_off_by_default_and_dense_losses_zero() -> None:
    layer = MoELayer(16, 8, 4)
    layer(torch.randn(10, 16))
    assert layer.z_loss is not None and layer.z_loss.item() == 0.0
    dense = MoELayer(16, 8, 0)
    assert dense.aux_loss is None  # nothing before the first forward
    dense(torch.randn(10, 16))
    assert dense.router is None
    assert dense.aux_loss is not None and dense.aux_loss.item() == 0.0
    assert dense.expert_counts is not None and dense.expert_counts.tolist() == [10]


def _cv(counts: torch.Tensor) -> float:
    c = counts.double()
    return (c.std(unbiased=False) / c.mean()).item()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_training_with_aux_loss_improves_balance(seed: int) -> None:
    """A router skewed towards low expert ids becomes balanced when trained on the aux loss alone.

    The skew comes from a constant input feature with router weights falling linearly from 3 to 0 across
    experts. Over seeds 0-99 the coefficient of variation of per-expert counts starts >= 1.2 and ends
    <= 0.12 after 30 Adam steps (at most 0.09x its start); the bounds below leave margin."""
    torch.manual_seed(seed)
    d, e = 16, 8
    layer = MoELayer(d, 8, e, top_k=2, aux_loss_coef=1.0)
    assert layer.router is not None
    data = torch.randn(512, d)
    data[:, 0] = 1.0
    with torch.no_grad():
        layer.router.weight[:, 0] = torch.linspace(3.0, 0.0, e)
    layer(data)
    assert layer.expert_counts is not None
    cv_before = _cv(layer.expert_counts)
    opt = torch.optim.Adam(layer.router.parameters(), lr=0.05)
    for _ in range(30):
        opt.zero_grad()
        layer(data)
        assert layer.router_loss is not None
        layer.router_loss.backward()
        opt.step()
    with torch.no_grad():
        layer(data)
    cv_after = _cv(layer.expert_counts)
    assert cv_before > 1.0
    assert cv_after < 0.3 * cv_before and cv_after < 0.25, (cv_before, cv_after)


def test_param_counts_by_hand() -> None:
    d, f, e, k, fs = 16, 32, 8, 2, 24
    layer = MoELayer(d, f, e, top_k=k, shared_expert=True, shared_ffn=fs)
    per_expert = 3 * d * f
    router = d * e
    shared = 3 * d * fs
    assert moe_param_counts(layer) == (router + shared + e * per_expert, router + shared + k * per_expert)
    gelu = MoELayer(d, f, e, top_k=1, activation="gelu")
    assert moe_param_counts(gelu) == (router + e * 2 * d * f, router + 2 * d * f)
    dense = MoELayer(d, f, 0)
    assert moe_param_counts(dense) == (3 * d * f, 3 * d * f)


def test_top_k_above_num_experts_rejected() -> None:
    match = r"'top_k' parameter of MoELayer must be <= num_experts.*Got top_k=3 with num_experts=2"
    with pytest.raises(ValueError, match=match):
        MoELayer(8, 8, 2, top_k=3)


def test_dense_ignores_top_k() -> None:
    assert MoELayer(8, 8, 1, top_k=4).dense


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"activation": "relu"}, ValueError, r"'activation' .* one of \['swiglu', 'gelu'\]. Got 'relu'"),
        ({"d_model": 8.0}, TypeError, r"'d_model' parameter of MoELayer must be an int. Got 8.0"),
        ({"num_experts": -1}, ValueError, r"'num_experts' parameter of MoELayer must be >= 0. Got -1"),
        ({"top_k": 0}, ValueError, r"'top_k' parameter of MoELayer must be >= 1. Got 0"),
        ({"shared_ffn": 8}, ValueError, r"'shared_ffn' parameter of MoELayer needs shared_expert=True"),
        ({"aux_loss_coef": -1.0}, ValueError, r"'aux_loss_coef' parameter .* >= 0. Got -1.0"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], exc: type[Exception], match: str) -> None:
    args: dict[str, object] = {"d_model": 8, "expert_ffn": 8, "num_experts": 4, **kwargs}
    with pytest.raises(exc, match=match):
        MoELayer(**args)  # type: ignore[arg-type]


def test_wrong_input_width_rejected() -> None:
    with pytest.raises(ValueError, match=r"last dimension d_model=8. Got shape \(2, 5\)"):
        MoELayer(8, 8, 4)(torch.randn(2, 5))


def test_public_api() -> None:
    assert sorted(moe.__all__) == [
        "ACTIVATIONS",
        "MoELayer",
        "MoELayout",
        "MoEParamCounts",
        "RouterStats",
        "collect_router_stats",
        "count_moe_params",
        "detect_moe_layout",
        "export_pruned_moe",
        "load_balancing_loss",
        "load_pruned_moe",
        "masked_router_reference",
        "measure_load_memory_mb",
        "moe_blocks",
        "moe_param_counts",
        "moe_reference",
        "prune_experts",
        "pruned_copy",
        "resident_bytes",
        "router_z_loss",
    ]
    with pytest.raises(TypeError, match="expects a MoELayer"):
        moe_param_counts(torch.nn.Linear(2, 2))  # type: ignore[arg-type]
