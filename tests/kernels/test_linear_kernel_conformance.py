"""Every registered linear kernel against the dequantize-matmul reference (parametrized over the registry,
so a newly registered kernel is checked without touching this file).

Reference: ``F.linear(x, dequantize_codes(codes, scales, zero_points), bias)`` computed in float64 from the
layer's unpacked codes, i.e. the exact product of the stored format.

Grid: every code width 2..8, per-channel scales and grouped scales (group 32, asymmetric zero points), 1 and
16 rows. A kernel runs each case its ``supports`` accepts on a CPU float32 input, else on a CUDA float32
input when a GPU is present; cases it accepts nowhere are not its format (``numba-int8`` takes 8 bits only).

Error bound, relative to the output scale ``max |reference|``:
* CPU kernels (float32 arithmetic, other accumulation orders, the 2-/3-/4-bit float-difference decode of
  ``kernels._cpu_kernels``): max |kernel - reference| <= 1e-4 * max |reference| and SQNR >= 80 dB
  (measured <= 1.6e-5 and >= 97 dB; see tests/kernels/test_cpu_kernels.py).
* CUDA kernels (``tl.dot`` may use TF32, a 10-bit mantissa): max-abs <= 1e-2 * max |reference| and
  SQNR >= 40 dB.
A kernel that accepts no case on this machine (a CUDA kernel without a GPU) is skipped, not passed.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from frontier.kernels import QuantizedLinear, WeightOnlyQuantConfig, available_linear_kernels
from frontier.kernels._linear_kernels import LinearKernel, get_linear_kernel
from frontier.kernels._quant import dequantize_codes

WIDTHS = range(2, 9)
# (group_size, symmetric): per-channel scales with a fixed zero point, grouped scales with zero points
SCALES = [(None, True), (32, False)]
ROWS = (1, 16)
IN_FEATURES, OUT_FEATURES = 128, 40
BOUNDS = {"cpu": (1e-4, 80.0), "cuda": (1e-2, 40.0)}  # (max-abs relative to max |ref|, min SQNR dB)


def _devices() -> list[str]:
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def _layer(bits: int, group_size: int | None, symmetric: bool, device: str) -> QuantizedLinear:
    torch.manual_seed(100 * bits + (group_size or 0))
    linear = nn.Linear(IN_FEATURES, OUT_FEATURES)
    config = WeightOnlyQuantConfig(bits, group_size=group_size, symmetric=symmetric)
    return QuantizedLinear.from_linear(linear, config).to(device)


def _reference(layer: QuantizedLinear, x: torch.Tensor) -> torch.Tensor:
    weight = dequantize_codes(
        layer.codes().cpu(), layer.scales.cpu(), _cpu(layer.zero_points), bits=layer.bits
    )
    bias = None if layer.bias is None else layer.bias.detach().cpu().double()
    return F.linear(x.cpu().double(), weight.double(), bias)


def _cpu(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.cpu()


def _run(kernel: LinearKernel, layer: QuantizedLinear, x: torch.Tensor) -> torch.Tensor | None:
    """The kernel's output, or None when ``supports`` declines (not its format or device)."""
    with torch.no_grad():
        if not kernel.supports(layer, x):
            return None
        out = kernel(layer, x)
    assert out.shape == (x.shape[0], OUT_FEATURES), f"{kernel.name} returned shape {tuple(out.shape)}"
    assert out.dtype == x.dtype, f"{kernel.name} returned {out.dtype} for {x.dtype} input"
    return out


@pytest.mark.parametrize("name", available_linear_kernels())
def test_kernel_matches_dequantize_matmul_reference(name: str, sqnr: Callable[..., float]) -> None:
    kernel = get_linear_kernel(name)
    ran: list[str] = []
    failures: list[str] = []
    for device in _devices():
        max_rel, min_sqnr = BOUNDS[device]
        for bits in WIDTHS:
            for group_size, symmetric in SCALES:
                layer = _layer(bits, group_size, symmetric, device)
                for rows in ROWS:
                    x = torch.randn(rows, IN_FEATURES, generator=torch.Generator().manual_seed(rows + bits))
                    out = _run(kernel, layer, x.to(device))
                    if out is None:
                        continue
                    case = f"{device} bits={bits} group_size={group_size} rows={rows}"
                    ran.append(case)
                    ref = _reference(layer, x)
                    got = out.detach().cpu().double()
                    rel = float((got - ref).abs().max() / ref.abs().max())
                    db = sqnr(ref, got)
                    if rel > max_rel or db < min_sqnr:
                        failures.append(
                            f"{case}: max-abs {rel:.2e} x max|ref| (bound {max_rel}), {db:.1f} dB"
                        )
    if not ran:
        pytest.skip(
            f"linear kernel '{name}' accepts none of the cases on this machine (devices {_devices()})"
        )
    assert not failures, f"linear kernel '{name}' outside its error bound:\n" + "\n".join(failures)


def test_the_grid_covers_every_width_and_layout_on_cpu() -> None:
    """Every CPU case is taken by some non-reference kernel, so the grid exercises the fast paths."""
    kernels = [get_linear_kernel(n) for n in available_linear_kernels() if n != "dequant-matmul"]
    for bits in WIDTHS:
        for group_size, symmetric in SCALES:
            layer = _layer(bits, group_size, symmetric, "cpu")
            for rows in ROWS:
                x = torch.zeros(rows, IN_FEATURES)
                assert any(k.supports(layer, x) for k in kernels), (bits, group_size, rows)


def test_unknown_kernel_name_lists_the_registered_ones() -> None:
    with pytest.raises(
        ValueError, match=r"Unknown linear kernel 'cuda-magic'. Available: \['dequant-matmul'"
    ):
        get_linear_kernel("cuda-magic")
