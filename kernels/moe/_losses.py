"""Router regularisers: the Switch load-balancing loss and the ST-MoE router z-loss."""

from __future__ import annotations

import torch
from torch import Tensor


def load_balancing_loss(router_probs: Tensor, expert_index: Tensor) -> Tensor:
    """Switch Transformer auxiliary load-balancing loss, ``E * sum_i f_i * P_i``.

    Fedus, Zoph and Shazeer, "Switch Transformers: Scaling to Trillion Parameter Models with Simple and
    Efficient Sparsity", JMLR 2022 (arXiv 2101.03961), eq. 4. ``f_i`` is the fraction of token-slots routed
    to expert ``i`` (not differentiable) and ``P_i`` the mean router probability of expert ``i`` over the
    tokens (differentiable). With top-k routing ``f_i`` counts all ``T * k`` slots, so ``sum_i f_i == 1``
    for every ``k`` and a uniform router scores exactly 1.0; Hugging Face's Mixtral/Qwen-MoE loss counts
    per token instead and equals ``k`` times this value.

    Args:
        router_probs: softmax router probabilities, shape ``(tokens, num_experts)``.
        expert_index: chosen experts, shape ``(tokens, k)`` (or ``(tokens,)`` for top-1).

    Returns:
        A scalar tensor; 1.0 when routing is perfectly balanced or the router is uniform, up to
        ``num_experts`` when every token goes to one expert that also takes all probability mass.
    """
    num_experts = router_probs.shape[-1]
    counts = torch.bincount(expert_index.reshape(-1), minlength=num_experts)
    fraction = counts.to(router_probs.dtype) / max(expert_index.numel(), 1)
    mean_prob = router_probs.reshape(-1, num_experts).mean(dim=0)
    return num_experts * torch.sum(fraction * mean_prob)


def router_z_loss(router_logits: Tensor) -> Tensor:
    """Router z-loss, the mean squared log-partition of the router logits.

    Zoph et al., "ST-MoE: Designing Stable and Transferable Sparse Expert Models", 2022 (arXiv 2202.08906),
    eq. 5. It keeps router logits small, which stabilises training in low precision.

    Args:
        router_logits: pre-softmax router outputs, shape ``(tokens, num_experts)``.
    """
    return torch.logsumexp(router_logits.float(), dim=-1).square().mean().to(router_logits.dtype)
