"""Unstructured and N:M sparsity for ``nn.Linear`` weights: magnitude, Wanda and N:M masks.

A mask is applied by zeroing the weights and is kept as a bit-packed ``weight_mask_bits`` buffer so that
:func:`~kernels.reapply_masks` can restore it after fine-tuning and size accounting can count it. Masks
compose: applying a second one keeps only weights both keep.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from typing import Literal

import torch
from torch import nn

from frontier.kernels._config import ApplyContext, CompressionConfig, Stage, register_handler
from frontier.kernels._masks import get_mask, set_mask
from frontier.kernels._qlinear import QuantizedLinear, is_linear_like
from frontier.kernels._validation import check_choice, check_int, check_ratio, param_error

Importance = Literal["magnitude", "activation"]


@dataclass(frozen=True)
class MagnitudeSparsityConfig(CompressionConfig):
    """Zero the ``ratio`` fraction of smallest-magnitude weights of each targeted Linear, layer-wide.

    Unstructured magnitude pruning (Han et al., "Learning both Weights and Connections for Efficient
    Neural Networks", NeurIPS 2015), one-shot, without retraining.

    Args:
        ratio: fraction of the layer's weights set to zero, in [0, 1).
    """

    ratio: float = 0.5

    STAGE = Stage.SPARSITY

    def __post_init__(self) -> None:
        check_ratio(type(self).__name__, "ratio", self.ratio)


@dataclass(frozen=True)
class WandaSparsityConfig(CompressionConfig):
    """Zero, in each output row, the ``ratio`` fraction of weights with the smallest ``|W_ij| * ||X_j||_2``.

    Wanda (Sun et al., "A Simple and Effective Pruning Approach for Large Language Models", ICLR 2024):
    weights scaled by the L2 norm of their input feature over calibration tokens, compared per output.
    Needs ``calibration=`` from :func:`~kernels.calibrate` covering every target.

    Args:
        ratio: fraction of each row's weights set to zero, in [0, 1).
    """

    ratio: float = 0.5

    STAGE = Stage.SPARSITY

    def __post_init__(self) -> None:
        check_ratio(type(self).__name__, "ratio", self.ratio)


@dataclass(frozen=True)
class NMSparsityConfig(CompressionConfig):
    """Keep ``n`` of every ``m`` consecutive weights along the input dimension (2:4 by default).

    The N:M pattern sparse tensor cores accelerate (Mishra et al., "Accelerating Sparse Deep Neural
    Networks", 2021). Within each group the ``n`` largest scores are kept.

    Args:
        n: weights kept per group, in [1, m - 1].
        m: group length; must divide each target's ``in_features``.
        importance: ``"magnitude"`` scores ``|W|``; ``"activation"`` scores ``|W| * ||X_j||_2`` (Wanda's
            metric) and needs ``calibration=``.
    """

    n: int = 2
    m: int = 4
    _: KW_ONLY
    importance: Importance = "magnitude"

    STAGE = Stage.SPARSITY

    def __post_init__(self) -> None:
        owner = type(self).__name__
        check_int(owner, "m", self.m, low=2, high=64)
        check_int(owner, "n", self.n, low=1)
        if self.n >= self.m:
            raise param_error(owner, "n", f"an int in [1, m - 1] = [1, {self.m - 1}]", self.n)
        check_choice(owner, "importance", self.importance, ("magnitude", "activation"))


# --- masks ----------------------------------------------------------------------------------------
def magnitude_mask(weight: torch.Tensor, ratio: float) -> torch.Tensor:
    """Keep-mask dropping exactly ``round(ratio * numel)`` smallest ``|weight|`` entries of the tensor."""
    k = round(ratio * weight.numel())
    mask = torch.ones(weight.numel(), dtype=torch.bool, device=weight.device)
    if k:
        mask[torch.topk(weight.detach().abs().reshape(-1).float(), k, largest=False).indices] = False
    return mask.reshape(weight.shape)


def row_mask(score: torch.Tensor, ratio: float) -> torch.Tensor:
    """Keep-mask dropping exactly ``round(ratio * cols)`` lowest scores in every row."""
    k = round(ratio * score.shape[1])
    mask = torch.ones_like(score, dtype=torch.bool)
    if k:
        mask.scatter_(1, torch.topk(score.float(), k, dim=1, largest=False).indices, False)
    return mask


def nm_mask(score: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep-mask with the ``n`` highest scores of every ``m`` consecutive entries of each row."""
    rows, cols = score.shape
    groups = score.float().reshape(rows, cols // m, m)
    mask = torch.zeros_like(groups, dtype=torch.bool)
    mask.scatter_(2, torch.topk(groups, n, dim=2).indices, True)
    return mask.reshape(rows, cols)


def wanda_score(weight: torch.Tensor, input_norms: torch.Tensor) -> torch.Tensor:
    return weight.detach().abs().float() * input_norms.to(weight.device, torch.float32).unsqueeze(0)


def input_norms_for(ctx: ApplyContext, owner: str, in_features: int) -> torch.Tensor:
    """Calibration norms of the module being compressed, or an error saying how to get them."""
    norms = None if ctx.calibration is None else ctx.calibration.get(ctx.name)
    if norms is None:
        raise ValueError(
            f"{owner} needs calibration input norms for module '{ctx.name}'. Pass "
            f"calibration=kernels.calibrate(model, batches, modules=[...]) to apply_, covering this module."
        )
    if norms.shape != (in_features,):
        raise ValueError(
            f"Calibration norms for module '{ctx.name}' must have shape ({in_features},) (its in_features). "
            f"Got {tuple(norms.shape)} instead; recalibrate on the current model."
        )
    return norms


# --- apply ----------------------------------------------------------------------------------------
def _as_linear(module: nn.Module, name: str) -> nn.Linear:
    if isinstance(module, QuantizedLinear):
        raise ValueError(
            f"Module '{name}' is already a QuantizedLinear: sparsity must be applied before quantization. "
            "Within one recipe apply_ orders them itself; across apply_ calls apply the sparsity config "
            "first."
        )
    assert isinstance(module, nn.Linear)  # guaranteed by the handler's ``accepts``
    return module


@torch.no_grad()
def apply_mask(module: nn.Linear, mask: torch.Tensor) -> nn.Linear:
    """Zero ``module``'s weights where ``mask`` is False and keep the (combined) mask on the module."""
    previous = get_mask(module, module.weight.shape)
    if previous is not None:
        mask = mask & previous
    module.weight.mul_(mask.to(module.weight.dtype))
    set_mask(module, mask)
    return module


@register_handler(MagnitudeSparsityConfig, accepts=is_linear_like)
def _magnitude(module: nn.Module, config: MagnitudeSparsityConfig, ctx: ApplyContext) -> nn.Module:
    linear = _as_linear(module, ctx.name)
    return apply_mask(linear, magnitude_mask(linear.weight, config.ratio))


@register_handler(WandaSparsityConfig, accepts=is_linear_like)
def _wanda(module: nn.Module, config: WandaSparsityConfig, ctx: ApplyContext) -> nn.Module:
    linear = _as_linear(module, ctx.name)
    norms = input_norms_for(ctx, "WandaSparsityConfig", linear.in_features)
    return apply_mask(linear, row_mask(wanda_score(linear.weight, norms), config.ratio))


@register_handler(NMSparsityConfig, accepts=is_linear_like)
def _nm(module: nn.Module, config: NMSparsityConfig, ctx: ApplyContext) -> nn.Module:
    linear = _as_linear(module, ctx.name)
    if linear.in_features % config.m:
        raise param_error(
            "NMSparsityConfig",
            "m",
            f"a divisor of in_features of '{ctx.name}' ({linear.in_features})",
            config.m,
        )
    if config.importance == "activation":
        score = wanda_score(linear.weight, input_norms_for(ctx, "NMSparsityConfig", linear.in_features))
    else:
        score = linear.weight.detach().abs()
    return apply_mask(linear, nm_mask(score, config.n, config.m))
