"""Size accounting from the bytes actually stored: what ``state_dict`` holds, each tensor counted once."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from frontier.kernels._masks import MASK_BUFFER, get_mask
from frontier.kernels._qlinear import QuantizedLinear, is_linear_like
from frontier.kernels._select import select_modules

_CATEGORY = {
    "weight": "weight",
    "weight_packed": "weight",
    "scales": "scale",
    "zero_points": "zero_point",
    MASK_BUFFER: "mask",
}


@dataclass(frozen=True)
class ModuleSize:
    """Bytes one module stores directly (not its children), by role.

    Attributes:
        weight_bytes: float ``weight`` or packed ``weight_packed`` codes.
        scale_bytes: quantization scales.
        zero_point_bytes: quantization zero points.
        mask_bytes: sparsity masks.
        other_bytes: everything else in the state dict (biases, norms, embeddings' extra tables, ...).
    """

    weight_bytes: int = 0
    scale_bytes: int = 0
    zero_point_bytes: int = 0
    mask_bytes: int = 0
    other_bytes: int = 0

    @property
    def total_bytes(self) -> int:
        return (
            self.weight_bytes + self.scale_bytes + self.zero_point_bytes + self.mask_bytes + self.other_bytes
        )


def _stored_tensors(module: nn.Module) -> list[tuple[str, torch.Tensor]]:
    out: list[tuple[str, torch.Tensor]] = [(n, p) for n, p in module._parameters.items() if p is not None]
    out += [
        (n, b)
        for n, b in module._buffers.items()
        if b is not None and n not in module._non_persistent_buffers_set
    ]
    return out


def size_breakdown(model: nn.Module) -> dict[str, ModuleSize]:
    """Per-module stored bytes, keyed by qualified name, for modules that store any tensor.

    A tensor shared by several modules (tied embeddings) is counted once, under the first owner.
    """
    seen: set[tuple[int, int]] = set()
    out: dict[str, ModuleSize] = {}
    for name, module in model.named_modules():
        counts = dict.fromkeys(("weight", "scale", "zero_point", "mask", "other"), 0)
        for tname, tensor in _stored_tensors(module):
            key = (tensor.untyped_storage().data_ptr(), int(tensor.storage_offset()))
            if key in seen and tensor.numel():
                continue
            seen.add(key)
            counts[_CATEGORY.get(tname, "other")] += tensor.numel() * tensor.element_size()
        if any(counts.values()):
            out[name] = ModuleSize(
                counts["weight"], counts["scale"], counts["zero_point"], counts["mask"], counts["other"]
            )
    return out


def model_size_bytes(model: nn.Module) -> int:
    """Total bytes ``model`` stores: packed weights, scales, zero points, masks, remaining float tensors."""
    return sum(s.total_bytes for s in size_breakdown(model).values())


def _targets(model: nn.Module, targets: str | Sequence[str] | None) -> dict[str, nn.Module]:
    if targets is None:
        return {n: m for n, m in model.named_modules() if is_linear_like(m)}
    return {n: m for n, m in select_modules(model, targets).items() if is_linear_like(m)}


def avg_bits(model: nn.Module, targets: str | Sequence[str] | None = None) -> float:
    """Weight bits per parameter, weighted by parameter count, over Linear-like ``targets`` (default: all).

    A QuantizedLinear counts its nominal ``bits`` (scales and zero points are in :func:`size_breakdown`);
    a float Linear counts its dtype width (32 for float32).
    """
    total_bits = 0
    total_params = 0
    for module in _targets(model, targets).values():
        if isinstance(module, QuantizedLinear):
            params, bits = module.in_features * module.out_features, module.bits
        else:
            weight = module.weight
            assert isinstance(weight, torch.Tensor)
            params, bits = weight.numel(), weight.element_size() * 8
        total_bits += params * bits
        total_params += params
    if not total_params:
        raise ValueError(f"avg_bits found no Linear module among targets {targets!r}.")
    return total_bits / total_params


@torch.no_grad()
def sparsity(model: nn.Module, targets: str | Sequence[str] | None = None) -> float:
    """Fraction of exactly-zero weights over Linear-like ``targets`` (default: all)."""
    zeros = 0
    total = 0
    for module in _targets(model, targets).values():
        weight = module.dequantize() if isinstance(module, QuantizedLinear) else module.weight
        assert isinstance(weight, torch.Tensor)
        zeros += int((weight == 0).sum())
        total += weight.numel()
    if not total:
        raise ValueError(f"sparsity found no Linear module among targets {targets!r}.")
    return zeros / total


def masked_fraction(
    model: nn.Module,
    targets: str | Sequence[str] | None = None,
    *,
    original: Mapping[str, int] | None = None,
) -> float:
    """Share of the weights that sparsity masks remove over Linear-like ``targets`` (default: all).

    Weighted by parameter count. Unlike :func:`sparsity`, weights that are zero only because they quantized
    to zero do not count: this is the sparsity a recipe *allocated*, the figure studies budget and report.
    With ``original`` (``{module name: weight count before compression}``, see :func:`weight_counts`),
    weights that structured pruning removed count as well, against the original count.
    """
    total = 0
    removed = 0.0
    for name, module in _targets(model, targets).items():
        n = weight_count(module)
        n0 = n if original is None else original.get(name, n)
        total += n0
        removed += (n0 - n) + mask_ratio(module) * n
    if not total:
        raise ValueError(f"masked_fraction found no Linear module among targets {targets!r}.")
    return removed / total


def weight_count(module: nn.Module) -> int:
    """``in_features * out_features`` of a Linear-like module (0 for anything else)."""
    return int(getattr(module, "in_features", 0)) * int(getattr(module, "out_features", 0))


def weight_counts(model: nn.Module, targets: str | Sequence[str] | None = None) -> dict[str, int]:
    """``{name: weight count}`` of the Linear-like ``targets``: what :func:`masked_fraction` compares a
    structurally pruned copy against."""
    return {name: weight_count(m) for name, m in _targets(model, targets).items()}


def mask_ratio(module: nn.Module) -> float:
    """Fraction of the module's weights its sparsity mask removes (0.0 without a mask)."""
    if isinstance(module, QuantizedLinear):
        shape: tuple[int, ...] = (module.out_features, module.in_features)
    else:
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor):
            return 0.0
        shape = tuple(weight.shape)
    mask = get_mask(module, shape)
    return 0.0 if mask is None else 1.0 - mask.float().mean().item()
