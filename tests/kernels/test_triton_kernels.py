"""Triton path: runs only with a CUDA GPU and Triton; skipped cleanly otherwise (marker ``gpu``)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from frontier.kernels import QuantizedLinear, WeightOnlyQuantConfig
from frontier.kernels._linear_kernels import triton_available

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def _needs_triton() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    if not triton_available():
        pytest.skip("needs Triton")


@pytest.mark.parametrize(
    ("bits", "expected"),
    [
        (8, "triton-int8"),
        (4, "triton-int4"),
        (2, "triton-int2"),
        # densely packed widths: Triton declines, the reference runs on the GPU
        (6, "dequant-matmul"),
        (3, "dequant-matmul"),
    ],
)
@pytest.mark.parametrize(("group_size", "symmetric"), [(None, True), (64, False)])
@pytest.mark.parametrize("rows", [1, 37])
def test_triton_matches_reference(
    bits: int, expected: str, group_size: int | None, symmetric: bool, rows: int, sqnr: Callable[..., float]
) -> None:
    torch.manual_seed(0)
    layer = QuantizedLinear.from_linear(
        nn.Linear(256, 96), WeightOnlyQuantConfig(bits, group_size=group_size, symmetric=symmetric)
    ).cuda()
    x = torch.randn(rows, 256, device="cuda")
    with torch.no_grad():
        fast = layer(x)
        assert layer.kernel == expected
        ref = layer.forward_with("dequant-matmul", x)
    # float32 inputs multiply in IEEE float32 (no TF32): same bound as the CPU kernels
    assert (fast - ref).abs().max() <= 1e-4 * ref.abs().max()
    assert sqnr(ref, fast) >= 80


def test_triton_half_precision_inputs() -> None:
    torch.manual_seed(0)
    layer = QuantizedLinear.from_linear(nn.Linear(256, 64), WeightOnlyQuantConfig(4, group_size=32)).cuda()
    x = torch.randn(5, 256, device="cuda")
    with torch.no_grad():
        ref = layer.forward_with("dequant-matmul", x)
        for dtype in (torch.float16, torch.bfloat16):
            y = layer(x.to(dtype))
            assert y.dtype == dtype and layer.kernel == "triton-int4"
            assert (y.float() - ref).abs().max() <= 3e-2 * ref.abs().max()


def test_triton_kernel_refuses_dense_widths() -> None:
    from frontier.kernels._triton_kernels import packed_linear

    layer = QuantizedLinear.from_linear(nn.Linear(64, 16), WeightOnlyQuantConfig(3)).cuda()
    x = torch.randn(2, 64, device="cuda")
    with pytest.raises(ValueError, match=r"takes 8-, 4- or 2-bit codes .* Got bits=3 instead"):
        packed_linear(
            x, layer.weight_packed, layer.scales, None, layer.bias, bits=3, in_features=64, group_size=64
        )
