"""Deploy targets: which points of a compression space a runtime can load, checked before a study runs.

A study that declares ``deploy: {format: compressed-tensors, runtime: ...}`` promises that every point it
can find loads in that runtime once written as a compressed-tensors ``pack-quantized`` model directory.
:func:`check_deploy` refuses a space that contains points the runtime cannot load, naming the family
option that allows them; :func:`deploy_notes` says what the export of an allowed but not-shrunk point is
(pruned weights ship as dense zeros).

The rules are one table, :data:`RUNTIMES`, read by one function; see :class:`RuntimeRules` for where each
rule comes from.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from frontier.spaces._family_compress import FFN_UP, Allocation
from frontier.spaces._params import FamilyParam

DeployFormat = Literal["compressed-tensors"]
Runtime = Literal["transformers", "vllm", "vllm-cpu"]

# Weight widths the compressed-tensors ``pack-quantized`` format stores: integer, weight-only, 2..8 bits
# (compressed_tensors 0.20 ``PackedQuantizationCompressor`` packs "INT-only weight quantization with 1..8
# bits"; ``preset_name_to_scheme`` refuses weight_bits outside 2-8).
PACK_QUANTIZED_WIDTHS: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8)

# Projections a runtime fuses into one matrix, so one quantization scheme must cover all of them: by name
# after the layer prefix (BERT-style attention, Llama-style attention, Llama-style gated MLP).
FUSED: tuple[tuple[str, ...], ...] = (
    ("attention.self.query", "attention.self.key", "attention.self.value"),
    ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    ("mlp.gate_proj", "mlp.up_proj"),
)


@dataclass(frozen=True)
class RuntimeRules:
    """What one runtime loads from a compressed-tensors ``pack-quantized`` checkpoint.

    Attributes:
        widths: weight bit-widths it loads. ``transformers`` decompresses every packed width to dense at
            load time (``CompressedTensorsHfQuantizer``), so all of 2..8; vLLM's GPU path runs packed
            weights through ``CompressedTensorsWNA16``, whose ``WNA16_SUPPORTED_TYPES_MAP`` holds 4 and 8
            bits only (``uint4b8``, ``uint8b128``); vLLM on CPU: 4 bits only (issue #19's survey of its CPU
            weight-only kernels, late 2026).
        group_sizes: group sizes it loads (``None``: per output channel, vLLM's -1), or ``None`` for any
            group size the layer shapes allow (checked when the model is written, not here: the spec does
            not know the shapes). vLLM: the Marlin/machete kernels' ``MARLIN_SUPPORTED_GROUP_SIZES``,
            ``[-1, 32, 64, 128]``.
        fused: whether projections in :data:`FUSED` must share one scheme. vLLM loads Q/K/V into one
            ``QKVParallelLinear`` and gate/up into one ``MergedColumnParallelLinear`` with a single
            quantization method, and refuses checkpoints whose shards differ ("all shards of fused layers
            must have the same precision", ``is_layer_skipped`` / the compressed-tensors scheme lookup);
            transformers keeps every Linear separate.
        channels: which structured FFN channel pruning (sparsity ``kind: channels``) loads.
            ``per-layer``: any kept width per layer (transformers; the compressed-tensors writer pads the
            FFNs with zero channels to one ``intermediate_size``, see :func:`deploy_notes`). ``uniform``: one
            kept width for every layer, which is ``config.intermediate_size`` (vLLM builds every layer's MLP
            from it); so the family must give every FFN of the model description one ratio (``group_by:
            all`` or a single choice, targeting every ``intermediate.dense``). vLLM would load a padded
            export too, but no faster than its widest layer, and the padding is exact only where the width
            differences are whole quantization groups of the down projection, which the spec cannot know.
        symmetric_only: asymmetric weights (a zero point) do not load: transformers' decompression of
            ``pack-quantized`` with zero points fails on the zero-point shape (llm-compressor #1618), and
            vLLM's WNA16 path has no zero-point input for the symmetric ``uint4b8``/``uint8b128`` types.
    """

    widths: tuple[int, ...]
    group_sizes: tuple[int | None, ...] | None
    fused: bool
    channels: Literal["per-layer", "uniform"]
    symmetric_only: bool = True


_VLLM_GROUPS: tuple[int | None, ...] = (None, 32, 64, 128)

RUNTIMES: dict[str, RuntimeRules] = {
    "transformers": RuntimeRules(
        widths=PACK_QUANTIZED_WIDTHS, group_sizes=None, fused=False, channels="per-layer"
    ),
    "vllm": RuntimeRules(widths=(4, 8), group_sizes=_VLLM_GROUPS, fused=True, channels="uniform"),
    "vllm-cpu": RuntimeRules(widths=(4,), group_sizes=_VLLM_GROUPS, fused=True, channels="uniform"),
}


@dataclass(frozen=True)
class _Item:
    """A ``bits``/``sparsity`` family item of the space and where it sits (``space[index]``)."""

    index: int
    alloc: Allocation

    def field(self, option: str) -> str:
        return f"space[{self.index}].options.{option}"

    @property
    def label(self) -> str:
        return f"'{self.alloc.family}' family '{self.alloc.prefix}'"


def _items(space: Iterable[Any]) -> list[_Item]:
    return [
        _Item(i, Allocation.of(item.family, item.name, item.options))
        for i, item in enumerate(space)
        if isinstance(item, FamilyParam) and item.family in ("bits", "sparsity")
    ]


def _groups(values: Iterable[int | None]) -> list[Any]:
    return [v if v is not None else "null (per channel)" for v in values]


def _or_runtimes(a: Allocation) -> str:
    """The fix that keeps the family as it is: the runtimes whose widths and group sizes it fits."""
    fits = [
        name
        for name, r in RUNTIMES.items()
        if set(a.choices) <= set(r.widths) and (r.group_sizes is None or a.group_size in r.group_sizes)
    ]
    return f", or deploy.runtime {' / '.join(repr(f) for f in fits)}" if fits else ""


def _fused_siblings(module: str) -> list[str]:
    """The other projections fused with ``module`` (empty when it is not one of :data:`FUSED`)."""
    for family in FUSED:
        for suffix in family:
            if module == suffix or module.endswith("." + suffix):
                head = module[: len(module) - len(suffix)]
                return [head + s for s in family if s != suffix]
    return []


def _check_fused(runtime: str, bits: list[_Item]) -> None:
    """Every fused projection that one ``bits`` group quantizes is quantized by the same group (or by groups
    that can only ever pick the same scheme)."""
    owner: dict[str, tuple[_Item, str]] = {}
    for item in bits:
        for group, modules in item.alloc.groups.items():
            for m in modules:
                owner[m] = (item, group)
    for module, (item, group) in owner.items():
        for sib in _fused_siblings(module):
            if sib not in owner:
                raise ValueError(
                    f"runtime '{runtime}' fuses {module!r} with {sib!r} into one matrix with one scheme, but "
                    f"{item.field('targets')} of the {item.label} quantizes only the first "
                    f"(targets={item.alloc.targets}); target the fused projections together"
                )
            other, other_group = owner[sib]
            if other is item and other_group == group:
                continue
            same = (
                len({*item.alloc.choices, *other.alloc.choices}) == 1
                and item.alloc.group_size == other.alloc.group_size
                and item.alloc.symmetric == other.alloc.symmetric
            )
            if same:
                continue
            if other is item:
                raise ValueError(
                    f"runtime '{runtime}' fuses {module!r} and {sib!r} into one matrix with one scheme, but "
                    f"{item.field('group_by')}={item.alloc.group_by!r} gives them separate parameters "
                    f"('{group}', '{other_group}'); use group_by 'layer', 'block' or 'all'"
                )
            raise ValueError(
                f"runtime '{runtime}' fuses {module!r} and {sib!r} into one matrix with one scheme, but "
                f"{item.field('targets')} and {other.field('targets')} give them to two 'bits' families "
                f"('{item.alloc.prefix}', '{other.alloc.prefix}'); target them from one family"
            )


def _uneven_channels(it: _Item) -> tuple[str, str] | None:
    """Why a ``channels`` family can give FFNs of the model description different kept widths (the field
    and the reason, with its fix), or None when every point keeps one width (one ``intermediate_size``)."""
    a = it.alloc
    left = [m for m in a.described if m.endswith("." + FFN_UP) and m not in a.modules]
    if left:
        return "targets", f"{left[:2]} keep their full width; target every '{FFN_UP}'"
    if a.group_by != "all" and len(a.choices) > 1:
        return "group_by", f"each group picks its own ratio from {a.choices}; use group_by 'all'"
    return None


def check_deploy(space: Iterable[Any], runtime: str) -> None:
    """Refuse a space that contains points ``runtime`` cannot load (the rules: :data:`RUNTIMES`).

    Args:
        space: the spec's ``space`` items (families not ``bits``/``sparsity`` are ignored).
        runtime: a key of :data:`RUNTIMES`.

    Raises:
        ValueError: the first rule the space breaks, naming the field path (``space[I].options.OPTION``),
            the rule, the value and the fix.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"Unknown runtime {runtime!r}. Available: {sorted(RUNTIMES)}")
    rules = RUNTIMES[runtime]
    items = _items(space)
    if not items:
        raise ValueError(
            "format 'compressed-tensors' exports compressed weights, but the space has no 'bits' or "
            "'sparsity' family; add one, or remove deploy"
        )
    bits = [it for it in items if it.alloc.family == "bits"]
    for it in bits:
        a = it.alloc
        if rules.symmetric_only and not a.symmetric:
            raise ValueError(
                f"{it.field('symmetric')}=false: asymmetric weights do not load in any runtime (zero-point "
                "shape mismatch, llm-compressor #1618); set symmetric: true"
            )
        bad = [w for w in a.choices if w not in rules.widths]
        if bad:
            raise ValueError(
                f"{it.field('choices')}={a.choices}: runtime '{runtime}' loads widths {list(rules.widths)}, "
                f"not {bad}; choose from {list(rules.widths)}{_or_runtimes(a)}"
            )
        if rules.group_sizes is not None and a.group_size not in rules.group_sizes:
            raise ValueError(
                f"{it.field('group_size')}={a.group_size}: runtime '{runtime}' loads group sizes "
                f"{_groups(rules.group_sizes)}; choose one of them{_or_runtimes(a)}"
            )
    if rules.fused:
        _check_fused(runtime, bits)
    if rules.channels == "uniform":
        for it in items:
            uneven = _uneven_channels(it) if it.alloc.kind == "channels" else None
            if uneven is not None:
                option, why = uneven
                raise ValueError(
                    f"{it.field(option)}={getattr(it.alloc, option)!r}: runtime '{runtime}' builds every FFN "
                    f"from one config.intermediate_size, so every layer must keep one width, but {why}, or "
                    "deploy.runtime 'transformers'"
                )


def deploy_notes(space: Iterable[Any], runtime: str) -> list[str]:
    """What the export of a (valid) space's points is, where it is not what the search measured.

    Pruned weights of ``magnitude``/``wanda``/``2:4`` families ship as dense zeros: no runtime serves
    sparse compressed-tensors weights, so they cost dense storage and time there. ``channels`` pruning
    with one kept width for every layer ships as a smaller ``intermediate_size``; with widths that differ
    between layers (``transformers`` only), the export pads every FFN with zero channels to one width, which
    stock transformers loads at that width (``kernels.load_pretrained_compressed`` rebuilds the smaller
    model from the recorded widths).
    """
    notes: list[str] = []
    for it in _items(space):
        a = it.alloc
        head = f"space[{it.index}] ({it.label}, kind '{a.kind}')"
        if a.family != "sparsity":
            continue
        if a.kind != "channels":
            notes.append(
                f"{head}: pruned weights ship as dense zeros; runtime '{runtime}' serves no sparse "
                "compressed weights, so they save no storage or time there"
            )
        elif _uneven_channels(it) is None:
            notes.append(
                f"{head}: every layer keeps one FFN width, which ships as a smaller intermediate_size"
            )
        else:
            notes.append(
                f"{head}: FFN widths that differ between layers ship padded with zero channels to one "
                f"intermediate_size, which runtime '{runtime}' loads at that width, no smaller than the "
                "widest layer (kernels.load_pretrained_compressed rebuilds the smaller model)"
            )
    return notes
