"""Weight-only quantization: the config, the integer grid, and bit packing.

Codes are stored *unsigned* ("offset binary") for every mode, so one packed format and one set of kernels
serve symmetric and asymmetric weights alike::

    w ~= (code - zero_point) * scale      code in [0, 2**bits - 1]

Symmetric weights use the fixed zero point ``2**(bits-1)`` (not stored) and codes in
``[zp - (2**(bits-1) - 1), zp + 2**(bits-1) - 1]``; asymmetric weights store one uint8 zero point per
scale. Either way 0.0 is exactly representable, so zeroed (pruned) weights stay exactly zero.

Containers: 8-bit codes (and 5/6/7-bit ones) take one byte each; 4-bit (and 3-bit) codes two per byte;
2-bit codes four per byte. Element ``i`` of a row sits in byte ``i // per_byte`` at bit offset
``(i % per_byte) * container_bits`` (lowest bits first).
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass

import torch

from kernels._config import CompressionConfig, Stage
from kernels._validation import check_bool, check_int, param_error

_OWNER = "WeightOnlyQuantConfig"


@dataclass(frozen=True)
class WeightOnlyQuantConfig(CompressionConfig):
    """Quantize ``nn.Linear`` weights to ``bits`` and store them packed; activations stay float.

    Applying it replaces each targeted ``nn.Linear`` with a :class:`~kernels.QuantizedLinear`.

    Args:
        bits: 2..8. 8-, 4- and 2-bit codes fill their container; 3-bit codes are stored in the 4-bit
            container and 5/6/7-bit codes in the 8-bit one (so they save no bytes over 4 or 8 bits).
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


def container_bits(bits: int) -> int:
    """Bits of storage per code: 8 for 5..8-bit codes, 4 for 3..4-bit, 2 for 2-bit."""
    return 8 if bits > 4 else 4 if bits > 2 else 2


def check_layer_shape(
    in_features: int, *, bits: int, group_size: int | None, module: str = "the layer"
) -> None:
    """Reject ``in_features`` that the packed format cannot hold."""
    per_byte = 8 // container_bits(bits)
    if in_features % per_byte:
        raise ValueError(
            f"{bits}-bit codes are packed {per_byte} per byte along in_features, so in_features of {module} "
            f"must be a multiple of {per_byte}. Got {in_features} instead."
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
    """Pack uint8 codes ``[rows, cols]`` into ``bits``' container along the last dim (lowest bits first)."""
    cb = container_bits(bits)
    if cb == 8:
        return codes.to(torch.uint8).contiguous()
    per_byte = 8 // cb
    rows, cols = codes.shape
    if cols % per_byte:
        raise ValueError(
            f"Cannot pack {cols} columns {per_byte} per byte: {cols} is not a multiple of {per_byte}."
        )
    c = codes.to(torch.int32).reshape(rows, cols // per_byte, per_byte)
    shifts = torch.arange(per_byte, dtype=torch.int32, device=codes.device) * cb
    return (c << shifts).sum(dim=-1).to(torch.uint8).contiguous()


def unpack_codes(packed: torch.Tensor, bits: int, cols: int) -> torch.Tensor:
    """Inverse of :func:`pack_codes`: uint8 codes ``[rows, cols]``."""
    cb = container_bits(bits)
    if cb == 8:
        return packed
    per_byte = 8 // cb
    shifts = torch.arange(per_byte, dtype=torch.int32, device=packed.device) * cb
    c = (packed.to(torch.int32).unsqueeze(-1) >> shifts) & (2**cb - 1)
    return c.reshape(packed.shape[0], cols).to(torch.uint8)
