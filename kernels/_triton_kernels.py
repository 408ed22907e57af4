"""Triton GPU kernel for packed 8-, 4- and 2-bit weights: tiles are unpacked and dequantized in registers.

Imported only when a CUDA tensor reaches a :class:`~kernels.QuantizedLinear` and Triton imports (see
``kernels._linear_kernels.triton_available``). Same storage as the CPU path: unsigned codes packed along
``in_features`` (lowest bits first), float32 scales ``[N, groups]``, optional uint8 zero points. Only widths
that divide 8 are handled (no code crosses a byte); densely packed 3/5/6/7-bit layers take the reference
``dequant-matmul`` on CUDA.

float32 inputs are multiplied in IEEE float32 (no TF32) so results match the reference closely;
float16/bfloat16 inputs multiply in their own precision with float32 accumulation.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _packed_linear_kernel(
    x_ptr,
    w_ptr,
    s_ptr,
    z_ptr,
    b_ptr,
    y_ptr,
    M,
    N,
    K,
    group_size,
    zero_const,
    stride_xm,
    stride_wn,
    stride_sn,
    stride_ym,
    CBITS: tl.constexpr,
    HAS_ZP: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    IS_FP32: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    PER_BYTE: tl.constexpr = 8 // CBITS
    CODE_MASK: tl.constexpr = (1 << CBITS) - 1
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = offs_m < M
    n_ok = offs_n < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_ok = offs_k < K
        x = tl.load(
            x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :],
            mask=m_ok[:, None] & k_ok[None, :],
            other=0.0,
        )
        nk_ok = n_ok[:, None] & k_ok[None, :]
        packed = tl.load(
            w_ptr + offs_n[:, None] * stride_wn + (offs_k // PER_BYTE)[None, :], mask=nk_ok, other=0
        )
        shift = ((offs_k % PER_BYTE) * CBITS)[None, :]
        codes = ((packed.to(tl.int32) >> shift) & CODE_MASK).to(tl.float32)
        group = (offs_k // group_size)[None, :]
        scale = tl.load(s_ptr + offs_n[:, None] * stride_sn + group, mask=nk_ok, other=0.0)
        if HAS_ZP:
            zero = tl.load(z_ptr + offs_n[:, None] * stride_sn + group, mask=nk_ok, other=0).to(tl.float32)
            w = (codes - zero) * scale
        else:
            w = (codes - zero_const) * scale
        if IS_FP32:
            acc += tl.dot(x, tl.trans(w), input_precision="ieee")
        else:
            acc += tl.dot(x, tl.trans(w.to(x.dtype)))
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    y_ptrs = y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :]
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


def packed_linear(
    x: torch.Tensor,
    weight_packed: torch.Tensor,
    scales: torch.Tensor,
    zero_points: torch.Tensor | None,
    bias: torch.Tensor | None,
    *,
    bits: int,
    in_features: int,
    group_size: int,
) -> torch.Tensor:
    """``x @ dequant(W).T + bias`` on CUDA; ``x`` is 2-D ``[rows, in_features]``; ``bits`` is 8, 4 or 2."""
    if bits not in (2, 4, 8):
        raise ValueError(
            f"The Triton kernel takes 8-, 4- or 2-bit codes (no code crossing a byte). Got bits={bits} "
            "instead; densely packed 3/5/6/7-bit layers run the 'dequant-matmul' kernel."
        )
    x = x.contiguous()
    weight_packed = weight_packed.contiguous()
    scales = scales.contiguous()
    m_rows = x.shape[0]
    n_cols = weight_packed.shape[0]
    y = torch.empty(m_rows, n_cols, device=x.device, dtype=x.dtype)
    block_m = 16 if m_rows <= 16 else 64
    block_n, block_k = 64, 64
    grid = (triton.cdiv(m_rows, block_m), triton.cdiv(n_cols, block_n))
    zp = zero_points.contiguous() if zero_points is not None else scales
    b = bias.contiguous() if bias is not None else scales
    _packed_linear_kernel[grid](
        x,
        weight_packed,
        scales,
        zp,
        b,
        y,
        m_rows,
        n_cols,
        in_features,
        group_size,
        float(2 ** (bits - 1)),
        x.stride(0),
        weight_packed.stride(0),
        scales.stride(0),
        y.stride(0),
        CBITS=bits,
        HAS_ZP=zero_points is not None,
        HAS_BIAS=bias is not None,
        IS_FP32=x.dtype == torch.float32,
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_K=block_k,
    )
    return y
