"""Numba CPU kernels: ``y = x @ dequant(W).T + b`` straight from packed codes, for few-row inputs.

Importing this module imports numba (not at ``import kernels`` time); each function compiles on first
use and is cached on disk (``cache=True``); :func:`warm_up` does that once, where a process starts.

For a single input row (:data:`DIRECT_MAX_ROWS`) 2-, 3-, 4- and 8-bit codes are decoded inside the dot
product. The trick that keeps those inner loops vectorisable: a byte holding ``e`` codes of ``c`` bits is
converted to float once (``f0``), and the floors ``f_i = floor(f0 / 2**(c*i))`` give every code as
``code_i = f_i - 2**c * f_(i+1)``. So
``sum_i code_i * x_i = f0 * x_0 + sum_(i>=1) f_i * (x_i - 2**c x_(i-1))``:
with the activations rearranged once per call (``xp``), the loop over bytes is pure float arithmetic on
contiguous arrays, with no 64-bit integer shifts. Zero points are folded in per group through the group
sums of ``x``: ``sum (code - z) * x * s = s * (sum code * x - z * sum x)``.

3-, 5-, 6- and 7-bit codes are packed densely (8 codes, a "unit", in ``bits`` bytes; codes cross byte
borders; see ``kernels._quant``). The one-row 3-bit kernel applies the same trick per byte, to the
*segments* of codes a byte holds: a byte whose segments start at bits ``o_0 = 0 < o_1 < ...`` has the
floors ``F_k = floor(f0 / 2**o_k)``, segment ``k`` is ``F_k - 2**len_k * F_(k+1)``, and a segment that is
the high part of a code, ``r`` bits in, weighs ``2**r * x_code``. The differenced activations per byte
position and segment (``xd``, built once per call) make the loop over units pure float arithmetic again.
The loop runs over whole units (the unit's ``bits`` byte loads vectorise as one wide load and shuffles)
with ``bits`` a compile-time constant (a per-width copy, inlined under a literal), and sums each unit's
terms as a balanced tree: those functions are compiled without ``reassoc``, which would fold the tree into
one long dependency chain.

Otherwise (more rows, or dense codes wider than :data:`DENSE_DIRECT_MAX_BITS`) codes are decoded once
per call, not once per input row: :data:`_BLOCK` weight rows at a time into a small float tile (scales
and zero points applied), which a register-blocked micro-kernel multiplies with all input rows. Two
departures from the obvious code, both measured:

- The decode of each 8-code unit is written as LLVM vector IR (``_decode_unit``, a numba intrinsic), not
  as a numba loop. Vectorised over units, a loop has to gather bytes ``bits`` apart; LLVM lowers that
  stride well only for 3 and 4 and into per-byte inserts otherwise, so 5-bit decoded 1.8x slower than
  4-bit and 8-bit (stride 8) 4x slower. The IR handles one unit per 8-lane vector with the same ~9
  instructions for every width (two 4-byte loads, a per-lane shift, mask, convert, one FMA), about
  0.15 ns per code here, so latency hardly depends on the width. It is generic LLVM IR, not x86
  intrinsics.
- The multiply (``_tile_6x2``) is a dot-product form with twelve scalar accumulators (6 weight rows x 2
  input rows) that LLVM vectorises along K: 8 loads per 12 FMAs, where one weight row against one input
  row at a time is 2 loads per FMA. An outer-product form over a K-major tile would need vector
  accumulators, which numba keeps in memory (10x slower), and a transposing decode.

The decoded-weight path (:func:`dequantize_parallel`, for more rows than these kernels take) uses the same
unit decode without the FMA, so its weight is bit-identical to the torch reference.

Loops index as ``base + k`` with ``k`` from ``range(n)``: a loop starting at an arbitrary ``base`` defeats
LLVM's proof that the index is non-negative, and the wraparound check then blocks vectorisation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

DIRECT_MAX_ROWS = 1
"""Up to this many input rows the 2-, 4- and 8-bit kernels decode codes inside the dot product."""

DENSE_DIRECT_MAX_BITS = 3
"""Densely packed codes up to this wide decode inside the dot product for one row (the segment trick's cost
grows with the bytes per unit: above 3 bits the tile path is faster even for one row)."""

_BLOCK = 6
"""Weight rows decoded per tile (the micro-kernel's width)."""

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


# --- direct: one row of 2/4/8-bit codes -----------------------------------------------------------
@_jit
def _rows_c8(x, xsum, w, scales, zeros, asym, zc, gs, bias, has_bias, out, n0, n1):
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
def _rows_c4(xp, xsum, w, scales, zeros, asym, zc, gs, bias, has_bias, out, n0, n1):
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
def _rows_c2(xp, xsum, w, scales, zeros, asym, zc, gs, bias, has_bias, out, n0, n1):
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


# --- tile path: 2..16 rows (and one row of 5/6/7-bit codes) ---------------------------------------
def _decode_unit_typer(typingctx, w, off, out, k, s, z, bits, exact, fused):
    """``out[k:k+8]`` from the 8 codes in bytes ``off:off+bits`` of C-contiguous uint8 ``w``: ``(code - z) *
    s``, or with ``fused`` ``code * s + z`` rounded once (the caller then passes ``-zero_point * s``).

    ``bits``, ``exact`` and ``fused`` must be literals. Codes 0-3 lie in the 32 bits from the unit's first
    byte and codes 4-7 in the 32 bits from byte ``bits // 2``: two 4-byte loads, splat into the two
    halves of one 8-lane vector, shifted per lane, masked, converted and scaled: about 9 instructions per
    8 codes whatever the width. Those loads read up to 3 bytes past a 2-6-bit unit; ``exact`` reads the
    unit's ``bits`` bytes as one integer instead (for the units at the very end of ``w``).
    """
    if not (
        isinstance(bits, types.IntegerLiteral)
        and 2 <= bits.literal_value <= 8
        and isinstance(exact, types.BooleanLiteral)
        and isinstance(fused, types.BooleanLiteral)
        and isinstance(w, types.Array)
        and w.dtype == types.uint8
        and w.layout == "C"
        and isinstance(out, types.Array)
        and out.dtype == types.float32
        and out.layout == "C"
    ):
        return None
    b = bits.literal_value
    half = b // 2
    shifts = [b * i - (8 * half if i >= 4 else 0) for i in range(8)]

    def codegen(context, builder, sig, args):
        i32, i64 = ir.IntType(32), ir.IntType(64)
        v32, vf = ir.VectorType(i32, 8), ir.VectorType(ir.FloatType(), 8)
        wty, offty, outty, kty, sty, zty = sig.args[:6]
        w_arr = context.make_array(wty)(context, builder, args[0])
        out_arr = context.make_array(outty)(context, builder, args[2])
        src = builder.gep(w_arr.data, [context.cast(builder, args[1], offty, types.intp)])
        if exact.literal_value:
            word = builder.load(builder.bitcast(src, ir.IntType(8 * b).as_pointer()), align=1)
            if b < 8:
                word = builder.zext(word, i64)
            lo = builder.trunc(word, i32)
            hi = builder.trunc(builder.lshr(word, ir.Constant(i64, 8 * half)), i32)
        else:
            lo = builder.load(builder.bitcast(src, i32.as_pointer()), align=1)
            src_hi = builder.gep(src, [ir.Constant(i64, half)])
            hi = builder.load(builder.bitcast(src_hi, i32.as_pointer()), align=1)

        def splat(value, vty):
            undef = ir.Constant(vty, ir.Undefined)
            one = builder.insert_element(undef, value, ir.Constant(i32, 0))
            return builder.shuffle_vector(one, undef, ir.Constant(v32, [0] * 8))

        upper = ir.Constant(ir.VectorType(ir.IntType(1), 8), [0, 0, 0, 0, 1, 1, 1, 1])
        words = builder.select(upper, splat(hi, v32), splat(lo, v32))
        if any(shifts):
            words = builder.lshr(words, ir.Constant(v32, shifts))
        codes = builder.sitofp(builder.and_(words, ir.Constant(v32, [(1 << b) - 1] * 8)), vf)
        ss = splat(context.cast(builder, args[4], sty, types.float32), vf)
        zs = splat(context.cast(builder, args[5], zty, types.float32), vf)
        if fused.literal_value:
            contract = ("contract",)  # an FMA where the target has one
            vals = builder.fadd(builder.fmul(codes, ss, flags=contract), zs, flags=contract)
        else:  # no fast-math flags: the reference's rounding of (code - z) * s
            vals = builder.fmul(builder.fsub(codes, zs), ss)
        dst = builder.gep(out_arr.data, [context.cast(builder, args[3], kty, types.intp)])
        builder.store(vals, builder.bitcast(dst, vf.as_pointer()), align=4)
        return context.get_dummy_value()

    return types.none(w, off, out, k, s, z, bits, exact, fused), codegen


_decode_unit: Any = intrinsic(_decode_unit_typer)


@_jit_inline
def _decode_groups(w, bits, n, scales, zeros, asym, zc, ug, out, k0, checked, fast, fused):
    """The whole units of row ``n`` (``ug`` per scale group); with ``checked`` (a literal) units from
    ``fast`` on load exactly."""
    rb = w.shape[1]
    for g in range(scales.shape[1]):
        s = scales[n, g]
        z = np.float32(zeros[n, g]) if asym else zc
        if fused:
            z = -z * s
        for u in range(ug):
            j = g * ug + u
            if not checked or j < fast:
                _decode_unit(w, n * rb + bits * j, out, k0 + 8 * j, s, z, bits, False, fused)
            else:
                _decode_unit(w, n * rb + bits * j, out, k0 + 8 * j, s, z, bits, True, fused)


@_jit_inline
def _decode_row(w, bits, n, scales, zeros, asym, zc, gs, out, k0, fused):
    """Dequantise row ``n`` of ``w`` into ``out[k0:k0+K]`` (inlined where ``bits`` is a literal)."""
    rb = w.shape[1]
    nu = rb // bits  # whole units; a 2/4/8-bit row may end in a partial one (per-channel scales then)
    room = w.shape[0] * rb - 8 - n * rb  # the 4-byte loads of unit j end before byte bits * j + 8
    fast = min(nu, room // bits + 1) if room >= 0 else 0
    if fast == nu and gs == 32:  # the usual group size, unrolled
        _decode_groups(w, bits, n, scales, zeros, asym, zc, 4, out, k0, False, fast, fused)
    elif fast == nu:
        _decode_groups(w, bits, n, scales, zeros, asym, zc, gs // 8, out, k0, False, fast, fused)
    else:
        _decode_groups(w, bits, n, scales, zeros, asym, zc, gs // 8, out, k0, True, fast, fused)
    mask = (1 << bits) - 1
    for t in range((8 * rb) // bits - 8 * nu):
        e = 8 * nu + t
        z = np.float32(zeros[n, 0]) if asym else zc
        code = (np.int32(w[n, (e * bits) >> 3]) >> ((e * bits) & 7)) & mask
        out[k0 + e] = (np.float32(code) - z) * scales[n, 0]


@_jit_inline
def _tile_6x2(x, tile, nr, bias, has_bias, out, n0):
    """``out[:, n0:n0+nr] = x @ tile[:nr].T (+ bias)``, 6 weight rows x 2 input rows per pass over K.

    Twelve scalar accumulators, which LLVM vectorises along K into twelve ymm registers: 8 loads per 12
    FMAs (one weight row against many input rows, the obvious loop, is 2 loads per FMA). Weight rows past
    ``nr`` are recomputed and stored again, with the same value; an odd last input row takes a 6 x 1 pass.
    """
    m_rows, k_cols = x.shape
    r1 = min(1, nr - 1)
    r2 = min(2, nr - 1)
    r3 = min(3, nr - 1)
    r4 = min(4, nr - 1)
    r5 = min(5, nr - 1)
    for p in range(m_rows // 2):
        q0 = 2 * p
        q1 = q0 + 1
        a00 = a01 = a10 = a11 = a20 = a21 = np.float32(0.0)
        a30 = a31 = a40 = a41 = a50 = a51 = np.float32(0.0)
        for k in range(k_cols):
            x0 = x[q0, k]
            x1 = x[q1, k]
            t = tile[0, k]
            a00 += t * x0
            a01 += t * x1
            t = tile[r1, k]
            a10 += t * x0
            a11 += t * x1
            t = tile[r2, k]
            a20 += t * x0
            a21 += t * x1
            t = tile[r3, k]
            a30 += t * x0
            a31 += t * x1
            t = tile[r4, k]
            a40 += t * x0
            a41 += t * x1
            t = tile[r5, k]
            a50 += t * x0
            a51 += t * x1
        # clamped duplicates first, so the last store of each element is its own
        _store6(out, q1, n0, r1, r2, r3, r4, r5, a01, a11, a21, a31, a41, a51, bias, has_bias)
        _store6(out, q0, n0, r1, r2, r3, r4, r5, a00, a10, a20, a30, a40, a50, bias, has_bias)
    if m_rows % 2:  # the odd last input row: 6 x 1
        q0 = m_rows - 1
        a00 = a10 = a20 = a30 = a40 = a50 = np.float32(0.0)
        for k in range(k_cols):
            x0 = x[q0, k]
            a00 += tile[0, k] * x0
            a10 += tile[r1, k] * x0
            a20 += tile[r2, k] * x0
            a30 += tile[r3, k] * x0
            a40 += tile[r4, k] * x0
            a50 += tile[r5, k] * x0
        _store6(out, q0, n0, r1, r2, r3, r4, r5, a00, a10, a20, a30, a40, a50, bias, has_bias)


@_jit_inline
def _store6(out, m, n0, r1, r2, r3, r4, r5, a0, a1, a2, a3, a4, a5, bias, has_bias):
    if has_bias:
        out[m, n0 + r5] = a5 + bias[n0 + r5]
        out[m, n0 + r4] = a4 + bias[n0 + r4]
        out[m, n0 + r3] = a3 + bias[n0 + r3]
        out[m, n0 + r2] = a2 + bias[n0 + r2]
        out[m, n0 + r1] = a1 + bias[n0 + r1]
        out[m, n0] = a0 + bias[n0]
    else:
        out[m, n0 + r5] = a5
        out[m, n0 + r4] = a4
        out[m, n0 + r3] = a3
        out[m, n0 + r2] = a2
        out[m, n0 + r1] = a1
        out[m, n0] = a0


@_jit_inline
def _blocked(x, w, scales, zeros, asym, zc, gs, bits, bias, has_bias, out, n0, n1):
    k_cols = x.shape[1]
    flat = np.empty(_BLOCK * k_cols, np.float32)
    tile = flat.reshape(_BLOCK, k_cols)
    for b in range((n1 - n0 + _BLOCK - 1) // _BLOCK):
        nb = n0 + _BLOCK * b
        nr = min(_BLOCK, n1 - nb)
        for r in range(nr):
            _decode_row(w, bits, nb + r, scales, zeros, asym, zc, gs, flat, r * k_cols, True)
        _tile_6x2(x, tile, nr, bias, has_bias, out, nb)


@_jit
def _rows_blocked(x, w, scales, zeros, asym, zc, gs, bits, bias, has_bias, out, n0, n1):
    """Rows ``n0:n1`` of ``out`` on the tile path: weight rows decoded :data:`_BLOCK` at a time."""
    if bits == 2:
        _blocked(x, w, scales, zeros, asym, zc, gs, 2, bias, has_bias, out, n0, n1)
    elif bits == 3:
        _blocked(x, w, scales, zeros, asym, zc, gs, 3, bias, has_bias, out, n0, n1)
    elif bits == 4:
        _blocked(x, w, scales, zeros, asym, zc, gs, 4, bias, has_bias, out, n0, n1)
    elif bits == 5:
        _blocked(x, w, scales, zeros, asym, zc, gs, 5, bias, has_bias, out, n0, n1)
    elif bits == 6:
        _blocked(x, w, scales, zeros, asym, zc, gs, 6, bias, has_bias, out, n0, n1)
    elif bits == 7:
        _blocked(x, w, scales, zeros, asym, zc, gs, 7, bias, has_bias, out, n0, n1)
    else:
        _blocked(x, w, scales, zeros, asym, zc, gs, 8, bias, has_bias, out, n0, n1)


@_jit_inline
def _dequant_rows(w, scales, zeros, asym, zc, gs, bits, out, n0, n1):
    flat = out.reshape(-1)
    k_cols = out.shape[1]
    for i in range(n1 - n0):
        _decode_row(w, bits, n0 + i, scales, zeros, asym, zc, gs, flat, (n0 + i) * k_cols, False)


@_jit
def _dequantize_rows(w, scales, zeros, asym, zc, gs, bits, out, n0, n1):
    if bits == 2:
        _dequant_rows(w, scales, zeros, asym, zc, gs, 2, out, n0, n1)
    elif bits == 3:
        _dequant_rows(w, scales, zeros, asym, zc, gs, 3, out, n0, n1)
    elif bits == 4:
        _dequant_rows(w, scales, zeros, asym, zc, gs, 4, out, n0, n1)
    elif bits == 5:
        _dequant_rows(w, scales, zeros, asym, zc, gs, 5, out, n0, n1)
    elif bits == 6:
        _dequant_rows(w, scales, zeros, asym, zc, gs, 6, out, n0, n1)
    elif bits == 7:
        _dequant_rows(w, scales, zeros, asym, zc, gs, 7, out, n0, n1)
    else:
        _dequant_rows(w, scales, zeros, asym, zc, gs, 8, out, n0, n1)


@_jit_parallel
def dequantize_parallel(w, scales, zeros, asym, zc, gs, bits, out, chunks):
    """The float32 weight ``out[N, K]``, any width (same arithmetic as the torch reference: bit-identical)."""
    n_rows = w.shape[0]
    chunks = max(1, min(n_rows, chunks))
    step = (n_rows + chunks - 1) // chunks
    for c in prange(chunks):
        n0 = c * step
        _dequantize_rows(w, scales, zeros, asym, zc, gs, bits, out, n0, min(n_rows, n0 + step))


@_jit_parallel
def _blocked_parallel(x, w, scales, zeros, asym, zc, gs, bits, bias, has_bias, out, chunks):
    """The tile path over about ``chunks`` slices of the output features (whole tiles each) in parallel."""
    n_rows = w.shape[0]
    step = _BLOCK * ((n_rows + _BLOCK * chunks - 1) // (_BLOCK * chunks))
    for c in prange((n_rows + step - 1) // step):
        n0 = c * step
        _rows_blocked(
            x, w, scales, zeros, asym, zc, gs, bits, bias, has_bias, out, n0, min(n_rows, n0 + step)
        )


# --- entry points ---------------------------------------------------------------------------------
@_jit
def _linear_rows(x, w, scales, zeros, asym, zc, gs, cbits, bias, has_bias, out, n0, n1):
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
def linear_serial(x, w, scales, zeros, asym, zc, gs, cbits, bias, has_bias, out):
    """``out = x @ dequant(W).T + b`` for 8-, 4- or 2-bit ``w``, one thread."""
    if x.shape[0] > DIRECT_MAX_ROWS:
        _rows_blocked(x, w, scales, zeros, asym, zc, gs, cbits, bias, has_bias, out, 0, w.shape[0])
    else:
        _linear_rows(x, w, scales, zeros, asym, zc, gs, cbits, bias, has_bias, out, 0, w.shape[0])


@_jit_parallel
def linear_parallel(x, w, scales, zeros, asym, zc, gs, cbits, bias, has_bias, out, chunks):
    """:func:`linear_serial` over ``chunks`` slices of the output features in parallel."""
    n_rows = w.shape[0]
    per_byte = 8 // cbits
    chunks = max(1, min(n_rows, chunks))
    if x.shape[0] > DIRECT_MAX_ROWS:
        _blocked_parallel(x, w, scales, zeros, asym, zc, gs, cbits, bias, has_bias, out, chunks)
        return
    step = (n_rows + chunks - 1) // chunks
    # activations are rearranged once here, not once per chunk
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


# --- direct: one row of dense 3-bit codes (the segment trick) -------------------------------------
@_jit_inline
def _segment_start(bits, b, k):
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
def _dense_segments(x, bits):
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
def _dense_direct(xd, xsum, w, scales, zeros, asym, zc, gs, bits, bias, has_bias, out, n0, n1):
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
def _group_total(t, xsum, scales, zeros, asym, zc, gs, n, m):
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
def _rows_dense_direct(xd, xsum, w, scales, zeros, asym, zc, gs, bits, bias, has_bias, out, n0, n1):
    # only widths up to DENSE_DIRECT_MAX_BITS come here
    _dense_direct(xd, xsum, w, scales, zeros, asym, zc, gs, 3, bias, has_bias, out, n0, n1)


@_jit
def dense_linear_serial(x, w, scales, zeros, asym, zc, gs, bits, bias, has_bias, out):
    """``out = x @ dequant(W).T + b`` for densely packed 3/5/6/7-bit ``w``, one thread."""
    n_rows = w.shape[0]
    if x.shape[0] > DIRECT_MAX_ROWS or bits > DENSE_DIRECT_MAX_BITS:
        _rows_blocked(x, w, scales, zeros, asym, zc, gs, bits, bias, has_bias, out, 0, n_rows)
        return
    xsum = _group_sums(x, scales.shape[1], gs)
    xd = _dense_segments(x, bits)
    _rows_dense_direct(xd, xsum, w, scales, zeros, asym, zc, gs, bits, bias, has_bias, out, 0, n_rows)


@_jit_parallel
def dense_linear_parallel(x, w, scales, zeros, asym, zc, gs, bits, bias, has_bias, out, chunks):
    """:func:`dense_linear_serial` over ``chunks`` slices of the output features in parallel."""
    n_rows = w.shape[0]
    chunks = max(1, min(n_rows, chunks))
    if x.shape[0] > DIRECT_MAX_ROWS or bits > DENSE_DIRECT_MAX_BITS:
        _blocked_parallel(x, w, scales, zeros, asym, zc, gs, bits, bias, has_bias, out, chunks)
        return
    step = (n_rows + chunks - 1) // chunks
    xsum = _group_sums(x, scales.shape[1], gs)
    xd = _dense_segments(x, bits)
    for c in prange(chunks):
        n0 = c * step
        n1 = min(n_rows, n0 + step)
        _rows_dense_direct(xd, xsum, w, scales, zeros, asym, zc, gs, bits, bias, has_bias, out, n0, n1)


# --- warm-up ----------------------------------------------------------------------------------------
ENTRIES = (
    "linear_serial",
    "linear_parallel",
    "dense_linear_serial",
    "dense_linear_parallel",
    "dequantize_parallel",
)
"""The functions the layer kernels call (``kernels._linear_kernels``): what :func:`warm_up` prepares."""


def warm_up(
    widths: Sequence[int] = (2, 3, 4, 5, 6, 8),
    *,
    threads: int = 1,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Compile every entry point once in this process, or load it from numba's on-disk cache.

    The first call of a numba function compiles it (minutes for these kernels on a busy machine); with
    ``cache=True`` the machine code is written next to this file (or numba's cache directory) and a later
    process loads it in well under a second per function, as long as this file is unchanged. Calling this
    where a process starts (an evaluator's ``setup``) keeps that cost out of the first measurement and out
    of any per-trial time limit. Runs a small quantized layer of each width through the one-row, few-row
    and decoded-weight paths (and, with ``threads > 1``, the parallel ones) on the real dispatch path.

    Args:
        widths: the bit-widths to prepare (the dense 3/5/6/7-bit kernels specialise per width).
        threads: torch threads the caller will run with (more than one also prepares the parallel kernels).
        progress: called with a line before and after (default: printed to stderr).

    Returns:
        ``{"seconds": ..., "compiled": [...], "cached": [...], "cache_dir": ...}``: which entry points were
        compiled here and which were loaded from the on-disk cache.
    """
    import sys
    import time

    import torch

    from frontier.kernels import WeightOnlyQuantConfig, apply_

    def say(line: str) -> None:
        if progress is not None:
            progress(line)
        else:
            print(line, file=sys.stderr, flush=True)

    module = sys.modules[__name__]
    entries = [getattr(module, name) for name in ENTRIES]
    cache_dir = str(entries[0].stats.cache_path)
    say(f"frontier: preparing the numba CPU kernels (compiled once per machine, cached in {cache_dir})")
    start = time.monotonic()
    old = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        # 512 x 1024 weights at 2 bits exceed the serial cut-off (_linear_kernels.SERIAL_MAX_BYTES);
        # 64 x 64 stay under it.
        shapes = [(64, 64)] + ([(512, 1024)] if threads > 1 else [])
        with torch.inference_mode():
            for bits in widths:
                for in_features, out_features in shapes:
                    layer: torch.nn.Module = torch.nn.Sequential(torch.nn.Linear(in_features, out_features))
                    config = WeightOnlyQuantConfig(bits, group_size=32, symmetric=True)
                    layer = apply_(layer, config, targets="0")
                    for rows in (1, 16, 64):  # direct, blocked tile, decoded weight + matmul
                        layer(torch.randn(rows, in_features))
    finally:
        torch.set_num_threads(old)
    seconds = time.monotonic() - start
    compiled = [
        name for name, fn in zip(ENTRIES, entries, strict=True) if sum(fn.stats.cache_misses.values())
    ]
    cached = [name for name, fn in zip(ENTRIES, entries, strict=True) if sum(fn.stats.cache_hits.values())]
    say(
        f"frontier: numba CPU kernels ready in {seconds:.1f} s (compiled here: {compiled or 'none'}; loaded "
        f"from the cache: {cached or 'none'})"
    )
    return {"seconds": seconds, "compiled": compiled, "cached": cached, "cache_dir": cache_dir}
