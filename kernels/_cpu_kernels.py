"""Numba CPU kernels: ``y = x @ dequant(W).T + b`` straight from packed codes, for few-row inputs.

Importing this module imports numba (not at ``import kernels`` time); each function compiles on first
use and is cached on disk (``cache=True``).

The trick that keeps the inner loops vectorisable: a byte holding ``e`` codes of ``c`` bits is converted to
float once (``f0``), and the floors ``f_i = floor(f0 / 2**(c*i))`` give every code as
``code_i = f_i - 2**c * f_(i+1)``. So
``sum_i code_i * x_i = f0 * x_0 + sum_(i>=1) f_i * (x_i - 2**c x_(i-1))``:
with the activations rearranged once per call (``xp``), the loop over bytes is pure float arithmetic on
contiguous arrays, with no 64-bit integer shifts. Zero points are folded in per group through the group
sums of ``x``: ``sum (code - z) * x * s = s * (sum code * x - z * sum x)``.

With more than :data:`DIRECT_MAX_ROWS` input rows each weight row is instead dequantised once into a
per-thread scratch row and dotted with every input row, so codes are decoded once, not once per row.

Loops index as ``base + k`` with ``k`` from ``range(n)``: a loop starting at an arbitrary ``base`` defeats
LLVM's proof that the index is non-negative, and the wraparound check then blocks vectorisation.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

DIRECT_MAX_ROWS = 2
"""Up to this many input rows the kernels decode codes inside the dot product."""

_jit = njit(fastmath=True, cache=True, nogil=True)
_jit_parallel = njit(parallel=True, fastmath=True, cache=True, nogil=True)


# --- activations ----------------------------------------------------------------------------------
@_jit
def _group_sums(x: np.ndarray, groups: int, gs: int) -> np.ndarray:
    m_rows = x.shape[0]
    xsum = np.empty((m_rows, groups), np.float32)
    for m in range(m_rows):
        for g in range(groups):
            s = np.float32(0.0)
            for k in range(gs):
                s += x[m, g * gs + k]
            xsum[m, g] = s
    return xsum


@_jit
def _phases(x: np.ndarray, per_byte: int, cbits: int, differenced: bool) -> np.ndarray:
    """``x`` split by position in the byte: ``xp[m, i, j] = x[m, j*per_byte + i]`` (or its differences)."""
    m_rows, k_cols = x.shape
    nb = k_cols // per_byte
    radix = np.float32(2**cbits)
    xp = np.empty((m_rows, per_byte, nb), np.float32)
    for m in range(m_rows):
        for j in range(nb):
            prev = np.float32(0.0)
            for i in range(per_byte):
                v = x[m, j * per_byte + i]
                xp[m, i, j] = v - radix * prev if differenced else v
                prev = v
    return xp


# --- direct (few rows) ----------------------------------------------------------------------------
@_jit
def _rows_c8(x, xsum, w, scales, zeros, asym, zc, gs, bias, has_bias, out, n0, n1):  # type: ignore[no-untyped-def]
    m_rows = x.shape[0]
    groups = scales.shape[1]
    for n in range(n0, n1):
        for m in range(m_rows):
            total = np.float32(0.0)
            for g in range(groups):
                base = g * gs
                acc = np.float32(0.0)
                for k in range(gs):
                    acc += np.float32(w[n, base + k]) * x[m, base + k]
                z = np.float32(zeros[n, g]) if asym else zc
                total += scales[n, g] * (acc - z * xsum[m, g])
            out[m, n] = total + bias[n] if has_bias else total


@_jit
def _rows_c4(xp, xsum, w, scales, zeros, asym, zc, gs, bias, has_bias, out, n0, n1):  # type: ignore[no-untyped-def]
    m_rows = xp.shape[0]
    groups = scales.shape[1]
    hg = gs // 2
    for n in range(n0, n1):
        for m in range(m_rows):
            total = np.float32(0.0)
            for g in range(groups):
                base = g * hg
                acc = np.float32(0.0)
                for j in range(hg):
                    f0 = np.float32(w[n, base + j])
                    f1 = np.floor(f0 * np.float32(0.0625))
                    acc += f0 * xp[m, 0, base + j] + f1 * xp[m, 1, base + j]
                z = np.float32(zeros[n, g]) if asym else zc
                total += scales[n, g] * (acc - z * xsum[m, g])
            out[m, n] = total + bias[n] if has_bias else total


@_jit
def _rows_c2(xp, xsum, w, scales, zeros, asym, zc, gs, bias, has_bias, out, n0, n1):  # type: ignore[no-untyped-def]
    m_rows = xp.shape[0]
    groups = scales.shape[1]
    qg = gs // 4
    for n in range(n0, n1):
        for m in range(m_rows):
            total = np.float32(0.0)
            for g in range(groups):
                base = g * qg
                acc = np.float32(0.0)
                for j in range(qg):
                    f0 = np.float32(w[n, base + j])
                    f1 = np.floor(f0 * np.float32(0.25))
                    f2 = np.floor(f0 * np.float32(0.0625))
                    f3 = np.floor(f0 * np.float32(0.015625))
                    acc += (
                        f0 * xp[m, 0, base + j]
                        + f1 * xp[m, 1, base + j]
                        + f2 * xp[m, 2, base + j]
                        + f3 * xp[m, 3, base + j]
                    )
                z = np.float32(zeros[n, g]) if asym else zc
                total += scales[n, g] * (acc - z * xsum[m, g])
            out[m, n] = total + bias[n] if has_bias else total


# --- scratch row (more rows) ----------------------------------------------------------------------
@_jit
def _decode_row(w, scales, zeros, asym, zc, gs, cbits, n, row):  # type: ignore[no-untyped-def]
    """Dequantise weight row ``n`` into ``row[i, j]`` = element ``j*per_byte + i`` (phase-split)."""
    groups = scales.shape[1]
    per_byte = 8 // cbits
    bg = gs // per_byte
    for g in range(groups):
        s = scales[n, g]
        z = np.float32(zeros[n, g]) if asym else zc
        base = g * bg
        if cbits == 8:
            for j in range(bg):
                row[0, base + j] = (np.float32(w[n, base + j]) - z) * s
        elif cbits == 4:
            for j in range(bg):
                f0 = np.float32(w[n, base + j])
                f1 = np.floor(f0 * np.float32(0.0625))
                row[0, base + j] = (f0 - np.float32(16.0) * f1 - z) * s
                row[1, base + j] = (f1 - z) * s
        else:
            for j in range(bg):
                f0 = np.float32(w[n, base + j])
                f1 = np.floor(f0 * np.float32(0.25))
                f2 = np.floor(f0 * np.float32(0.0625))
                f3 = np.floor(f0 * np.float32(0.015625))
                row[0, base + j] = (f0 - np.float32(4.0) * f1 - z) * s
                row[1, base + j] = (f1 - np.float32(4.0) * f2 - z) * s
                row[2, base + j] = (f2 - np.float32(4.0) * f3 - z) * s
                row[3, base + j] = (f3 - z) * s


@_jit
def _rows_scratch(xp, w, scales, zeros, asym, zc, gs, cbits, bias, has_bias, out, n0, n1):  # type: ignore[no-untyped-def]
    m_rows, per_byte, nb = xp.shape
    row = np.empty((per_byte, nb), np.float32)
    for n in range(n0, n1):
        _decode_row(w, scales, zeros, asym, zc, gs, cbits, n, row)
        for m in range(m_rows):
            acc = np.float32(0.0)
            for i in range(per_byte):
                for j in range(nb):
                    acc += row[i, j] * xp[m, i, j]
            out[m, n] = acc + bias[n] if has_bias else acc


# --- entry points ---------------------------------------------------------------------------------
@_jit
def _linear_rows(x, w, scales, zeros, asym, zc, gs, cbits, bias, has_bias, out, n0, n1):  # type: ignore[no-untyped-def]
    per_byte = 8 // cbits
    if x.shape[0] > DIRECT_MAX_ROWS:
        _rows_scratch(
            _phases(x, per_byte, cbits, False),
            w,
            scales,
            zeros,
            asym,
            zc,
            gs,
            cbits,
            bias,
            has_bias,
            out,
            n0,
            n1,
        )
        return
    xsum = _group_sums(x, scales.shape[1], gs)
    if cbits == 8:
        _rows_c8(x, xsum, w, scales, zeros, asym, zc, gs, bias, has_bias, out, n0, n1)
    elif cbits == 4:
        xp = _phases(x, 2, 4, True)
        _rows_c4(xp, xsum, w, scales, zeros, asym, zc, gs, bias, has_bias, out, n0, n1)
    else:
        xp = _phases(x, 4, 2, True)
        _rows_c2(xp, xsum, w, scales, zeros, asym, zc, gs, bias, has_bias, out, n0, n1)


@_jit
def linear_serial(x, w, scales, zeros, asym, zc, gs, cbits, bias, has_bias, out):  # type: ignore[no-untyped-def]
    _linear_rows(x, w, scales, zeros, asym, zc, gs, cbits, bias, has_bias, out, 0, w.shape[0])


@_jit_parallel
def linear_parallel(x, w, scales, zeros, asym, zc, gs, cbits, bias, has_bias, out, chunks):  # type: ignore[no-untyped-def]
    n_rows = w.shape[0]
    per_byte = 8 // cbits
    chunks = max(1, min(n_rows, chunks))
    step = (n_rows + chunks - 1) // chunks
    # activations are rearranged once here, not once per chunk
    if x.shape[0] > DIRECT_MAX_ROWS:
        xp = _phases(x, per_byte, cbits, False)
        for c in prange(chunks):
            n0 = c * step
            _rows_scratch(
                xp, w, scales, zeros, asym, zc, gs, cbits, bias, has_bias, out, n0, min(n_rows, n0 + step)
            )
        return
    xsum = _group_sums(x, scales.shape[1], gs)
    xd = _phases(x, per_byte, cbits, True)
    for c in prange(chunks):
        n0 = c * step
        n1 = min(n_rows, n0 + step)
        if cbits == 8:
            _rows_c8(x, xsum, w, scales, zeros, asym, zc, gs, bias, has_bias, out, n0, n1)
        elif cbits == 4:
            _rows_c4(xd, xsum, w, scales, zeros, asym, zc, gs, bias, has_bias, out, n0, n1)
        else:
            _rows_c2(xd, xsum, w, scales, zeros, asym, zc, gs, bias, has_bias, out, n0, n1)


@_jit_parallel
def dequantize_parallel(w, scales, zeros, asym, zc, gs, cbits, out, chunks):  # type: ignore[no-untyped-def]
    """The float32 weight ``out[N, K]`` (same arithmetic as the torch reference, so bit-identical)."""
    n_rows, nb = w.shape
    per_byte = 8 // cbits
    chunks = max(1, min(n_rows, chunks))
    step = (n_rows + chunks - 1) // chunks
    for c in prange(chunks):
        row = np.empty((per_byte, nb), np.float32)
        n0 = c * step
        for i in range(min(n_rows, n0 + step) - n0):
            n = n0 + i
            _decode_row(w, scales, zeros, asym, zc, gs, cbits, n, row)
            for j in range(nb):
                for p in range(per_byte):
                    out[n, j * per_byte + p] = row[p, j]
