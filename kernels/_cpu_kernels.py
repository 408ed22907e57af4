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

3-, 5-, 6- and 7-bit codes are packed densely (8 codes, a "unit", in ``bits`` bytes; codes cross byte
borders; see ``kernels._quant``). Their kernels (``dense_*``) apply the same trick per byte, to the
*segments* of codes a byte holds: a byte whose segments start at bits ``o_0 = 0 < o_1 < ...`` has the
floors ``F_k = floor(f0 / 2**o_k)``, segment ``k`` is ``F_k - 2**len_k * F_(k+1)``, and a segment that is
the high part of a code, ``r`` bits in, weighs ``2**r * x_code``. The differenced activations per byte
position and segment (``xd``, built once per call) make the loop over units pure float arithmetic again.
The loop runs over whole units (the unit's ``bits`` byte loads vectorise as one wide load and shuffles)
with ``bits`` a compile-time constant (a per-width copy, inlined under a literal), and sums each unit's
terms as a balanced tree: those functions are compiled without ``reassoc``, which would fold the tree into
one long dependency chain. More than :data:`DIRECT_MAX_ROWS` rows decode each weight row exactly, with
integer shifts and masks, into the scratch row.

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
_jit_inline = njit(fastmath=True, cache=True, nogil=True, inline="always")
_jit_ordered = njit(fastmath={"nnan", "ninf", "nsz", "arcp", "contract", "afn"}, cache=True, nogil=True)
"""Fast math without ``reassoc``: keeps a written summation tree (functions inlined here get these flags)."""


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


# --- dense 3/5/6/7-bit codes ----------------------------------------------------------------------
@_jit_inline
def _unpack_dense(w, bits, n, su, zu, row):  # type: ignore[no-untyped-def]
    """Dequantise row ``n`` of densely packed ``bits``-bit ``w``: ``row[i*nu + j]`` = element ``8*j + i``.

    ``su``/``zu`` hold each 8-code unit's scale and zero point. Inlined where ``bits`` is a literal, so
    ``lo``, ``sh`` and the straddle test are constants and the loads of each unit's ``bits`` bytes
    vectorise (one loop over the whole row: per-group loops with offsets did not).
    """
    nu = su.shape[0]
    mask = (1 << bits) - 1
    for j in range(nu):
        s = su[j]
        z = zu[j]
        for i in range(8):
            lo = (bits * i) >> 3  # code i of a unit starts in byte lo, at bit sh
            sh = (bits * i) & 7
            v = np.int32(w[n, bits * j + lo])
            if sh + bits > 8:  # it crosses into the next byte (never past the unit's last)
                v = v | (np.int32(w[n, bits * j + lo + 1]) << 8)
            row[i * nu + j] = (np.float32(np.int32((v >> sh) & mask)) - z) * s


@_jit
def _decode_dense_row(w, scales, zeros, asym, zc, gs, bits, n, su, zu, row):  # type: ignore[no-untyped-def]
    """Dequantise row ``n`` of densely packed ``bits``-bit ``w`` into ``row`` (phase-split, see above)."""
    ug = gs // 8  # 8-code units per scale group
    for g in range(scales.shape[1]):
        s = scales[n, g]
        z = np.float32(zeros[n, g]) if asym else zc
        base = g * ug
        for k in range(ug):
            su[base + k] = s
            zu[base + k] = z
    if bits == 3:
        _unpack_dense(w, 3, n, su, zu, row)
    elif bits == 5:
        _unpack_dense(w, 5, n, su, zu, row)
    elif bits == 6:
        _unpack_dense(w, 6, n, su, zu, row)
    else:
        _unpack_dense(w, 7, n, su, zu, row)


@_jit
def _rows_dense(xp, w, scales, zeros, asym, zc, gs, bits, bias, has_bias, out, n0, n1):  # type: ignore[no-untyped-def]
    m_rows, k_cols = xp.shape
    nu = k_cols // 8
    su = np.empty(nu, np.float32)
    zu = np.empty(nu, np.float32)
    row = np.empty(k_cols, np.float32)
    for n in range(n0, n1):
        _decode_dense_row(w, scales, zeros, asym, zc, gs, bits, n, su, zu, row)
        for m in range(m_rows):
            acc = np.float32(0.0)
            for k in range(k_cols):
                acc += row[k] * xp[m, k]
            out[m, n] = acc + bias[n] if has_bias else acc


@_jit
def _dense_phases(x):  # type: ignore[no-untyped-def]
    """``x`` in the decoded rows' order: ``xp[m, i*nu + j] = x[m, 8*j + i]``."""
    m_rows, k_cols = x.shape
    return _phases(x, 8, 8, False).reshape(m_rows, k_cols)


@_jit_inline
def _segment_start(bits, b, k):  # type: ignore[no-untyped-def]
    """Bit (within byte ``b`` of a unit) where the byte's ``k``-th code segment starts; 8 if it has none."""
    first = (bits - (8 * b) % bits) % bits  # the first code that starts inside this byte starts here
    if k == 0:
        o = 0
    elif first == 0:
        o = bits * k
    else:
        o = first + bits * (k - 1)
    return o if o < 8 else 8


@_jit
def _dense_segments(x, bits):  # type: ignore[no-untyped-def]
    """Differenced activations ``xd[m, 4*b + k, j]`` for segment ``k`` of byte ``b`` of unit ``j``."""
    m_rows, k_cols = x.shape
    nu = k_cols // 8
    xd = np.zeros((m_rows, 4 * bits, nu), np.float32)
    for m in range(m_rows):
        for j in range(nu):
            for b in range(bits):
                prev = np.float32(0.0)
                prev_len = 0
                for k in range(4):
                    o = _segment_start(bits, b, k)
                    if o == 8:
                        break
                    u = 8 * b + o  # bit within the unit
                    code = u // bits
                    c = x[m, 8 * j + code] * np.float32(1 << (u - bits * code))
                    xd[m, 4 * b + k, j] = c - np.float32(1 << prev_len) * prev
                    prev = c
                    prev_len = _segment_start(bits, b, k + 1) - o
    return xd


@_jit_inline
def _dense_direct(xd, xsum, w, scales, zeros, asym, zc, gs, bits, bias, has_bias, out, n0, n1):  # type: ignore[no-untyped-def]
    """Rows ``n0:n1`` of ``out`` from the segment trick (inlined under a literal ``bits``)."""
    m_rows, _, nu = xd.shape
    t = np.empty(nu, np.float32)
    for n in range(n0, n1):
        for m in range(m_rows):
            for j in range(nu):  # t[j]: unit j's sum of code * x, summed as a tree
                a0 = np.float32(0.0)
                a1 = np.float32(0.0)
                a2 = np.float32(0.0)
                a3 = np.float32(0.0)
                for b in range(bits):
                    f0 = np.float32(w[n, bits * j + b])
                    for k in range(4):
                        o = _segment_start(bits, b, k)
                        if o < 8:
                            f = f0 if o == 0 else np.floor(f0 * np.float32(1.0 / (1 << o)))
                            v = f * xd[m, 4 * b + k, j]
                            if k == 0:
                                a0 += v
                            elif k == 1:
                                a1 += v
                            elif k == 2:
                                a2 += v
                            else:
                                a3 += v
                t[j] = (a0 + a1) + (a2 + a3)
            total = _group_total(t, xsum, scales, zeros, asym, zc, gs, n, m)
            out[m, n] = total + bias[n] if has_bias else total


@_jit
def _group_total(t, xsum, scales, zeros, asym, zc, gs, n, m):  # type: ignore[no-untyped-def]
    """``sum_g s_g * (sum of t over group g - z_g * xsum[m, g])`` (reassociated: a vectorised sum)."""
    ug = gs // 8  # units per scale group
    total = np.float32(0.0)
    for g in range(scales.shape[1]):
        base = g * ug
        acc = np.float32(0.0)
        for k in range(ug):
            acc += t[base + k]
        z = np.float32(zeros[n, g]) if asym else zc
        total += scales[n, g] * (acc - z * xsum[m, g])
    return total


@_jit_ordered
def _rows_dense_direct(xd, xsum, w, scales, zeros, asym, zc, gs, bits, bias, has_bias, out, n0, n1):  # type: ignore[no-untyped-def]
    if bits == 3:
        _dense_direct(xd, xsum, w, scales, zeros, asym, zc, gs, 3, bias, has_bias, out, n0, n1)
    elif bits == 5:
        _dense_direct(xd, xsum, w, scales, zeros, asym, zc, gs, 5, bias, has_bias, out, n0, n1)
    elif bits == 6:
        _dense_direct(xd, xsum, w, scales, zeros, asym, zc, gs, 6, bias, has_bias, out, n0, n1)
    else:
        _dense_direct(xd, xsum, w, scales, zeros, asym, zc, gs, 7, bias, has_bias, out, n0, n1)


@_jit
def dense_linear_serial(x, w, scales, zeros, asym, zc, gs, bits, bias, has_bias, out):  # type: ignore[no-untyped-def]
    """``out = x @ dequant(W).T + b`` for densely packed 3/5/6/7-bit ``w``, one thread."""
    n_rows = w.shape[0]
    if x.shape[0] > DIRECT_MAX_ROWS:
        _rows_dense(_dense_phases(x), w, scales, zeros, asym, zc, gs, bits, bias, has_bias, out, 0, n_rows)
        return
    xsum = _group_sums(x, scales.shape[1], gs)
    xd = _dense_segments(x, bits)
    _rows_dense_direct(xd, xsum, w, scales, zeros, asym, zc, gs, bits, bias, has_bias, out, 0, n_rows)


@_jit_parallel
def dense_linear_parallel(x, w, scales, zeros, asym, zc, gs, bits, bias, has_bias, out, chunks):  # type: ignore[no-untyped-def]
    """:func:`dense_linear_serial` over ``chunks`` slices of the output features in parallel."""
    n_rows = w.shape[0]
    chunks = max(1, min(n_rows, chunks))
    step = (n_rows + chunks - 1) // chunks
    if x.shape[0] > DIRECT_MAX_ROWS:
        xp = _dense_phases(x)
        for c in prange(chunks):
            n0 = c * step
            n1 = min(n_rows, n0 + step)
            _rows_dense(xp, w, scales, zeros, asym, zc, gs, bits, bias, has_bias, out, n0, n1)
        return
    xsum = _group_sums(x, scales.shape[1], gs)
    xd = _dense_segments(x, bits)
    for c in prange(chunks):
        n0 = c * step
        n1 = min(n_rows, n0 + step)
        _rows_dense_direct(xd, xsum, w, scales, zeros, asym, zc, gs, bits, bias, has_bias, out, n0, n1)


@_jit_parallel
def dequantize_dense_parallel(w, scales, zeros, asym, zc, gs, bits, out, chunks):  # type: ignore[no-untyped-def]
    """The float32 weight ``out[N, K]`` of densely packed ``w`` (bit-identical to the reference)."""
    n_rows, k_cols = out.shape
    nu = k_cols // 8
    chunks = max(1, min(n_rows, chunks))
    step = (n_rows + chunks - 1) // chunks
    for c in prange(chunks):
        su = np.empty(nu, np.float32)
        zu = np.empty(nu, np.float32)
        row = np.empty(k_cols, np.float32)
        n0 = c * step
        for i in range(min(n_rows, n0 + step) - n0):
            n = n0 + i
            _decode_dense_row(w, scales, zeros, asym, zc, gs, bits, n, su, zu, row)
            for j in range(nu):
                for p in range(8):
                    out[n, 8 * j + p] = row[p * nu + j]
