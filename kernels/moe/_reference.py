"""The plain MoE reference: every expert on every token, masked by the routing weights."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from frontier.kernels.moe._layer import MoELayer


def _plain_ffn(x: Tensor, gate: Tensor | None, up: Tensor, down: Tensor) -> Tensor:
    # Written out again (not shared with the layer) so a slip in the fast path cannot hide here.
    hidden = torch.matmul(x, up)
    if gate is None:
        hidden = F.gelu(hidden)
    else:
        gated = torch.matmul(x, gate)
        hidden = gated * torch.sigmoid(gated) * hidden
    return torch.matmul(hidden, down)


def moe_reference(layer: MoELayer, x: Tensor) -> Tensor:
    """The naive masked loop over experts, with ``layer``'s parameters: the oracle for :class:`MoELayer`.

    For each expert it runs the expert on *all* tokens and multiplies by that token's routing weight for
    the expert (zero when the expert is not in the token's top-k), then sums; the shared expert is added to
    every token. It costs ``num_experts / top_k`` times the routed compute of the layer, so it is for tests
    and as the baseline of ``benchmarks/bench_moe_dispatch.py`` only.

    Args:
        layer: the block whose parameters (router, experts, shared expert) are used.
        x: input of shape ``(..., d_model)``.

    Returns:
        The output, same shape as ``x``. Unlike the layer it sets no loss attributes.
    """
    h = x.reshape(-1, layer.d_model)
    ups, downs = layer.experts_up.unbind(0), layer.experts_down.unbind(0)
    gates = layer.experts_gate.unbind(0) if layer.experts_gate is not None else (None,) * len(ups)
    if layer.router is None:
        y = _plain_ffn(h, gates[0], ups[0], downs[0])
    else:
        probs = torch.softmax(torch.matmul(h, layer.router.weight.t()), dim=-1)
        top_w, top_i = torch.topk(probs, layer.top_k, dim=-1)
        if layer.normalize_top_k:
            top_w = top_w / top_w.sum(dim=-1, keepdim=True)
        y = torch.zeros_like(h)
        for e in range(layer.num_experts):
            weight = (top_w * (top_i == e)).sum(dim=-1, keepdim=True)
            out = _plain_ffn(h, gates[e], ups[e], downs[e])
            y = y + weight * out
    if layer.shared_up is not None and layer.shared_down is not None:
        y = y + _plain_ffn(h, layer.shared_gate, layer.shared_up, layer.shared_down)
    return y.reshape(x.shape)
