"""The numba kernels against the plain reference (dequantize in float32, then matmul).

Error bound: max |fast - reference| <= 1e-4 * max |reference| and SQNR >= 80 dB. The kernels accumulate in
float32 in a different order, and the 4-/2-bit kernels decode codes through float differences
(see ``kernels._cpu_kernels``), which costs up to ~6 bits of float32 mantissa, well inside the bound.
The one-row 3-bit kernel uses the same trick on code segments (up to 8 bits of mantissa; measured
<= 1.6e-5 relative, SQNR >= 97 dB over 20 seeds). From 2 rows, and for one row of 5/6/7-bit codes, every
width decodes codes exactly into a float tile (scale and zero point in one FMA) and accumulates in float32:
measured <= 6.7e-7 relative and SQNR >= 131 dB over 20 seeds, so those tests bound it at 1e-5 and 110 dB.
The numba-decoded matmul path is bit-identical to the reference.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch
from torch import nn

from frontier.kernels import QuantizedLinear, WeightOnlyQuantConfig, available_linear_kernels
from frontier.kernels import _linear_kernels as lk


@pytest.fixture(params=["serial", "parallel"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    threads = torch.get_num_threads()
    if request.param == "parallel":
        monkeypatch.setattr(lk, "SERIAL_MAX_BYTES", -1)
        torch.set_num_threads(2)
    else:
        monkeypatch.setattr(lk, "SERIAL_MAX_BYTES", 1 << 40)
    yield request.param
    torch.set_num_threads(threads)


def _layer(bits: int, group_size: int | None, symmetric: bool, *, bias: bool = True) -> QuantizedLinear:
    torch.manual_seed(bits * 7 + (group_size or 0))
    return QuantizedLinear.from_linear(
        nn.Linear(128, 40, bias=bias), WeightOnlyQuantConfig(bits, group_size=group_size, symmetric=symmetric)
    )


@pytest.mark.parametrize("bits", [8, 6, 4, 3, 2])
@pytest.mark.parametrize(("group_size", "symmetric"), [(None, True), (32, False), (16, True)])
@pytest.mark.parametrize("rows", [1, 3, 16])
def test_fast_kernel_matches_reference(
    bits: int, group_size: int | None, symmetric: bool, rows: int, path: str, sqnr: Callable[..., float]
) -> None:
    layer = _layer(bits, group_size, symmetric, bias=rows != 3)
    x = torch.randn(rows, 128)
    with torch.no_grad():
        fast = layer(x)
        assert layer.kernel == {8: "numba-int8", 4: "numba-int4", 2: "numba-int2"}.get(bits, "numba-dense")
        ref = layer.forward_with("dequant-matmul", x)
    assert (fast - ref).abs().max() <= 1e-4 * ref.abs().max()
    assert sqnr(ref, fast) >= 80


@pytest.mark.parametrize("bits", [3, 5, 6, 7])
@pytest.mark.parametrize(("group_size", "symmetric"), [(None, True), (None, False), (16, True), (32, False)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("rows", [1, 2, 16, 64])
def test_dense_kernels_match_reference(
    bits: int,
    group_size: int | None,
    symmetric: bool,
    bias: bool,
    rows: int,
    path: str,
    sqnr: Callable[..., float],
) -> None:
    layer = _layer(bits, group_size, symmetric, bias=bias)
    assert layer.weight_packed.shape == (40, 128 * bits // 8)
    x = torch.randn(rows, 128)
    with torch.no_grad():
        fast = layer(x)
        assert layer.kernel == ("numba-dense" if rows <= lk.FAST_MAX_ROWS else "numba-dequant-matmul")
        ref = layer.forward_with("dequant-matmul", x)
    if rows > lk.FAST_MAX_ROWS:
        assert torch.equal(fast, ref)  # the numba decode is bit-identical; the matmul is the same F.linear
    assert (fast - ref).abs().max() <= 1e-4 * ref.abs().max()
    assert sqnr(ref, fast) >= 80


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize(("group_size", "symmetric"), [(None, True), (None, False), (8, False), (32, True)])
@pytest.mark.parametrize("out_features", [5, 41])
def test_tile_path_matches_reference(
    bits: int,
    group_size: int | None,
    symmetric: bool,
    out_features: int,
    path: str,
    sqnr: Callable[..., float],
) -> None:
    """2..16 rows decode 6 weight rows at a time: 41 = 6 * 6 + 5 and 5 < 6 leave a ragged last tile, and
    odd row counts end in a 6 x 1 pass."""
    torch.manual_seed(bits)
    layer = QuantizedLinear.from_linear(
        nn.Linear(128, out_features), WeightOnlyQuantConfig(bits, group_size=group_size, symmetric=symmetric)
    )
    for rows in (2, 3, 7, 16):
        x = torch.randn(rows, 128)
        with torch.no_grad():
            fast = layer(x)
            assert layer.kernel.startswith("numba-") and layer.kernel != "numba-dequant-matmul"
            ref = layer.forward_with("dequant-matmul", x)
        assert (fast - ref).abs().max() <= 1e-5 * ref.abs().max(), rows
        assert sqnr(ref, fast) >= 110, rows


@pytest.mark.parametrize(("bits", "in_features"), [(2, 12), (4, 134), (8, 131), (3, 8), (5, 8), (7, 16)])
@pytest.mark.parametrize("symmetric", [True, False])
def test_tile_path_short_and_partial_rows(
    bits: int, in_features: int, symmetric: bool, path: str, sqnr: Callable[..., float]
) -> None:
    """Rows ending in a partial 8-code unit (2/4/8 bits, per-channel scales), and weights so small that
    the last units' loads would run past the buffer (those units are read exactly)."""
    torch.manual_seed(in_features)
    layer = QuantizedLinear.from_linear(
        nn.Linear(in_features, 7), WeightOnlyQuantConfig(bits, symmetric=symmetric)
    )
    for rows in (1, 3, lk.FAST_MAX_ROWS + 1):
        x = torch.randn(rows, in_features)
        with torch.no_grad():
            fast = layer(x)
            ref = layer.forward_with("dequant-matmul", x)
        if rows > lk.FAST_MAX_ROWS:
            assert torch.equal(fast, ref)  # the decoded-weight path shares the decode, without the FMA
        direct = rows == 1 and bits in (2, 3, 4, 8)  # decoded through float differences
        assert (fast - ref).abs().max() <= (1e-4 if direct else 1e-5) * ref.abs().max(), rows
        assert sqnr(ref, fast) >= (80 if direct else 110), rows


