"""Mixture-of-Experts compute: :class:`MoELayer`, its plain reference and parameter counts, and expert
pruning of pretrained ``transformers`` MoE models (:func:`prune_experts`, :func:`pruned_copy`; see
:mod:`frontier.kernels.moe._prune`).

``kernels.moe`` imports torch (its layer is an ``nn.Module``); import it only where a model is built.

Can Hugging Face ``transformers`` (checked on 5.24) express a *different expert count per layer*? No:

- ``MixtralConfig.num_local_experts``, ``Qwen2MoeConfig.num_experts`` and ``Qwen3MoeConfig.num_experts``
  are single ints, and the configs are ``@strict`` dataclasses: passing a list, e.g.
  ``Qwen3MoeConfig(num_experts=[4, 8])``, raises ``StrictDataclassFieldValidationError``.
  ``num_experts_per_tok`` (top-k) and ``moe_intermediate_size`` (expert width) are global ints too.
- What varies per layer is only *dense or MoE*: Qwen2-MoE and Qwen3-MoE take ``mlp_only_layers`` (a list of
  layer indices that get a dense MLP of ``intermediate_size``) and ``decoder_sparse_step`` (every n-th layer
  is MoE). Mixtral has neither: every layer is MoE. Qwen2-MoE also has a gated shared expert
  (``shared_expert_intermediate_size``, global); Qwen3-MoE and Mixtral have none.
- Building a model and swapping one layer's ``mlp`` for a ``Qwen3MoeSparseMoeBlock`` made from a config
  copy with another ``num_experts`` runs forward, but ``output_router_logits=True`` (the aux loss) fails in
  ``load_balancing_loss_func``, which accumulates one ``num_experts``-sized buffer across layers
  ("The size of tensor a (4) must match the size of tensor b (8)"), and ``save_pretrained`` /
  ``from_pretrained`` would rebuild the layer from the global config. Not a supported path.

So an evaluator can use ``transformers`` classes when a candidate has one (num_experts, top_k, expert width)
for all MoE layers, optionally with some dense layers (Qwen2/3-MoE ``mlp_only_layers``). Candidates with
per-layer expert counts or widths, per-layer top-k, or a shared expert on a non-Qwen2 layout need
:class:`MoELayer`. Note the aux-loss scale differs: transformers' Mixtral/Qwen loss is ``top_k`` times ours.
"""

from frontier.kernels.moe._layer import ACTIVATIONS, MoELayer, moe_param_counts
from frontier.kernels.moe._losses import load_balancing_loss, router_z_loss
from frontier.kernels.moe._prune import (
    MoELayout,
    MoEParamCounts,
    RouterStats,
    collect_router_stats,
    count_moe_params,
    detect_moe_layout,
    export_pruned_moe,
    load_pruned_moe,
    masked_router_reference,
    measure_load_memory_mb,
    moe_blocks,
    prune_experts,
    pruned_copy,
    resident_bytes,
)
from frontier.kernels.moe._reference import moe_reference

__all__ = [
    "ACTIVATIONS",
    "MoELayer",
    "MoELayout",
    "MoEParamCounts",
    "RouterStats",
    "collect_router_stats",
    "count_moe_params",
    "detect_moe_layout",
    "export_pruned_moe",
    "load_balancing_loss",
    "load_pruned_moe",
    "masked_router_reference",
    "measure_load_memory_mb",
    "moe_blocks",
    "moe_param_counts",
    "moe_reference",
    "prune_experts",
    "pruned_copy",
    "resident_bytes",
    "router_z_loss",
]
