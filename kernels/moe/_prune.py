"""Expert pruning of a pretrained ``transformers`` MoE causal LM (Qwen2-MoE, Qwen3-MoE, Mixtral).

What the installed ``transformers`` (5.25) builds, and what this module relies on: every MoE layer's
``mlp`` is a ``*SparseMoeBlock`` with a router ``gate`` (``weight`` of shape ``[E, hidden]``, no bias,
attributes ``num_experts`` and ``top_k``; Qwen's also ``norm_topk_prob``, Mixtral's always renormalises the
top-k) and ``experts``, the experts *fused* into two 3-D parameters, ``gate_up_proj`` ``[E, 2*I, hidden]``
and ``down_proj`` ``[E, hidden, I]``, plus ``num_experts``. Qwen2-MoE adds an always-on gated
``shared_expert``. ``save_pretrained`` writes the experts back in the hub's per-expert layout
(``experts.<j>.gate_proj.weight`` ...) and ``from_pretrained`` fuses them again.

**Criterion.** An expert's score in a layer is its routing frequency times its mean gate weight over the
tokens routed to it, i.e. the sum of the (post-``norm_topk_prob``) top-k gate weights it receives divided by
the number of calibration tokens: the gate-weighted ("soft") variant of the heavy-hitters counting of
SEER-MoE (Muzio, Sun and He 2024, arXiv:2404.05089, stage 1), which keeps the experts the router sends the
most weight to. Lu et al. 2024 ("Not All Experts are Equal", arXiv:2402.14800) search expert subsets by
output reconstruction instead; that is not what this module does. Ties go to the lower expert id.

**Pruning** removes the dropped experts' slices of both fused tensors and their rows of the router weight,
so the router's softmax (and ``norm_topk_prob``) runs over the kept experts only: the pruned model equals
the unpruned one with the dropped experts' router logits set to ``-inf`` (:func:`masked_router_reference`).

**Export.** A uniform allocation (same expert count and top-k in every MoE layer) is a stock checkpoint:
the config's ``num_experts`` (``num_local_experts`` for Mixtral) and ``num_experts_per_tok`` change and
``AutoModelForCausalLM.from_pretrained`` reloads it. A per-layer allocation is *not* expressible in these
configs (the counts are single ints of ``@strict`` dataclasses; see :mod:`frontier.kernels.moe`), and
padding a layer back to ``E`` with zero experts is not exact: the routers have no bias, so a padded expert
cannot be given a ``-inf`` logit; a zero row gives logit 0, which takes top-k slots and enters the softmax
denominator. So a non-uniform checkpoint keeps the original counts in the config, records the per-layer
plan under ``config.frontier_moe``, and ships a ``frontier_moe.py`` (``auto_map``) that shrinks the layers
before the weights load. Stock ``transformers`` loads it through its documented custom-code mechanism,
``AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)``; without ``trust_remote_code`` it
refuses (shape mismatch). :func:`load_pruned_moe` loads both kinds without executing the checkpoint's code.
A per-layer model runs inference (and ``generate``) as is; its ``output_router_logits=True`` auxiliary loss
does not, since transformers' ``load_balancing_loss_func`` sums one ``num_experts``-sized buffer over layers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import subprocess
import sys
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import torch
    from torch import nn

PLAN_KEY = "frontier_moe"
REMOTE_MODULE = "frontier_moe"


@dataclasses.dataclass(frozen=True)
class MoELayout:
    """What :func:`detect_moe_layout` found: the family, where its counts live and which layers are MoE."""

    model_type: str
    experts_key: str  # the config field holding the expert count
    num_experts: int
    top_k: int
    norm_topk_prob: bool
    shared_expert: bool
    moe_layers: tuple[int, ...]


# model_type -> (config field of the expert count, renormalises top-k always, has a shared expert)
_LAYOUTS: dict[str, tuple[str, bool, bool]] = {
    "mixtral": ("num_local_experts", True, False),
    "qwen2_moe": ("num_experts", False, True),
    "qwen3_moe": ("num_experts", False, False),
}


def _decoder_layers(model: nn.Module) -> Sequence[Any]:
    inner = getattr(model, "model", model)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise TypeError(
            f"model must be a transformers causal LM with model.layers (a *ForCausalLM or its base model). "
            f"Got {type(model).__name__} instead."
        )
    return layers


def _is_moe_block(mlp: Any) -> bool:
    experts = getattr(mlp, "experts", None)
    return (
        hasattr(mlp, "gate")
        and experts is not None
        and getattr(experts, "gate_up_proj", None) is not None
        and getattr(experts, "down_proj", None) is not None
    )


def detect_moe_layout(model: nn.Module) -> MoELayout:
    """The MoE layout of a ``transformers`` model, read from its config and modules.

    Raises:
        ValueError: the model type is not Qwen2-MoE, Qwen3-MoE or Mixtral, or its experts are not the fused
            3-D parameters those families use in ``transformers`` 5.
    """
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in _LAYOUTS:
        raise ValueError(
            f"Expert pruning supports model_type in {sorted(_LAYOUTS)}. Got model_type={model_type!r} "
            f"({type(model).__name__}) instead; load a Qwen2-MoE, Qwen3-MoE or Mixtral checkpoint."
        )
    experts_key, always_norm, shared = _LAYOUTS[model_type]
    moe_layers = tuple(i for i, layer in enumerate(_decoder_layers(model)) if _is_moe_block(layer.mlp))
    if not moe_layers:
        raise ValueError(
            f"model_type={model_type!r} ({type(model).__name__}) has no MoE layer with a router 'gate' and "
            f"fused 'experts.gate_up_proj'/'experts.down_proj'; expert pruning needs transformers>=5 layouts."
        )
    return MoELayout(
        model_type=model_type,
        experts_key=experts_key,
        num_experts=int(getattr(config, experts_key)),
        top_k=int(config.num_experts_per_tok),  # type: ignore[union-attr]
        norm_topk_prob=always_norm or bool(getattr(config, "norm_topk_prob", False)),
        shared_expert=shared,
        moe_layers=moe_layers,
    )


def moe_blocks(model: nn.Module) -> dict[int, Any]:
    """Layer index -> sparse MoE block (``mlp`` with ``gate`` and ``experts``) of a supported model."""
    detect_moe_layout(model)
    return {i: layer.mlp for i, layer in enumerate(_decoder_layers(model)) if _is_moe_block(layer.mlp)}


@dataclasses.dataclass
class RouterStats:
    """Per MoE layer and expert: tokens routed (top-k hits) and the sum of the gate weights they got.

    ``gate weight`` is what the block multiplies the expert's output by (after ``norm_topk_prob`` where the
    model renormalises), so the score reflects the routing the model really does.
    """

    tokens: int
    counts: dict[int, torch.Tensor]
    weight_sums: dict[int, torch.Tensor]

    def frequency(self, layer: int) -> torch.Tensor:
        """Fraction of calibration tokens routed to each expert of ``layer``."""
        return self.counts[layer] / max(self.tokens, 1)

    def mean_gate_weight(self, layer: int) -> torch.Tensor:
        """Mean gate weight of each expert over the tokens routed to it (0 for an expert never chosen)."""
        return self.weight_sums[layer] / self.counts[layer].clamp(min=1)

    def scores(self, layer: int) -> torch.Tensor:
        """Frequency x mean gate weight (SEER-MoE's gate-weighted heavy-hitters count, per token)."""
        return self.frequency(layer) * self.mean_gate_weight(layer)

    def select(self, counts: Mapping[int, int]) -> dict[int, list[int]]:
        """The ``counts[layer]`` highest-scoring experts of each layer, ascending ids; ties to lower ids."""
        import torch

        kept: dict[int, list[int]] = {}
        for layer, n in counts.items():
            if layer not in self.counts:
                raise ValueError(
                    f"RouterStats has no statistics for layer {layer}; it covers layers "
                    f"{sorted(self.counts)}. Collect them on the same model with collect_router_stats."
                )
            score = self.scores(layer).double()
            # Stable descending sort: equal scores keep ascending id order.
            order = torch.sort(-score, stable=True).indices[:n]
            kept[layer] = sorted(int(j) for j in order)
        return kept


def collect_router_stats(model: nn.Module, batches: Iterable[Any]) -> RouterStats:
    """Run ``model`` over calibration batches and count, per layer and expert, top-k hits and gate weight.

    Args:
        model: a supported MoE causal LM (eval mode is set for the run and restored).
        batches: ``input_ids`` tensors ``[batch, seq]``, or mappings with ``input_ids`` and an optional
            ``attention_mask`` (padding tokens are not counted).
    """
    import torch

    blocks = moe_blocks(model)
    counts = {i: torch.zeros(b.gate.weight.shape[0], dtype=torch.float64) for i, b in blocks.items()}
    sums = {i: torch.zeros_like(c) for i, c in counts.items()}
    keep_rows: list[torch.Tensor | None] = [None]
    tokens = 0

    def hook(layer: int) -> Any:
        def record(_module: nn.Module, _inputs: Any, output: Any) -> None:
            _logits, weights, indices = output
            rows = keep_rows[0]
            if rows is not None:
                weights, indices = weights[rows], indices[rows]
            n = counts[layer].numel()
            counts[layer] += torch.bincount(indices.reshape(-1), minlength=n).double()
            sums[layer] += torch.zeros(n, dtype=torch.float64).index_add_(
                0, indices.reshape(-1), weights.reshape(-1).double()
            )

        return record

    handles = [b.gate.register_forward_hook(hook(i)) for i, b in blocks.items()]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                if isinstance(batch, Mapping):
                    ids, mask = batch["input_ids"], batch.get("attention_mask")
                else:
                    ids, mask = batch, None
                keep_rows[0] = None if mask is None else mask.reshape(-1).bool()
                tokens += int(ids.numel() if mask is None else mask.sum())
                model(input_ids=ids, attention_mask=mask, use_cache=False)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return RouterStats(tokens=tokens, counts=counts, weight_sums=sums)


def _shrink_blocks(model: Any, kept: Mapping[str, Sequence[int]], top_k: Mapping[str, int]) -> None:
    # Shared verbatim with the checkpoint's frontier_moe.py (written from this function's source), so it
    # imports nothing from Frontier. ``kept`` maps a layer index (as a string, the JSON key) to expert ids.
    import torch

    layers = getattr(model, "model", model).layers
    for key, ids in kept.items():
        block = layers[int(key)].mlp
        gate, experts = block.gate, block.experts
        index = torch.tensor(list(ids), dtype=torch.long, device=gate.weight.device)
        for owner, name in ((gate, "weight"), (experts, "gate_up_proj"), (experts, "down_proj")):
            old = getattr(owner, name)
            # index_select copies, so the dropped experts' storage is freed with the old parameter.
            new = torch.nn.Parameter(old.data.index_select(0, index), requires_grad=old.requires_grad)
            setattr(owner, name, new)
        gate.num_experts = experts.num_experts = len(ids)
        gate.top_k = int(top_k[key])
        if hasattr(block, "top_k"):
            block.top_k = int(top_k[key])


def _resolve_keep(
    keep: Any, layout: MoELayout, sizes: Mapping[int, int], stats: RouterStats | None
) -> dict[int, list[int]]:
    """Any accepted ``keep`` form -> layer -> sorted kept expert ids."""
    layers = layout.moe_layers
    counts: dict[int, int] = {}
    ids: dict[int, list[int]] = {}
    if isinstance(keep, bool):
        raise TypeError(
            f"The 'keep' parameter of prune_experts must be an int, float, list or dict. Got {keep!r}."
        )
    if isinstance(keep, int):
        counts = dict.fromkeys(layers, keep)
    elif isinstance(keep, float):
        if not 0.0 < keep <= 1.0:
            raise ValueError(
                f"The 'keep' parameter of prune_experts, as a fraction, must be in (0, 1]. "
                f"Got {keep!r} instead."
            )
        counts = {layer: max(1, round(keep * sizes[layer])) for layer in layers}
    elif isinstance(keep, Mapping):
        for layer, value in keep.items():
            if layer not in layers:
                raise ValueError(
                    f"The 'keep' parameter of prune_experts names layer {layer!r}, which is not an MoE "
                    f"layer; MoE layers are {list(layers)}."
                )
            if isinstance(value, int) and not isinstance(value, bool):
                counts[layer] = value
            else:
                ids[layer] = sorted(int(j) for j in value)
    elif isinstance(keep, Sequence) and not isinstance(keep, str):
        if len(keep) != len(layers):
            raise ValueError(
                f"The 'keep' parameter of prune_experts, as a list of per-layer counts, must have one entry "
                f"per MoE layer ({len(layers)}: layers {list(layers)}). Got {len(keep)} entries instead."
            )
        counts = {layer: int(n) for layer, n in zip(layers, keep, strict=True)}
    else:
        raise TypeError(
            f"The 'keep' parameter of prune_experts must be an int, a fraction, a list of per-layer counts "
            f"or a dict layer -> count or expert ids. Got {type(keep).__name__} instead."
        )
    for layer, n in counts.items():
        if not 1 <= n <= sizes[layer]:
            raise ValueError(
                f"keep[{layer}] (experts kept in layer {layer}) must be between 1 and the {sizes[layer]} "
                f"experts the layer has. Got {n} instead."
            )
    for layer, chosen in ids.items():
        e = sizes[layer]
        if not chosen or len(set(chosen)) != len(chosen) or not all(0 <= j < e for j in chosen):
            raise ValueError(
                f"keep[{layer}] must list distinct expert ids in [0, {e}), at least one. "
                f"Got {chosen} instead."
            )
    if counts:
        if stats is None:
            raise ValueError(
                "prune_experts needs 'stats' (from collect_router_stats) to choose which experts to keep "
                "when 'keep' gives counts; pass stats=..., or give explicit expert ids as {layer: [ids]}."
            )
        ids.update(stats.select(counts))
    return ids


def prune_experts(
    model: nn.Module,
    keep: int | float | Sequence[int] | Mapping[int, int] | Mapping[int, Sequence[int]],
    *,
    stats: RouterStats | None = None,
    top_k: int | Mapping[int, int] | None = None,
) -> dict[int, list[int]]:
    """Remove experts from a Qwen2-MoE, Qwen3-MoE or Mixtral model in place; returns the kept expert ids.

    The kept experts' weights are copied out of the fused tensors and the router's rows for the dropped
    ones go, so routing renormalises over the kept experts. Layers absent from a ``keep`` dict stay whole.

    Args:
        model: a supported ``transformers`` MoE model.
        keep: experts kept per MoE layer: one count for all, a fraction of the experts, a list of counts (one
            per MoE layer, in order), a dict layer -> count, or a dict layer -> expert ids.
        stats: router statistics (:func:`collect_router_stats`); required when ``keep`` gives counts, whose
            experts are the highest-scoring ones (frequency x mean gate weight).
        top_k: experts per token after pruning, one for all layers or per layer. ``None`` keeps the model's,
            clamped to the kept count.

    Raises:
        ValueError: a count outside ``[1, num_experts]``, bad expert ids, a ``top_k`` above a layer's kept
            count or below 1, or counts without ``stats``.
    """
    layout, kept, ks = _plan(model, keep, stats, top_k)
    _shrink_blocks(model, {str(k): v for k, v in kept.items()}, {str(k): v for k, v in ks.items()})
    _record_plan(model, layout)
    return kept


def _plan(
    model: nn.Module, keep: Any, stats: RouterStats | None, top_k: int | Mapping[int, int] | None
) -> tuple[MoELayout, dict[int, list[int]], dict[int, int]]:
    """``prune_experts``' arguments checked: the layout, kept expert ids and top-k per pruned layer."""
    layout = detect_moe_layout(model)
    sizes = {i: int(b.gate.weight.shape[0]) for i, b in moe_blocks(model).items()}
    kept = _resolve_keep(keep, layout, sizes, stats)
    if top_k is None:
        ks = {layer: min(layout.top_k, len(ids)) for layer, ids in kept.items()}
    elif isinstance(top_k, Mapping):
        ks = {layer: int(top_k.get(layer, min(layout.top_k, len(ids)))) for layer, ids in kept.items()}
    else:
        ks = dict.fromkeys(kept, int(top_k))
    for layer, k in ks.items():
        if not 1 <= k <= len(kept[layer]):
            raise ValueError(
                f"top_k for layer {layer} must be between 1 and the {len(kept[layer])} experts kept there. "
                f"Got top_k={k} instead; keep more experts or lower top_k."
            )
    return layout, kept, ks


def pruned_copy(
    model: nn.Module,
    keep: int | float | Sequence[int] | Mapping[int, int] | Mapping[int, Sequence[int]],
    *,
    stats: RouterStats | None = None,
    top_k: int | Mapping[int, int] | None = None,
) -> tuple[nn.Module, dict[int, list[int]]]:
    """A pruned deep copy of ``model`` (which stays untouched) and the kept expert ids.

    Same arguments and result as :func:`prune_experts`, but the dropped experts are never copied: the kept
    slices of the fused tensors and router rows are made first and handed to ``copy.deepcopy`` as the
    copies of the originals, so building the candidate allocates only what the pruned model holds (its
    peak memory reflects the pruned size, not the base's).
    """
    import copy

    import torch

    layout, kept, ks = _plan(model, keep, stats, top_k)
    blocks = moe_blocks(model)
    memo: dict[int, Any] = {}
    for layer, ids in kept.items():
        block = blocks[layer]
        index = torch.tensor(ids, dtype=torch.long, device=block.gate.weight.device)
        for owner, name in (
            (block.gate, "weight"),
            (block.experts, "gate_up_proj"),
            (block.experts, "down_proj"),
        ):
            old = getattr(owner, name)
            memo[id(old)] = torch.nn.Parameter(
                old.data.index_select(0, index), requires_grad=old.requires_grad
            )
    clone: nn.Module = copy.deepcopy(model, memo)
    # The tensors above and the counts below are what _shrink_blocks changes in place; it cannot be called
    # on the clone (its tensors are pruned already) nor split, since its source ships verbatim in a
    # per-layer checkpoint's frontier_moe.py, which imports nothing from Frontier.
    new_blocks = moe_blocks(clone)
    for layer, ids in kept.items():
        block = new_blocks[layer]
        block.gate.num_experts = block.experts.num_experts = len(ids)
        block.gate.top_k = ks[layer]
        if hasattr(block, "top_k"):
            block.top_k = ks[layer]
    _record_plan(clone, layout)
    return clone, kept


def _record_plan(model: nn.Module, layout: MoELayout) -> None:
    """Make ``model.config`` describe the model: stock fields when uniform, else a ``frontier_moe`` plan."""
    config: Any = model.config
    blocks = moe_blocks(model)
    experts = {str(i): int(b.gate.weight.shape[0]) for i, b in blocks.items()}
    ks = {str(i): int(b.gate.top_k) for i, b in blocks.items()}
    plan = getattr(config, PLAN_KEY, None)
    original = (
        (int(plan["num_experts"]), int(plan["num_experts_per_tok"]))
        if plan
        else (layout.num_experts, layout.top_k)
    )
    if len(set(experts.values())) == 1 and len(set(ks.values())) == 1:
        setattr(config, layout.experts_key, next(iter(experts.values())))
        config.num_experts_per_tok = next(iter(ks.values()))
        if plan is not None:
            delattr(config, PLAN_KEY)
        if hasattr(model, "num_experts"):  # the *ForCausalLM's copies, read by its aux loss
            model.num_experts = getattr(config, layout.experts_key)
            model.num_experts_per_tok = config.num_experts_per_tok
        return
    # Per-layer counts: the config keeps the unpruned counts (what the stock class builds) plus the plan;
    # "kept" lists, for the loader, which rows of the freshly built (unloaded) tensors to keep: the first n.
    setattr(config, layout.experts_key, original[0])
    config.num_experts_per_tok = original[1]
    setattr(
        config,
        PLAN_KEY,
        {
            "num_experts": original[0],
            "num_experts_per_tok": original[1],
            "experts_per_layer": experts,
            "top_k_per_layer": ks,
            "kept": {i: list(range(n)) for i, n in experts.items()},
        },
    )


@contextlib.contextmanager
def masked_router_reference(
    model: nn.Module, kept: Mapping[int, Sequence[int]], *, top_k: int | Mapping[int, int] | None = None
) -> Iterator[nn.Module]:
    """Reference for pruning: inside the block, the *unpruned* model routes with the dropped experts'
    logits at ``-inf`` (softmax, top-k and renormalisation re-implemented here, not the library's router).

    Args:
        model: the unpruned model (restored on exit).
        kept: layer -> kept expert ids, as :func:`prune_experts` returns.
        top_k: as in :func:`prune_experts`.
    """
    import torch
    import torch.nn.functional as F

    layout = detect_moe_layout(model)
    blocks = moe_blocks(model)
    originals: dict[int, Any] = {}

    def masked_forward(gate: Any, ids: Sequence[int], k: int) -> Any:
        allowed = torch.zeros(gate.weight.shape[0], dtype=torch.bool)
        allowed[list(ids)] = True

        def forward(hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            x = hidden_states.reshape(-1, gate.weight.shape[1])
            logits = F.linear(x, gate.weight)
            masked = logits.float().masked_fill(~allowed.to(logits.device), float("-inf"))
            probs = torch.softmax(masked, dim=-1)
            top, idx = torch.topk(probs, k, dim=-1)
            if layout.norm_topk_prob:
                top = top / top.sum(dim=-1, keepdim=True)
            return logits, top.to(logits.dtype), idx

        return forward

    try:
        for layer, ids in kept.items():
            gate = blocks[layer].gate
            k = top_k if isinstance(top_k, int) else (top_k or {}).get(layer, min(layout.top_k, len(ids)))
            originals[layer] = gate.forward
            gate.forward = masked_forward(gate, ids, int(k))
        yield model
    finally:
        for layer, forward in originals.items():
            blocks[layer].gate.forward = forward


@dataclasses.dataclass(frozen=True)
class MoEParamCounts:
    """Parameters of a model, counted from its modules: all, and those one token uses (top-k experts)."""

    total: int
    active: int
    experts: int  # routed-expert parameters, all layers


def count_moe_params(model: nn.Module) -> MoEParamCounts:
    """Count ``model``'s parameters from its tensors: total, active per token and routed-expert ones.

    Active = total minus, per MoE layer, the experts a token does not use ((kept - top_k) x one expert's
    size); embeddings, attention, norms, routers and the shared expert count as active. A quantized Linear
    (:class:`~kernels.QuantizedLinear`) keeps its weights as packed codes in buffers, not parameters; its
    ``out_features x in_features`` weights count too, so quantizing a model does not make it look smaller
    in parameters (its bytes are what ``size_mb`` reports).
    """
    from frontier.kernels._qlinear import QuantizedLinear

    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:  # tied embeddings count once
            seen.add(id(p))
            total += p.numel()
    total += sum(m.out_features * m.in_features for m in model.modules() if isinstance(m, QuantizedLinear))
    inactive = experts = 0
    for block in moe_blocks(model).values():
        e = block.experts
        per_expert = e.gate_up_proj[0].numel() + e.down_proj[0].numel()
        experts += per_expert * e.gate_up_proj.shape[0]
        inactive += per_expert * (e.gate_up_proj.shape[0] - int(block.gate.top_k))
    return MoEParamCounts(total=total, active=total - inactive, experts=experts)


def resident_bytes(model: nn.Module) -> int:
    """Bytes of the distinct tensor storages behind ``model``'s parameters and buffers, as allocated.

    Measured from the storages, not from shapes: a parameter that is a view of a larger tensor counts the
    whole storage, so a pruning that only sliced (and kept the dropped experts alive) would show no drop.
    """
    seen: set[int] = set()
    total = 0
    for t in [*model.parameters(), *model.buffers()]:
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key not in seen:
            seen.add(key)
            total += storage.nbytes()
    return total


_MEASURE_SCRIPT = """
import json, resource, sys
import torch, transformers
from frontier.kernels.moe._prune import load_pruned_moe

def status_mb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(field)

torch.set_num_threads(1)
path, tokens = sys.argv[1], int(sys.argv[2])
# Import the model's modules first, so the baseline excludes code and only the weights are measured.
config = transformers.AutoConfig.from_pretrained(path)
getattr(transformers, str(config.architectures[0]).removeprefix("FrontierPruned"))
try:  # reset the peak-RSS mark (Linux >= 4.0), so the peak is the load's, not the imports'
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    peak_field = "VmHWM"
except OSError:
    peak_field = None
before = status_mb("VmRSS")
model = load_pruned_moe(path)
loaded = status_mb("VmRSS")
with torch.no_grad():
    model(input_ids=torch.zeros(1, tokens, dtype=torch.long), use_cache=False)
peak = status_mb(peak_field) if peak_field else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"rss_mb": loaded - before, "peak_mb": peak - before, "peak_reset": bool(peak_field)}))
"""


def measure_load_memory_mb(path: str | Path, *, tokens: int = 16, timeout_s: float = 300) -> dict[str, Any]:
    """Resident memory of loading a checkpoint, measured in a fresh Python process.

    The child imports the model's modules, resets the kernel's peak-RSS mark (``/proc/self/clear_refs``),
    then loads with :func:`load_pruned_moe` and runs one forward of ``tokens`` tokens. Returns ``rss_mb``,
    the RSS growth over the load, and ``peak_mb``, the peak RSS (``VmHWM``; ``ru_maxrss`` where the mark
    cannot be reset, ``peak_reset`` false) over the load and forward minus the RSS before; both include
    allocator overhead, so they are measurements, not shape arithmetic.
    """
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE_SCRIPT, str(Path(path).resolve()), str(tokens)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=Path(path).resolve(),  # not the checkout root, whose kernels/ would shadow the hub's 'kernels'
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"Measuring the load of {path} failed:\n{out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


_REMOTE_TEMPLATE = '''"""Written by Frontier's export_pruned_moe: a {base} whose MoE layers keep different
numbers of experts.

config.json's ``{plan_key}`` holds the plan (experts and top-k per layer); this class builds the stock model
from the unpruned counts, then shrinks each listed layer before the checkpoint's weights load. Load with
``AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)`` or Frontier's ``load_pruned_moe``.
"""

from __future__ import annotations

from transformers import {base} as _Base


{shrink}

class {cls}(_Base):
    def __init__(self, config):
        super().__init__(config)
        plan = config.{plan_key}
        _shrink_blocks(self, plan["kept"], plan["top_k_per_layer"])
'''


def _remote_class_name(base: str) -> str:
    return f"FrontierPruned{base}"


def export_pruned_moe(
    model: nn.Module, out: str | Path, *, tokenizer: Any = None, warn: bool = True
) -> dict[str, Any]:
    """Save a (pruned) MoE model as a ``transformers`` checkpoint; returns how to load it.

    A uniform model saves as a stock checkpoint. A model with per-layer expert counts or top-k saves with
    its ``frontier_moe`` plan and a ``frontier_moe.py`` custom-code module (``auto_map``), and warns that it
    loads only with ``trust_remote_code=True`` or :func:`load_pruned_moe` (see the module docstring).

    Returns:
        ``{"path", "stock": bool, "load": the Python line that loads it}``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config: Any = model.config
    plan = getattr(config, PLAN_KEY, None)
    base = type(model).__name__
    saved = {k: getattr(config, k, None) for k in ("auto_map", "architectures")}
    if plan is not None:
        if base.startswith("FrontierPruned"):
            base = base.removeprefix("FrontierPruned")
        cls = _remote_class_name(base)
        source = inspect.getsource(_shrink_blocks)
        (out / f"{REMOTE_MODULE}.py").write_text(
            _REMOTE_TEMPLATE.format(base=base, cls=cls, plan_key=PLAN_KEY, shrink=source)
        )
        config.auto_map = {"AutoModelForCausalLM": f"{REMOTE_MODULE}.{cls}"}
        config.architectures = [cls]
    try:
        cast(Any, model).save_pretrained(out)
    finally:
        for key, value in saved.items():
            setattr(config, key, value)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    if plan is None:
        load = f"transformers.AutoModelForCausalLM.from_pretrained({str(out)!r})"
        return {"path": str(out), "stock": True, "load": load}
    load = f"transformers.AutoModelForCausalLM.from_pretrained({str(out)!r}, trust_remote_code=True)"
    if warn:
        warnings.warn(
            f"{out}: the MoE layers keep different numbers of experts or top-k "
            f"({plan['experts_per_layer']}, top-k {plan['top_k_per_layer']}), which transformers configs "
            f"cannot express. The checkpoint needs Frontier's loader "
            f"(frontier.kernels.moe._prune.load_pruned_moe) or its bundled code: {load}.",
            UserWarning,
            stacklevel=2,
        )
    return {"path": str(out), "stock": False, "load": load}


def load_pruned_moe(path: str | Path, **kwargs: Any) -> nn.Module:
    """Load a checkpoint written by :func:`export_pruned_moe` (uniform or not) without running its code.

    ``kwargs`` go to ``from_pretrained``. A non-uniform checkpoint is built from the stock class with the
    plan in its ``config.json`` applied before the weights load.
    """
    import transformers

    config = transformers.AutoConfig.from_pretrained(path)
    plan = getattr(config, PLAN_KEY, None)
    if plan is None:
        return transformers.AutoModelForCausalLM.from_pretrained(path, config=config, **kwargs)
    base_name = str(config.architectures[0]).removeprefix("FrontierPruned")
    base: Any = getattr(transformers, base_name)

    class _Pruned(base):
        def __init__(self, cfg: Any) -> None:
            super().__init__(cfg)
            _shrink_blocks(self, cfg.frontier_moe["kept"], cfg.frontier_moe["top_k_per_layer"])

    _Pruned.__name__ = _Pruned.__qualname__ = _remote_class_name(base_name)
    return _Pruned.from_pretrained(path, config=config, **kwargs)
