"""Weight-only quantization: the config, the integer grid, and bit packing.

Codes are stored *unsigned* ("offset binary") for every mode, so one packed format and one set of kernels
serve symmetric and asymmetric weights alike::

    w ~= (code - zero_point) * scale      code in [0, 2**bits - 1]

Symmetric weights use the fixed zero point ``2**(bits-1)`` (not stored) and codes in
``[zp - (2**(bits-1) - 1), zp + 2**(bits-1) - 1]``; asymmetric weights store one uint8 zero point per
scale. Either way 0.0 is exactly representable, so zeroed (pruned) weights stay exactly zero.

Packing is dense: a ``bits``-bit code takes exactly ``bits`` bits of storage. Each row of codes is one
little-endian bit stream in which code ``i`` starts at bit ``i * bits`` (bit ``k`` of the stream is bit
``k % 8`` of byte ``k // 8``), so every 8 consecutive codes fill exactly ``bits`` bytes. For 8-, 4- and
2-bit codes that is one, two or four codes per byte, lowest bits first, and no code crosses a byte; 3-, 5-,
6- and 7-bit codes do cross bytes, and rows of them are packed in whole groups of 8 codes (``in_features``
a multiple of 8).
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass

import torch

from frontier.kernels._config import CompressionConfig, Stage
from frontier.kernels._validation import check_bool, check_int, param_error

_OWNER = "WeightOnlyQuantConfig"


@dataclass(frozen=True)
class WeightOnlyQuantConfig(CompressionConfig):
    """Quantize ``nn.Linear`` weights to ``bits`` and store them packed; activations stay float.

    Applying it replaces each targeted ``nn.Linear`` with a :class:`~kernels.QuantizedLinear`.

    Args:
        bits: 2..8; each code is stored in exactly ``bits`` bits (3-bit weights take 3/8 of a byte). 3-, 5-,
            6- and 7-bit codes are packed 8 to every ``bits`` bytes, so they need ``in_features`` a
            multiple of 8.
        group_size: ``None`` for one scale per output channel, else the number of consecutive input
            features sharing a scale: a multiple of 8, and it must divide each target's ``in_features``.
        symmetric: symmetric grid around zero (no stored zero point) or min/max grid with a uint8 zero
            point per scale.
    """

    bits: int = 8
    _: KW_ONLY
    group_size: int | None = None
    symmetric: bool = True

    STAGE = Stage.QUANTIZATION

    def __post_init__(self) -> None:
        check_int(_OWNER, "bits", self.bits, low=2, high=8)
        if self.group_size is not None:
            check_int(_OWNER, "group_size", self.group_size, low=8)
            if self.group_size % 8:
                raise param_error(_OWNER, "group_size", "None or a multiple of 8", self.group_size)
        check_bool(_OWNER, "symmetric", self.symmetric)


def codes_per_unit(bits: int) -> int:
    """Codes in the smallest whole-byte unit of a packed row: 8 // bits for 2, 4 and 8 bits, else 8."""
    return 8 // bits if 8 % bits == 0 else 8


def packed_row_bytes(in_features: int, bits: int) -> int:
    """Bytes one packed row of ``in_features`` codes takes: exactly ``in_features * bits / 8``."""
    return in_features * bits // 8


def check_layer_shape(
    in_features: int, *, bits: int, group_size: int | None, module: str = "the layer"
) -> None:
    """Reject ``in_features`` that the packed format cannot hold."""
    unit = codes_per_unit(bits)
    if in_features % unit:
        how = f"{unit} per byte" if unit * bits == 8 else f"{unit} to every {bits} bytes"
        raise ValueError(
            f"{bits}-bit codes are packed {how} along in_features, so in_features of {module} "
            f"must be a multiple of {unit}. Got {in_features} instead. "
            "Pick another bit width for it (8 bits packs any in_features), or leave it unquantized."
        )
    if group_size is not None and in_features % group_size:
        raise param_error(
            _OWNER,
            "group_size",
            f"a divisor of in_features of {module} (in_features={in_features})",
            group_size,
            fix="Pick a group_size that divides in_features, or None for per-channel scales.",
        )


