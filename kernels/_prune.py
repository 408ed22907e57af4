"""Structured pruning of BERT-style encoder layers: attention heads and FFN channels, physically removed.

A BERT-style layer is a module with ``attention.self.{query,key,value}``, ``attention.output.dense``,
``intermediate.dense`` and ``output.dense`` Linear layers (transformers' ``BertLayer`` and its many
copies: RoBERTa, MiniLM, ...). transformers 5.x no longer ships ``PreTrainedModel.prune_heads`` or
``find_pruneable_heads_and_indices`` (only ``pytorch_utils.prune_linear_layer``, which re-creates the
layer in the default dtype), so the projections are sliced here, keeping dtype and device.

Heads: rows of q/k/v and columns of the attention output projection. The attention module's
``num_attention_heads`` and ``all_head_size`` are updated, the removed original head indices are recorded in
``attention.pruned_heads`` and in ``model.config.pruned_heads`` (``{layer index: [heads]}``).
FFN: rows of ``intermediate.dense`` and columns of ``output.dense``; when every layer of the model ends up
with the same width, ``model.config.intermediate_size`` is updated too.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from typing import Any, Literal

import torch
from torch import nn

from frontier.kernels._config import ApplyContext, CompressionConfig, Stage, register_handler
from frontier.kernels._masks import get_mask, set_mask
from frontier.kernels._qlinear import QuantizedLinear
from frontier.kernels._validation import check_choice, check_int, check_ratio, param_error

_OWNER = "StructuredPruneConfig"


@dataclass(frozen=True)
class StructuredPruneConfig(CompressionConfig):
    """Remove attention heads and FFN channels from every BERT-style layer under the target module.

    Importance is either weight magnitude or, with calibration, activation-weighted (the Wanda metric
    summed over a head's or a channel's weights; cf. Michel et al., "Are Sixteen Heads Really Better than
    One?", NeurIPS 2019, for head pruning, and Sun et al., ICLR 2024, for the metric).

    Args:
        heads: attention heads removed from each layer (the lowest-importance ones); at least one stays.
        ffn_ratio: fraction of FFN intermediate channels removed from each layer, in [0, 1).
        importance: ``"magnitude"`` (weight norms) or ``"activation"`` (needs ``calibration=`` covering
            ``<layer>.attention.output.dense`` and ``<layer>.output.dense``).
        round_to: the kept FFN width is rounded to a multiple of this (e.g. a quantization group size).
    """

    heads: int = 0
    _: KW_ONLY
    ffn_ratio: float = 0.0
    importance: Literal["magnitude", "activation"] = "magnitude"
    round_to: int = 1

    STAGE = Stage.STRUCTURE

    def __post_init__(self) -> None:
        check_int(_OWNER, "heads", self.heads, low=0)
        check_ratio(_OWNER, "ffn_ratio", self.ffn_ratio)
        check_choice(_OWNER, "importance", self.importance, ("magnitude", "activation"))
        check_int(_OWNER, "round_to", self.round_to, low=1)


# a BERT-style layer's projections: what head pruning and FFN pruning cut
HEAD_PATHS = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense")
FFN_PATHS = ("intermediate.dense", "output.dense")


def cut_paths(config: StructuredPruneConfig) -> tuple[str, ...]:
    """The projections of each encoder layer that ``config`` shrinks (relative to the layer)."""
    return (HEAD_PATHS if config.heads else ()) + (FFN_PATHS if config.ffn_ratio else ())


def is_encoder_layer(module: nn.Module) -> bool:
    try:
        parts = [module.get_submodule(p) for p in (*HEAD_PATHS, *FFN_PATHS)]
    except AttributeError:
        return False
    return all(isinstance(p, nn.Linear | QuantizedLinear) for p in parts)


def contains_encoder_layer(module: nn.Module) -> bool:
    return any(is_encoder_layer(m) for m in module.modules())


@torch.no_grad()
def slice_linear(linear: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """A new Linear keeping ``index`` along ``dim`` of the weight (0: outputs, 1: inputs); dtype kept."""
    weight = linear.weight.index_select(dim, index.to(linear.weight.device))
    out_f, in_f = weight.shape
    new = nn.Linear(in_f, out_f, bias=linear.bias is not None, device=weight.device, dtype=weight.dtype)
    new.weight.copy_(weight)
    if linear.bias is not None:
        assert new.bias is not None
        new.bias.copy_(linear.bias if dim == 1 else linear.bias[index.to(linear.bias.device)])
    new.weight.requires_grad_(linear.weight.requires_grad)
    mask = get_mask(linear, linear.weight.shape)
    if mask is not None:
        set_mask(new, mask.index_select(dim, index.to(mask.device)))
    return new


def _linear(layer: nn.Module, path: str, name: str) -> nn.Linear:
    module = layer.get_submodule(path)
    if isinstance(module, QuantizedLinear):
        raise ValueError(
            f"Module '{name}.{path}' is already quantized: structured pruning must come before quantization. "
            "Within one recipe apply_ orders them itself; across apply_ calls prune first."
        )
    assert isinstance(module, nn.Linear)
    return module


def _norms(ctx: ApplyContext, name: str, width: int) -> torch.Tensor:
    norms = None if ctx.calibration is None else ctx.calibration.get(name)
    if norms is None or norms.shape != (width,):
        got = "none" if norms is None else f"shape {tuple(norms.shape)}"
        raise ValueError(
            "StructuredPruneConfig(importance='activation') needs calibration input norms of shape "
            f"({width},) "
            f"for '{name}'. Got {got} instead. Pass calibration=kernels.calibrate(model, batches) to apply_."
        )
    return norms.float()


def _top(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Indices of the ``keep`` highest scores, ascending (order-preserving slices)."""
    return torch.topk(scores, keep).indices.sort().values


def _prune_heads(layer: nn.Module, name: str, config: StructuredPruneConfig, ctx: ApplyContext) -> None:
    attn: Any = layer.get_submodule("attention.self")
    q, k, v = (_linear(layer, f"attention.self.{p}", name) for p in ("query", "key", "value"))
    out = _linear(layer, "attention.output.dense", name)
    n_heads, head_dim = int(attn.num_attention_heads), int(attn.attention_head_size)
    if config.heads >= n_heads:
        raise param_error(
            _OWNER,
            "heads",
            f"less than the {n_heads} attention heads left in '{name}' (at least one must stay)",
            config.heads,
        )
    out_name = f"{name}.attention.output.dense"
    w_out = out.weight.detach().float().reshape(out.out_features, n_heads, head_dim)
    if config.importance == "activation":
        norms = _norms(ctx, out_name, n_heads * head_dim).reshape(n_heads, head_dim)
        scores = (w_out.norm(dim=0) * norms).sum(dim=1)
    else:
        scores = w_out.pow(2).sum(dim=(0, 2))
        for lin in (q, k, v):
            scores = scores + lin.weight.detach().float().reshape(n_heads, head_dim, -1).pow(2).sum(
                dim=(1, 2)
            )
    kept_heads = _top(scores, n_heads - config.heads)
    index = (kept_heads.unsqueeze(1) * head_dim + torch.arange(head_dim)).reshape(-1)
    attention: Any = layer.get_submodule("attention")
    attention_self = layer.get_submodule("attention.self")
    for p, lin in zip(("query", "key", "value"), (q, k, v), strict=True):
        setattr(attention_self, p, slice_linear(lin, index, 0))
    layer.get_submodule("attention.output").dense = slice_linear(out, index, 1)
    # map current head positions back to the original numbering before recording what was removed
    prior: set[int] = set(getattr(attention, "pruned_heads", set()))
    original = [h for h in range(n_heads + len(prior)) if h not in prior]
    removed = {original[h] for h in range(n_heads) if h not in set(kept_heads.tolist())}
    attention.pruned_heads = prior | removed
    attn.num_attention_heads = n_heads - config.heads
    attn.all_head_size = attn.num_attention_heads * head_dim
    if ctx.calibration is not None and out_name in ctx.calibration:
        ctx.calibration[out_name] = ctx.calibration[out_name][index.to(ctx.calibration[out_name].device)]
    config_obj = getattr(ctx.model, "config", None)
    layer_idx = getattr(attn, "layer_idx", None)
    if config_obj is not None and isinstance(layer_idx, int):
        recorded = dict(getattr(config_obj, "pruned_heads", None) or {})
        recorded[layer_idx] = sorted(attention.pruned_heads)
        config_obj.pruned_heads = recorded


def _prune_ffn(layer: nn.Module, name: str, config: StructuredPruneConfig, ctx: ApplyContext) -> None:
    up = _linear(layer, "intermediate.dense", name)
    down = _linear(layer, "output.dense", name)
    width = up.out_features
    keep = round(width * (1.0 - config.ffn_ratio) / config.round_to) * config.round_to
    keep = min(width, max(config.round_to, keep))
    if keep == width:
        return
    down_name = f"{name}.output.dense"
    col_norm = down.weight.detach().float().norm(dim=0)
    if config.importance == "activation":
        scores = col_norm * _norms(ctx, down_name, width)
    else:
        scores = col_norm * up.weight.detach().float().norm(dim=1)
    index = _top(scores, keep)
    layer.get_submodule("intermediate").dense = slice_linear(up, index, 0)
    layer.get_submodule("output").dense = slice_linear(down, index, 1)
    if ctx.calibration is not None and down_name in ctx.calibration:
        ctx.calibration[down_name] = ctx.calibration[down_name][index.to(ctx.calibration[down_name].device)]


def _width(layer: nn.Module) -> int:
    up = layer.get_submodule("intermediate.dense")
    return up.out_features if isinstance(up, nn.Linear | QuantizedLinear) else -1


def _sync_intermediate_size(model: nn.Module) -> None:
    config_obj = getattr(model, "config", None)
    widths = {_width(m) for m in model.modules() if is_encoder_layer(m)}
    if config_obj is not None and hasattr(config_obj, "intermediate_size") and len(widths) == 1:
        config_obj.intermediate_size = widths.pop()


@register_handler(StructuredPruneConfig, accepts=contains_encoder_layer, default_targets=lambda model: [""])
def _structured_prune(module: nn.Module, config: StructuredPruneConfig, ctx: ApplyContext) -> nn.Module:
    layers = [(n, m) for n, m in module.named_modules() if is_encoder_layer(m)]
    for sub, layer in layers:
        name = ".".join(p for p in (ctx.name, sub) if p)
        if config.heads:
            _prune_heads(layer, name, config, ctx)
        if config.ffn_ratio:
            _prune_ffn(layer, name, config, ctx)
    _sync_intermediate_size(ctx.model)
    return module
