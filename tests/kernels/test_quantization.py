from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from frontier import kernels
from frontier.kernels import QuantizedLinear, WeightOnlyQuantConfig
from frontier.kernels._quant import dequantize_codes, pack_codes, quantize_weight, unpack_codes

BITS = range(2, 9)


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("group_size", [None, 32])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("seed", [0, 7])
def test_quantize_dequantize_error_bounds(
    bits: int, group_size: int | None, symmetric: bool, seed: int, sqnr: Callable[..., float]
) -> None:
    """Gaussian weights: SQNR >= 6.02*bits - 11 dB (measured margin >= 0.4 dB at 2 bits, >= 4 dB from 3),
    and every element within the rounding bound: scale/2 symmetric, one scale asymmetric (zero point
    rounding)."""
    torch.manual_seed(seed)
    w = torch.randn(64, 256)
    codes, scales, zeros = quantize_weight(w, bits=bits, group_size=group_size, symmetric=symmetric)
    assert codes.dtype == torch.uint8 and int(codes.max()) <= 2**bits - 1
    assert scales.shape == (64, 1 if group_size is None else 256 // group_size)
    assert (zeros is None) == symmetric
    deq = dequantize_codes(codes, scales, zeros, bits=bits)
    assert sqnr(w, deq) >= 6.02 * bits - 11
    per_elem_scale = scales.repeat_interleave(256 // scales.shape[1], dim=1)
    bound = per_elem_scale * (0.5 if symmetric else 1.0) * (1 + 1e-5)
    assert bool(((w - deq).abs() <= bound).all())


def test_finer_granularity_and_asymmetry_help(sqnr: Callable[..., float]) -> None:
    torch.manual_seed(0)
    w = torch.randn(64, 256) + 0.5  # off-centre: asymmetric grids should win

    def q(**kw: object) -> float:
        return sqnr(w, dequantize_codes(*quantize_weight(w, bits=4, **kw), bits=4))  # type: ignore[arg-type]

    assert q(group_size=32, symmetric=True) > q(group_size=None, symmetric=True)
    assert q(group_size=None, symmetric=False) > q(group_size=None, symmetric=True)


@pytest.mark.parametrize("symmetric", [True, False])
def test_zero_is_exact_and_constant_rows_are_safe(symmetric: bool) -> None:
    w = torch.randn(8, 64)
    w[:, ::3] = 0.0
    w[0] = 0.0  # an all-zero row must not divide by zero
    codes, scales, zeros = quantize_weight(w, bits=4, group_size=None, symmetric=symmetric)
    deq = dequantize_codes(codes, scales, zeros, bits=4)
    assert bool((deq[w == 0] == 0).all())
    assert torch.isfinite(deq).all()


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("shape", [(5, 48), (1, 8), (3, 384), (7, 1536)])
@pytest.mark.parametrize("seed", [0, 1])
def test_packing_round_trip_and_density(bits: int, shape: tuple[int, int], seed: int) -> None:
    g = torch.Generator().manual_seed(seed * 100 + bits)
    codes = torch.randint(0, 2**bits, shape, generator=g, dtype=torch.int32).to(torch.uint8)
    packed = pack_codes(codes, bits)
    assert packed.dtype == torch.uint8 and packed.shape == (shape[0], shape[1] * bits // 8)  # exactly `bits`
    assert torch.equal(unpack_codes(packed, bits, shape[1]), codes)


def _bit_stream(packed_row: list[int]) -> list[int]:
    """The row's bits in stream order: bit k is bit k % 8 of byte k // 8."""
    return [(byte >> b) & 1 for byte in packed_row for b in range(8)]


@pytest.mark.parametrize("bits", BITS)
def test_packing_layout_code_i_at_bit_i_times_bits(bits: int) -> None:
    g = torch.Generator().manual_seed(bits)
    codes = torch.randint(0, 2**bits, (2, 16), generator=g, dtype=torch.int32).to(torch.uint8)
    for codes_row, packed_row in zip(codes.tolist(), pack_codes(codes, bits).tolist(), strict=True):
        stream = _bit_stream(packed_row)
        assert len(stream) == 16 * bits
        got = [sum(stream[i * bits + b] << b for b in range(bits)) for i in range(16)]
        assert got == codes_row


def test_packing_layout_lowest_bits_first() -> None:
    codes = torch.tensor([[1, 2, 3, 0, 15, 4]], dtype=torch.uint8)
    assert pack_codes(codes, 4).tolist() == [[1 | 2 << 4, 3, 15 | 4 << 4]]
    codes2 = torch.tensor([[1, 2, 3, 0]], dtype=torch.uint8)
    assert pack_codes(codes2, 2).tolist() == [[1 | 2 << 2 | 3 << 4]]
    # 3 bits: codes 0..7 fill 24 bits; code 2 straddles bytes 0 and 1, code 5 bytes 1 and 2
    codes3 = torch.tensor([[1, 2, 7, 0, 5, 6, 3, 4]], dtype=torch.uint8)
    word = sum(c << (3 * i) for i, c in enumerate(codes3[0].tolist()))
    assert pack_codes(codes3, 3).tolist() == [[word & 255, (word >> 8) & 255, word >> 16]]


@pytest.mark.parametrize("bits", [3, 5, 6, 7])
def test_pack_codes_rejects_partial_units(bits: int) -> None:
    with pytest.raises(
        ValueError, match=rf"Cannot pack 12 columns of {bits}-bit codes: 12 is not a multiple of 8"
    ):
        pack_codes(torch.zeros(2, 12, dtype=torch.uint8), bits)


@pytest.mark.parametrize(
    ("bits", "group_size", "symmetric"),
    [(8, None, True), (4, 32, False), (3, 16, True), (2, 8, False), (5, None, False), (7, 8, True)],
)
def test_quantized_linear_from_linear_state_dict_round_trip(
    bits: int, group_size: int | None, symmetric: bool
) -> None:
    torch.manual_seed(0)
    linear = nn.Linear(64, 24)
    config = WeightOnlyQuantConfig(bits, group_size=group_size, symmetric=symmetric)
    layer = QuantizedLinear.from_linear(linear, config)
    assert layer.config == config
    expected = dequantize_codes(
        *quantize_weight(linear.weight, bits=bits, group_size=group_size, symmetric=symmetric), bits=bits
    )
    assert torch.equal(layer.dequantize(), expected)
    state = layer.state_dict()
    assert set(state) == {"weight_packed", "scales", "bias"} | (set() if symmetric else {"zero_points"})
    assert state["weight_packed"].dtype == torch.uint8
    assert state["weight_packed"].shape == (24, 64 * bits // 8)
    fresh = QuantizedLinear(64, 24, bits=bits, group_size=group_size, symmetric=symmetric)
    fresh.load_state_dict(state)
    x = torch.randn(3, 64)
    with torch.no_grad():
        assert torch.equal(fresh(x), layer(x))
        ref = x @ expected.T + linear.bias
        assert torch.allclose(layer(x), ref, rtol=1e-4, atol=1e-4)


def test_quantized_linear_keeps_batch_dims_and_has_no_weight_param() -> None:
    layer = QuantizedLinear.from_linear(nn.Linear(16, 8, bias=False), WeightOnlyQuantConfig(8))
    with torch.no_grad():
        assert layer(torch.randn(2, 3, 16)).shape == (2, 3, 8)
    assert [n for n, _ in layer.named_parameters()] == []
    with pytest.raises(ValueError, match=r"last dimension in_features=16. Got shape \(2, 15\)"):
        layer(torch.randn(2, 15))


def test_group_size_must_divide_in_features() -> None:
    with pytest.raises(
        ValueError,
        match=r"The 'group_size' parameter of WeightOnlyQuantConfig must be a divisor of in_features of "
        r"'fc' \(in_features=40\). Got 32 instead.",
    ):
        QuantizedLinear.from_linear(nn.Linear(40, 4), WeightOnlyQuantConfig(4, group_size=32), name="fc")
    model = nn.Sequential(nn.Linear(40, 4))
    with pytest.raises(ValueError, match=r"in_features of '0' \(in_features=40\). Got 32"):
        kernels.apply_(model, WeightOnlyQuantConfig(4, group_size=32))


def test_packed_width_must_fill_whole_bytes() -> None:
    with pytest.raises(
        ValueError, match=r"2-bit codes are packed 4 per byte .* must be a multiple of 4. Got 6 instead"
    ):
        QuantizedLinear.from_linear(nn.Linear(6, 4), WeightOnlyQuantConfig(2))
    QuantizedLinear.from_linear(nn.Linear(6, 4), WeightOnlyQuantConfig(8))  # bytes take any width
    model = nn.Sequential(nn.Linear(16, 12), nn.Linear(12, 4))
    with pytest.raises(
        ValueError,
        match=r"3-bit codes are packed 8 to every 3 bytes along in_features, so in_features of '1' must be a "
        r"multiple of 8. Got 12 instead. Pick another bit width for it \(8 bits packs any in_features\)",
    ):
        kernels.apply_(model, WeightOnlyQuantConfig(3))
    with pytest.raises(ValueError, match=r"6-bit codes are packed 8 to every 6 bytes"):
        QuantizedLinear(12, 4, bits=6)


def test_from_linear_type_errors() -> None:
    with pytest.raises(TypeError, match=r"expects an nn\.Linear\. Got Conv1d"):
        QuantizedLinear.from_linear(nn.Conv1d(4, 4, 1), WeightOnlyQuantConfig(8))  # type: ignore[arg-type]


def test_apply_quantizes_every_linear_and_not_twice() -> None:
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 8))
    kernels.apply_(model, WeightOnlyQuantConfig(8))
    assert all(isinstance(model[i], QuantizedLinear) for i in (0, 2))
    with pytest.raises(ValueError, match=r"Module '0' is already a QuantizedLinear \(8-bit\)"):
        kernels.apply_(model, WeightOnlyQuantConfig(4), targets="0")


def test_apply_on_a_bare_linear_returns_the_replacement() -> None:
    out = kernels.apply_(nn.Linear(16, 4), WeightOnlyQuantConfig(4))
    assert isinstance(out, QuantizedLinear)
