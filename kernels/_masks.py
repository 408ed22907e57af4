"""Sparsity masks kept next to the weights as a bit-packed ``weight_mask_bits`` buffer (1 bit per weight)."""

from __future__ import annotations

import torch
from torch import nn

MASK_BUFFER = "weight_mask_bits"
_BIT_WEIGHTS = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.int32)


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    """Bool mask -> uint8 bits, row-major, lowest bit first; the tail of the last byte is zero."""
    flat = mask.reshape(-1).to(torch.int32)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return (flat.reshape(-1, 8) * _BIT_WEIGHTS.to(flat.device)).sum(dim=1).to(torch.uint8)


def unpack_mask(bits: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`pack_mask`."""
    numel = 1
    for s in shape:
        numel *= s
    b = bits.to(torch.int32).unsqueeze(1) & _BIT_WEIGHTS.to(bits.device)
    return (b != 0).reshape(-1)[:numel].reshape(shape)


def mask_nbytes(numel: int) -> int:
    return (numel + 7) // 8


def get_mask(module: nn.Module, shape: torch.Size | tuple[int, ...]) -> torch.Tensor | None:
    """The module's keep-mask (True = kept) or ``None`` when it has none."""
    bits = getattr(module, MASK_BUFFER, None)
    return None if bits is None else unpack_mask(bits, shape)


def set_mask(module: nn.Module, mask: torch.Tensor) -> None:
    """Store ``mask`` on ``module`` (replacing any previous one)."""
    packed = pack_mask(mask)
    if MASK_BUFFER in module._buffers:
        module._buffers[MASK_BUFFER] = packed
    else:
        module.register_buffer(MASK_BUFFER, packed)


@torch.no_grad()
def reapply_masks(model: nn.Module) -> int:
    """Zero every masked weight again (e.g. after a fine-tuning step); returns the number of modules touched.

    Quantized layers need nothing: their masked weights are stored as exact zeros.
    """
    touched = 0
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.Tensor) and MASK_BUFFER in module._buffers:
            mask = unpack_mask(module._buffers[MASK_BUFFER], weight.shape)  # type: ignore[arg-type]
            weight.mul_(mask.to(weight.dtype))
            touched += 1
    return touched
