"""The numba kernels against the plain reference (dequantize in float32, then matmul).

Error bound: max |fast - reference| <= 1e-4 * max |reference| and SQNR >= 80 dB. The kernels accumulate in
float32 in a different order, and the 4-/2-bit kernels decode codes through float differences
(see ``kernels._cpu_kernels``), which costs up to ~6 bits of float32 mantissa, well inside the bound.
The dense 3/5/6/7-bit kernel uses the same trick on code segments (up to 8 bits of mantissa) for 1-2 rows
(measured <= 1.6e-5 relative, SQNR >= 97 dB over 20 seeds) and exact integer decoding into a scratch row for
more (<= 7.2e-7); the numba-decoded matmul path is bit-identical to the reference.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch
from torch import nn

from kernels import QuantizedLinear, WeightOnlyQuantConfig, available_linear_kernels
from kernels import _linear_kernels as lk


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