def test_dispatch_falls_back_to_dequant_matmul() -> None:
    layer = _layer(4, 32, True)
    with torch.no_grad():
        big = torch.randn(lk.FAST_MAX_ROWS + 1, 128)
        # more rows: numba decodes the weight (bit-identical to the reference), MKL multiplies
        assert torch.equal(layer(big), layer.forward_with("dequant-matmul", big))
        assert layer.kernel == "numba-dequant-matmul"
        y64 = layer(torch.randn(2, 128, dtype=torch.float64))
        assert layer.kernel == "dequant-matmul" and y64.dtype == torch.float64
    x = torch.randn(2, 128, requires_grad=True)
    layer(x).sum().backward()  # fast kernels have no backward: autograd takes the matmul path
    assert layer.kernel == "dequant-matmul" and x.grad is not None and x.grad.shape == x.shape
    layer(x.detach())
    assert layer.kernel == "numba-int4"  # the choice is cached per (device, dtype, rows, autograd) key
    assert layer.bias is not None
    layer.bias.requires_grad_(True)  # fine-tuning the bias needs autograd too
    layer(x.detach()).sum().backward()
    assert layer.kernel == "dequant-matmul" and layer.bias.grad is not None


def test_cache_dequantized_is_dropped_on_reload() -> None:
    layer = _layer(8, None, True)
    layer.cache_dequantized = True
    x = torch.randn(32, 128)
    with torch.no_grad():
        first = layer(x)
        assert layer.kernel == "numba-dequant-matmul"
        assert layer._dequant_cache is not None
        torch.manual_seed(123)
        layer.load_state_dict(
            QuantizedLinear.from_linear(nn.Linear(128, 40), WeightOnlyQuantConfig(8)).state_dict()
        )
        assert layer._dequant_cache is None
        assert not torch.equal(layer(x), first)


def test_forward_with_unknown_or_unsupported_kernel() -> None:
    layer = _layer(8, None, True)
    with pytest.raises(ValueError, match=r"Unknown linear kernel 'cuda-magic'. Available: \["):
        layer.forward_with("cuda-magic", torch.randn(1, 128))
    with pytest.raises(ValueError, match="'numba-int4' does not support"):
        layer.forward_with("numba-int4", torch.randn(1, 128))
    with pytest.raises(ValueError, match="'numba-dense' does not support"):
        layer.forward_with("numba-dense", torch.randn(1, 128))
    assert available_linear_kernels()[-1] == "dequant-matmul"