def quantize_weight(
    weight: torch.Tensor, *, bits: int, group_size: int | None, symmetric: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Round a 2-D weight onto the integer grid.

    Returns:
        ``(codes, scales, zero_points)``: uint8 codes ``[out, in]`` (unpacked), float32 scales
        ``[out, groups]`` and uint8 zero points ``[out, groups]`` (``None`` when symmetric).
    """
    if weight.dim() != 2:
        raise ValueError(f"quantize_weight expects a 2-D weight. Got shape {tuple(weight.shape)} instead.")
    out_f, in_f = weight.shape
    gs = in_f if group_size is None else group_size
    check_layer_shape(in_f, bits=bits, group_size=group_size)
    w = weight.detach().to(torch.float32).reshape(out_f, in_f // gs, gs)
    levels = 2**bits - 1
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        absmax = w.abs().amax(dim=-1)
        scales = torch.where(absmax > 0, absmax / qmax, torch.ones_like(absmax))
        q = torch.clamp(torch.round(w / scales.unsqueeze(-1)), -qmax, qmax) + 2 ** (bits - 1)
        zero_points = None
    else:
        lo = w.amin(dim=-1).clamp(max=0.0)
        hi = w.amax(dim=-1).clamp(min=0.0)
        scales = (hi - lo) / levels
        scales = torch.where(scales > 0, scales, torch.ones_like(scales))
        zp = torch.clamp(torch.round(-lo / scales), 0, levels)
        q = torch.clamp(torch.round(w / scales.unsqueeze(-1)) + zp.unsqueeze(-1), 0, levels)
        zero_points = zp.to(torch.uint8)
    codes = q.to(torch.uint8).reshape(out_f, in_f)
    return codes, scales.contiguous(), zero_points


def dequantize_codes(
    codes: torch.Tensor,
    scales: torch.Tensor,
    zero_points: torch.Tensor | None,
    *,
    bits: int,
) -> torch.Tensor:
    """The reference inverse of :func:`quantize_weight`: float32 ``(code - zero_point) * scale``."""
    out_f, in_f = codes.shape
    groups = scales.shape[1]
    c = codes.to(torch.float32).reshape(out_f, groups, in_f // groups)
    if zero_points is None:
        z: torch.Tensor | float = float(2 ** (bits - 1))
    else:
        z = zero_points.to(torch.float32).unsqueeze(-1)
    return ((c - z) * scales.unsqueeze(-1)).reshape(out_f, in_f)


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack uint8 codes ``[rows, cols]`` densely along the last dim: uint8 ``[rows, cols * bits / 8]``.

    Code ``i`` of a row lands at bit ``i * bits`` of the row's little-endian bit stream (see the module
    docstring); ``cols`` must be a multiple of :func:`codes_per_unit`.
    """
    rows, cols = codes.shape
    unit = codes_per_unit(bits)
    if cols % unit:
        raise ValueError(
            f"Cannot pack {cols} columns of {bits}-bit codes: {cols} is not a multiple of {unit}."
        )
    if bits == 8:
        return codes.to(torch.uint8).contiguous()
    # a unit of `unit` codes is one integer (<= 56 bits), split into its `unit * bits / 8` bytes
    c = codes.to(torch.int64).reshape(rows, cols // unit, unit)
    shifts = torch.arange(unit, dtype=torch.int64, device=codes.device) * bits
    word = (c << shifts).sum(dim=-1, keepdim=True)
    nbytes = unit * bits // 8
    byte_shifts = torch.arange(nbytes, dtype=torch.int64, device=codes.device) * 8
    return ((word >> byte_shifts) & 0xFF).to(torch.uint8).reshape(rows, cols * bits // 8).contiguous()


def unpack_codes(packed: torch.Tensor, bits: int, cols: int) -> torch.Tensor:
    """Inverse of :func:`pack_codes`: uint8 codes ``[rows, cols]``."""
    if bits == 8:
        return packed
    rows = packed.shape[0]
    unit = codes_per_unit(bits)
    nbytes = unit * bits // 8
    word = packed.to(torch.int64).reshape(rows, cols // unit, nbytes)
    if nbytes > 1:
        byte_shifts = torch.arange(nbytes, dtype=torch.int64, device=packed.device) * 8
        word = (word << byte_shifts).sum(dim=-1, keepdim=True)
    shifts = torch.arange(unit, dtype=torch.int64, device=packed.device) * bits
    return ((word >> shifts) & (2**bits - 1)).to(torch.uint8).reshape(rows, cols)
