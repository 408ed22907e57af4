"""Mixture-of-Experts FFN block with sort-based token dispatch."""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from frontier.kernels.moe._losses import load_balancing_loss, router_z_loss

Activation = Literal["swiglu", "gelu"]
ACTIVATIONS: tuple[str, ...] = get_args(Activation)


def _check_int(owner: str, name: str, value: object, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"The '{name}' parameter of {owner} must be an int. Got {value!r} instead.")
    if value < minimum:
        raise ValueError(f"The '{name}' parameter of {owner} must be >= {minimum}. Got {value} instead.")
    return value


def _check_coef(owner: str, name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"The '{name}' parameter of {owner} must be a float. Got {value!r} instead.")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"The '{name}' parameter of {owner} must be finite and >= 0. Got {value} instead.")
    return float(value)


def _ffn(x: Tensor, gate: Tensor | None, up: Tensor, down: Tensor) -> Tensor:
    """One expert: SwiGLU when ``gate`` is given (Shazeer 2020), otherwise a GELU MLP."""
    if gate is not None:
        return (F.silu(x @ gate) * (x @ up)) @ down
    return F.gelu(x @ up) @ down


class MoELayer(nn.Module):
    """A Mixture-of-Experts feed-forward block: a softmax top-k router over ``num_experts`` FFN experts.

    Sparsely-gated MoE (Shazeer et al., "Outrageously Large Neural Networks", ICLR 2017) with the Switch
    Transformer load-balancing loss (Fedus et al., JMLR 2022, arXiv 2101.03961), the optional ST-MoE router
    z-loss (Zoph et al., 2022, arXiv 2202.08906) and an optional always-on shared expert (DeepSeekMoE,
    Dai et al., 2024, arXiv 2401.06066; Qwen2-MoE). ``num_experts`` of 0 or 1 gives a dense FFN (no router).

    Dispatch: the ``tokens * top_k`` token-slots are sorted by expert id (a stable argsort), counted with
    ``bincount``, gathered into one contiguous slice per expert, run through one matmul chain per expert
    (a Python loop over experts, never over tokens), weighted and scattered back with ``index_add_``. Every
    expert runs even on an empty slice, so every parameter gets a gradient (zeros when unused).

    After each forward the layer exposes, for the last batch:

    - ``aux_loss``: the unscaled load-balancing loss ``E * sum_i f_i * P_i`` (1.0 when balanced),
    - ``z_loss``: the unscaled router z-loss (zero when ``z_loss_coef`` is 0),
    - ``router_loss``: ``aux_loss_coef * aux_loss + z_loss_coef * z_loss``, the term to add to a training
      objective,
    - ``expert_counts``: token-slots per expert (a detached int64 tensor).

    All four are ``None`` before the first forward; the dense layer reports zero losses.

    Args:
        d_model: input and output width.
        expert_ffn: hidden width of each expert.
        num_experts: routed experts; 0 or 1 means a dense FFN of width ``expert_ffn``.
        top_k: experts per token, ``1 <= top_k <= num_experts`` (ignored by the dense layer).
        activation: ``"swiglu"`` (gate, up and down projections) or ``"gelu"`` (up and down).
        normalize_top_k: renormalise the top-k router weights to sum to 1 (Mixtral) instead of using the
            raw softmax probabilities (Switch, Qwen-MoE default). With ``top_k=1`` renormalising makes every
            weight 1, so the router then learns from the auxiliary losses only; Switch uses False there.
        shared_expert: add an always-on expert of width ``shared_ffn`` (default ``expert_ffn``).
        shared_ffn: hidden width of the shared expert.
        aux_loss_coef: weight of ``aux_loss`` in ``router_loss``.
        z_loss_coef: weight of ``z_loss`` in ``router_loss``; 0 skips computing it.
        device, dtype: factory arguments for the parameters.

    Example:
        >>> layer = MoELayer(64, 128, num_experts=8, top_k=2)
        >>> y = layer(torch.randn(4, 16, 64))
        >>> loss = y.square().mean() + layer.router_loss
    """

    def __init__(
        self,
        d_model: int,
        expert_ffn: int,
        num_experts: int = 8,
        *,
        top_k: int = 2,
        activation: Activation = "swiglu",
        normalize_top_k: bool = True,
        shared_expert: bool = False,
        shared_ffn: int | None = None,
        aux_loss_coef: float = 0.01,
        z_loss_coef: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        self.d_model = _check_int(owner, "d_model", d_model, minimum=1)
        self.expert_ffn = _check_int(owner, "expert_ffn", expert_ffn, minimum=1)
        self.num_experts = _check_int(owner, "num_experts", num_experts, minimum=0)
        self.top_k = _check_int(owner, "top_k", top_k, minimum=1)
        self.dense = num_experts <= 1
        if not self.dense and top_k > num_experts:
            raise ValueError(
                f"The 'top_k' parameter of {owner} must be <= num_experts (each token picks top_k distinct "
                f"experts). Got top_k={top_k} with num_experts={num_experts} instead; lower top_k or add "
                "experts."
            )
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"The 'activation' parameter of {owner} must be one of {list(ACTIVATIONS)}. "
                f"Got {activation!r} instead."
            )
        self.activation: Activation = activation
        self.normalize_top_k = bool(normalize_top_k)
        self.aux_loss_coef = _check_coef(owner, "aux_loss_coef", aux_loss_coef)
        self.z_loss_coef = _check_coef(owner, "z_loss_coef", z_loss_coef)
        if shared_ffn is not None and not shared_expert:
            raise ValueError(
                f"The 'shared_ffn' parameter of {owner} needs shared_expert=True. Got "
                f"shared_ffn={shared_ffn} with shared_expert=False instead; drop shared_ffn or enable the "
                "shared expert."
            )
        self.shared_ffn = (
            _check_int(owner, "shared_ffn", shared_ffn if shared_ffn is not None else expert_ffn, minimum=1)
            if shared_expert
            else 0
        )

        def param(*shape: int) -> nn.Parameter:
            return nn.Parameter(torch.empty(shape, device=device, dtype=dtype))

        stored = 1 if self.dense else num_experts
        gated = activation == "swiglu"
        self.router = (
            None if self.dense else nn.Linear(d_model, num_experts, bias=False, device=device, dtype=dtype)
        )
        self.experts_gate = param(stored, d_model, expert_ffn) if gated else None
        self.experts_up = param(stored, d_model, expert_ffn)
        self.experts_down = param(stored, expert_ffn, d_model)
        self.shared_gate: nn.Parameter | None = None
        self.shared_up: nn.Parameter | None = None
        self.shared_down: nn.Parameter | None = None
        if shared_expert:
            f = self.shared_ffn
            self.shared_gate = param(d_model, f) if gated else None
            self.shared_up = param(d_model, f)
            self.shared_down = param(f, d_model)

        self.aux_loss: Tensor | None = None
        self.z_loss: Tensor | None = None
        self.router_loss: Tensor | None = None
        self.expert_counts: Tensor | None = None
        self.reset_parameters()

    @property
    def has_shared_expert(self) -> bool:
        return self.shared_up is not None

    @property
    def stored_experts(self) -> int:
        """Expert weight slices held (1 for the dense layer)."""
        return self.experts_up.shape[0]

    def reset_parameters(self) -> None:
        """``nn.Linear``'s default init: uniform in ``+-1/sqrt(fan_in)`` for every projection."""
        for p in (self.experts_gate, self.experts_up, self.shared_gate, self.shared_up):
            if p is not None:
                nn.init.uniform_(p, -1 / math.sqrt(self.d_model), 1 / math.sqrt(self.d_model))
        bound = 1 / math.sqrt(self.expert_ffn)
        nn.init.uniform_(self.experts_down, -bound, bound)
        if self.shared_down is not None:
            bound = 1 / math.sqrt(self.shared_ffn)
            nn.init.uniform_(self.shared_down, -bound, bound)
        if self.router is not None:
            self.router.reset_parameters()

    def _experts(self) -> list[tuple[Tensor | None, Tensor, Tensor]]:
        """Per-expert (gate, up, down) views. One ``unbind`` per weight rather than ``w[e]`` per expert:
        the backward of ``w[e]`` writes a zero-filled full-size gradient for every expert."""
        ups, downs = self.experts_up.unbind(0), self.experts_down.unbind(0)
        gates = self.experts_gate.unbind(0) if self.experts_gate is not None else (None,) * len(ups)
        return list(zip(gates, ups, downs, strict=True))

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.d_model:
            raise ValueError(
                f"The input of {type(self).__name__} must have last dimension d_model={self.d_model}. "
                f"Got shape {tuple(x.shape)} instead."
            )
        h = x.reshape(-1, self.d_model)
        zero = h.new_zeros(())
        if self.router is None:
            y = _ffn(h, *self._experts()[0])
            self.aux_loss, self.z_loss, self.router_loss = zero, zero, zero
            self.expert_counts = torch.full((1,), h.shape[0], dtype=torch.long, device=h.device)
        else:
            logits = self.router(h)
            probs = logits.softmax(dim=-1)
            top_w, top_i = probs.topk(self.top_k, dim=-1)
            if self.normalize_top_k:
                top_w = top_w / top_w.sum(dim=-1, keepdim=True)
            y, counts = self._dispatch(h, top_w, top_i)
            self.expert_counts = counts.detach()
            self.aux_loss = load_balancing_loss(probs, top_i)
            self.z_loss = router_z_loss(logits) if self.z_loss_coef > 0 else zero
            self.router_loss = self.aux_loss_coef * self.aux_loss + self.z_loss_coef * self.z_loss
        if self.shared_up is not None and self.shared_down is not None:
            y = y + _ffn(h, self.shared_gate, self.shared_up, self.shared_down)
        return y.reshape(x.shape)

    def _dispatch(self, h: Tensor, top_w: Tensor, top_i: Tensor) -> tuple[Tensor, Tensor]:
        """Group token-slots by expert, one matmul chain per expert, weighted scatter-add back."""
        flat_expert = top_i.reshape(-1)
        # Stable so slots of one expert keep token order: deterministic index_add_ accumulation order.
        order = torch.argsort(flat_expert, stable=True)
        counts = torch.bincount(flat_expert, minlength=self.stored_experts)
        token_of_slot = order // self.top_k
        grouped = h.index_select(0, token_of_slot)
        chunks = grouped.split(counts.tolist())
        out = torch.cat([_ffn(chunk, *w) for chunk, w in zip(chunks, self._experts(), strict=True)])
        out = out * top_w.reshape(-1)[order].to(out.dtype).unsqueeze(-1)
        y = h.new_zeros(h.shape[0], self.d_model).index_add_(0, token_of_slot, out)
        return y, counts

    def extra_repr(self) -> str:
        if self.dense:
            head = f"d_model={self.d_model}, expert_ffn={self.expert_ffn}, dense"
        else:
            head = (
                f"d_model={self.d_model}, expert_ffn={self.expert_ffn}, num_experts={self.num_experts}, "
                f"top_k={self.top_k}, normalize_top_k={self.normalize_top_k}"
            )
        shared = f", shared_ffn={self.shared_ffn}" if self.has_shared_expert else ""
        return f"{head}, activation={self.activation}{shared}"


def moe_param_counts(layer: MoELayer) -> tuple[int, int]:
    """Parameters held and parameters used per token.

    Args:
        layer: the MoE block.

    Returns:
        ``(total, active_per_token)``: ``total`` counts every parameter; ``active_per_token`` counts the
        router, the shared expert and ``top_k`` routed experts (everything, for the dense layer).
    """
    if not isinstance(layer, MoELayer):
        raise TypeError(f"moe_param_counts expects a MoELayer. Got {type(layer).__name__} instead.")
    total = sum(p.numel() for p in layer.parameters())
    if layer.dense:
        return total, total
    expert_params = [layer.experts_gate, layer.experts_up, layer.experts_down]
    routed = sum(p.numel() for p in expert_params if p is not None)
    per_expert = routed // layer.stored_experts
    return total, total - routed + layer.top_k * per_expert
