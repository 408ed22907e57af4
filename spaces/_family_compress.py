"""Compression allocation families: ``bits`` (per-module weight bit-width) and ``sparsity`` (per-module
pruning ratio), and :func:`compression_recipe`, which decodes a candidate of such a space into the compression
recipe it stands for (:class:`~spaces.DecodedRecipe`, torch-free configs per module).

A family item names the modules it allocates over and how they are grouped::

    {kind: family, name: q, family: bits,
     options: {num_layers: 6, choices: [2, 3, 4, 8], group_by: layer, group_size: 32,
               targets: ["encoder.layer.*.attention.self.*", "re:.*(intermediate|output).dense"]}}

**The model description.** ``spaces`` never imports torch, so the family cannot look at the model. It learns
the qualified Linear names from the options instead: either ``modules`` (an explicit list, any
architecture) or ``num_layers`` with a ``layout`` (``bert``:
``encoder.layer.I.attention.self.query|key|value``,
``encoder.layer.I.attention.output.dense``, ``encoder.layer.I.intermediate.dense``,
``encoder.layer.I.output.dense``; ``llama``: ``model.layers.I.self_attn.q|k|v|o_proj``,
``model.layers.I.mlp.gate|up|down_proj``; ``qwen2_moe``: the llama attention names and
``model.layers.I.mlp.shared_expert.gate|up|down_proj``; ``qwen3_moe`` and ``mixtral``: the attention names
only, their routed experts being fused tensors, which ``family: experts`` prunes; ``tiny_lm``: ``lm-train``'s
native decoder, ``blocks.I.qkv`` and ``blocks.I.proj``). The evaluator checks at
setup that every planned module exists in the real model and is a Linear, so a wrong description fails the
first trial with the missing names.

**Targets** select among those names by exact name, glob (``*``: one name segment, ``**``: any number) or
``re:`` regex, with the same rules as :func:`kernels.select_modules`; each must match at least one module.

**Grouping** (``group_by``) keeps the dimension manageable; one ordinal parameter per group:

- ``none``: one per module, ``PREFIX.<module name>``;
- ``layer``: one per layer index, ``PREFIX.layer_I`` (modules without a numeric segment get their own);
- ``block``: per layer and sub-block, ``PREFIX.layer_I.attention`` / ``PREFIX.layer_I.ffn``;
- ``module_type``: one per name after the layer index, shared by all layers (``PREFIX.attention.self.query``);
- ``all``: one for every target (a uniform allocation).

**Depth gating** (``depth_of``, for ``lm-train`` joint studies): ``depth_of: lm`` names an earlier ``nas``
or ``moe`` family item whose ``lm.depth`` gates the groups. Module indices are 0-based (``blocks.0``) and the
family's layers 1-based, so a group of layer ``I`` is active only when ``lm.depth >= I + 1``; a group
spanning layers (``module_type``, ``all``) is active when its shallowest layer exists and applies to the
layers the candidate has. A spec whose allocation covers a layer beyond the family's maximum depth is
rejected, and so is decoding a candidate that gives a value to an absent layer.

**Budgets** are not options: the evaluator reports ``avg_bits`` and ``sparsity`` over the planned modules,
and a spec bounds them with ordinary constraints (``{metric: avg_bits, op: "<=", value: 4.5}``), which reach
Optuna's constrained samplers; they are never folded into the objectives as penalties.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from frontier.spaces._families import SpaceFamily, register_family
from frontier.spaces._params import _NAME_PATTERN, FamilyParam
from frontier.spaces._recipe import (
    ConfigSpec,
    DecodedRecipe,
    MagnitudeSparsity,
    NMSparsity,
    StructuredPrune,
    WandaSparsity,
    WeightOnlyQuant,
)
from frontier.spaces._targets import compile_target

LAYOUTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "bert": (
        "encoder.layer.{i}.",
        (
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
            "intermediate.dense",
            "output.dense",
        ),
    ),
    "llama": (
        "model.layers.{i}.",
        (
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.o_proj",
            "mlp.gate_proj",
            "mlp.up_proj",
            "mlp.down_proj",
        ),
    ),
    # MoE decoders: their routed experts are fused 3-D parameters (see frontier.kernels.moe), not Linear
    # modules, so bits/sparsity reach attention (and Qwen2-MoE's shared expert); ``family: experts`` prunes
    # the routed experts.
    "qwen2_moe": (
        "model.layers.{i}.",
        (
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.o_proj",
            "mlp.shared_expert.gate_proj",
            "mlp.shared_expert.up_proj",
            "mlp.shared_expert.down_proj",
        ),
    ),
    "qwen3_moe": (
        "model.layers.{i}.",
        ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"),
    ),
    "mixtral": (
        "model.layers.{i}.",
        ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"),
    ),
    # lm-train's native decoder (TinyLM): the fused Q/K/V and the attention output projection of block I
    # (0-based). Its FFN (dense or routed) is a kernels.moe.MoELayer of fused raw parameters, not Linear
    # modules, and the router of an MoE layer is left in float (it is tiny and routing is sensitive to it).
    "tiny_lm": ("blocks.{i}.", ("qkv", "proj")),
}
GROUP_BY = ("none", "layer", "block", "module_type", "all")
# What a module of a ``sparsity`` group gets at a nonzero ratio, by ``kind``. ``channels`` removes whole FFN
# channels (the kept width rounded to 8: packing units; ``compression_recipe`` widens it to the down
# projection's quantization groups).
SPARSITY_CONFIGS: dict[str, Callable[[float], ConfigSpec]] = {
    "magnitude": lambda ratio: MagnitudeSparsity(ratio),
    "wanda": lambda ratio: WandaSparsity(ratio),
    "2:4": lambda ratio: NMSparsity(2, 4),
    "channels": lambda ratio: StructuredPrune(ffn_ratio=ratio, importance="activation", round_to=8),
}
SPARSITY_KINDS = tuple(SPARSITY_CONFIGS)
FFN_UP, FFN_DOWN = "intermediate.dense", "output.dense"  # the BERT FFN pair that ``channels`` prunes
MAX_LAYERS = 1024
_ATTENTION = re.compile(r"attn|attention", re.IGNORECASE)
_LAYER = re.compile(r"(?:^|\.)(\d+)(?:\.|$)")
_ITEM_NAME = re.compile(_NAME_PATTERN)  # a space item's name


def layer_index(module: str) -> int | None:
    """The 0-based layer index of a module name (its first numeric segment), None without one."""
    m = _LAYER.search(module)
    return None if m is None else int(m.group(1))


def ffn_pair(module: str) -> tuple[str, str]:
    """``(layer, down-projection)`` of a ``<layer>.intermediate.dense`` module, which ``channels`` prunes
    together with ``<layer>.output.dense``."""
    suffix = "." + FFN_UP
    if not module.endswith(suffix):
        raise ValueError(
            f"'channels' pruning applies to '<layer>.{FFN_UP}' modules (BERT-style FFN), but got {module!r}"
        )
    layer = module[: -len(suffix)]
    return layer, f"{layer}.{FFN_DOWN}"


def _fail(family: str, option: str, rule: str, value: Any) -> ValueError:
    return ValueError(f"The '{option}' option of family '{family}' {rule}. Got {value!r} instead.")


def _strings(family: str, option: str, value: Any) -> list[str]:
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise _fail(family, option, "must be a non-empty list of strings", value)
    if any(not isinstance(v, str) or not v for v in value):
        raise _fail(family, option, "must be a non-empty list of strings", value)
    return list(value)


def _module_names(family: str, opts: Mapping[str, Any]) -> list[str]:
    has_modules, has_layers = "modules" in opts, "num_layers" in opts
    if has_modules == has_layers:
        raise ValueError(
            f"Family '{family}' needs a model description: give either 'modules' (the qualified Linear "
            "names) or 'num_layers' (with 'layout', default 'bert'), not both and not neither. "
            f"Got options {sorted(opts)} instead."
        )
    if has_modules:
        if "layout" in opts:
            raise _fail(
                family, "layout", "only applies with 'num_layers', not with 'modules'", opts["layout"]
            )
        names = _strings(family, "modules", opts["modules"])
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise _fail(family, "modules", f"must not repeat a module (repeated: {dup})", opts["modules"])
        return names
    n = opts["num_layers"]
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_LAYERS:
        raise _fail(family, "num_layers", f"must be an int in [1, {MAX_LAYERS}]", n)
    layout = opts.get("layout", "bert")
    if layout not in LAYOUTS:
        raise _fail(family, "layout", f"must be one of {sorted(LAYOUTS)}", layout)
    prefix, suffixes = LAYOUTS[layout]
    return [prefix.format(i=i) + s for i in range(n) for s in suffixes]


def _select(family: str, names: list[str], targets: list[str]) -> list[str]:
    selected: set[str] = set()
    for t in targets:
        try:
            regex = compile_target(t)
        except ValueError as exc:
            raise _fail(family, "targets", f"must hold valid patterns ({exc})", targets) from None
        hits = [n for n in names if regex.fullmatch(n)]
        if not hits:
            raise _fail(
                family,
                "targets",
                f"must each match at least one module; {t!r} matches none of {names[:4]}... "
                f"({len(names)} modules). Use an exact name, a glob ('*' = one segment, '**' = any) or "
                "'re:<regex>'",
                targets,
            )
        selected.update(hits)
    return [n for n in names if n in selected]


def group_key(module: str, group_by: str) -> str:
    """The group a module belongs to under ``group_by`` (the parameter name's suffix)."""
    if group_by == "none":
        return module
    if group_by == "all":
        return "all"
    m = _LAYER.search(module)
    if m is None:
        return module  # no layer index (e.g. a pooler): a group of its own
    layer, rest = m.group(1), module[m.end() :]
    if group_by == "layer":
        return f"layer_{layer}"
    if group_by == "block":
        return f"layer_{layer}." + ("attention" if _ATTENTION.search(rest) else "ffn")
    return rest or module  # module_type


def _choices(
    family: str, value: Any, *, ints: bool, low: float, high: float, option: str = "choices"
) -> list[Any]:
    """``value`` as a sorted list, checked to be distinct ints (or numbers) in ``[low, high]``."""
    kind = "ints" if ints else "numbers"
    rule = f"must be a non-empty list of distinct {kind} in [{low:g}, {high:g}]"
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise _fail(family, option, rule, value)
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int if ints else int | float):
            raise _fail(family, option, rule, value)
        if not low <= v <= high:
            raise _fail(family, option, rule, value)
    if len(set(value)) != len(value):
        raise _fail(family, option, rule, value)
    return sorted(value)


class _AllocationFamily(SpaceFamily):
    """Options both allocation families share (see the module docstring)."""

    targets: tuple[str, ...]
    modules: tuple[str, ...] | None = None
    num_layers: int | None = None
    layout: Literal["bert", "llama", "qwen2_moe", "qwen3_moe", "mixtral", "tiny_lm"] | None = None
    group_by: Literal["none", "layer", "block", "module_type", "all"] = "layer"
    depth_of: str | None = None

    @classmethod
    def normalize(cls, options: dict[str, Any]) -> dict[str, Any]:
        family = cls.family
        if "targets" not in options:
            raise ValueError(
                f"Family '{family}' needs 'targets': module names, globs or 're:' regexes "
                "(e.g. ['encoder.layer.*.attention.self.*']). Got none."
            )
        targets = _strings(family, "targets", options["targets"])
        _select(family, _module_names(family, options), targets)
        group_by = options.get("group_by", "layer")
        if group_by not in GROUP_BY:
            raise _fail(family, "group_by", f"must be one of {list(GROUP_BY)}", group_by)
        depth_of = options.get("depth_of")
        if depth_of is not None and (not isinstance(depth_of, str) or not _ITEM_NAME.fullmatch(depth_of)):
            raise _fail(
                family,
                "depth_of",
                "must be the name of an earlier 'nas' or 'moe' family item of the space (e.g. 'lm')",
                depth_of,
            )
        return {**options, "targets": targets}

    def described(self) -> list[str]:
        """The model description's Linear names."""
        given = {k: v for k in ("modules", "num_layers", "layout") if (v := getattr(self, k)) is not None}
        return _module_names(self.family, given)

    def selected(self) -> list[str]:
        """The described modules the targets select, in description order."""
        return _select(self.family, self.described(), list(self.targets))

    def config(self, value: Any) -> ConfigSpec | None:
        """What each module of a group gets at ``value`` (None: it stays as it is)."""
        raise NotImplementedError

    def expand(self, prefix: str) -> list[dict[str, Any]]:
        return Allocation(prefix, self).params()

    def decode(self, prefix: str, params: Mapping[str, Any]) -> DecodedRecipe:
        """This family's configs alone (the space-level :func:`compression_recipe` combines families)."""
        return compression_recipe([_Item(prefix, self)], params)


@register_family("bits")
class BitsFamily(_AllocationFamily):
    """Per-module weight bit-width: one ordinal parameter per group of targeted Linear modules.

    Options: ``targets`` (required), ``modules`` *or* ``num_layers`` (+ ``layout``, default ``bert``),
    ``choices`` (bit-widths 2..8, default [2, 3, 4, 8]), ``group_by`` (none|layer|block|module_type|all,
    default layer), ``group_size`` (input features per scale, a multiple of 8; default null: one scale per
    output channel), ``symmetric`` (default true). Parameters are ``PREFIX.<group>``.
    """

    choices: tuple[int, ...] = (2, 3, 4, 8)
    group_size: int | None = None
    symmetric: bool = True

    @classmethod
    def normalize(cls, options: dict[str, Any]) -> dict[str, Any]:
        out = super().normalize(options)
        out["choices"] = _choices("bits", options.get("choices", [2, 3, 4, 8]), ints=True, low=2, high=8)
        gs = options.get("group_size")
        if gs is not None and (isinstance(gs, bool) or not isinstance(gs, int) or gs < 8 or gs % 8):
            raise _fail("bits", "group_size", "must be null (per channel) or a multiple of 8 (>= 8)", gs)
        if not isinstance(options.get("symmetric", True), bool):
            raise _fail("bits", "symmetric", "must be true or false", options["symmetric"])
        return out

    def config(self, value: Any) -> ConfigSpec | None:
        return WeightOnlyQuant(int(value), group_size=self.group_size, symmetric=self.symmetric)


@register_family("sparsity")
class SparsityFamily(_AllocationFamily):
    """Per-module pruning ratio: one ordinal parameter per group of targeted Linear modules.

    Options: ``targets``, ``modules``/``num_layers``/``layout`` and ``group_by`` as for ``bits``; ``kind``
    (``magnitude``: layer-wide smallest weights; ``wanda``: |W|·‖X‖ per output row, from calibration data;
    ``2:4``: two of every four weights; ``channels``: structured, the FFN intermediate channels of least
    activation-weighted importance are removed from ``<layer>.intermediate.dense`` and
    ``<layer>.output.dense`` together, which shrinks both matrices; targets must be the
    ``intermediate.dense`` modules of BERT-style layers), ``choices`` (ratios in [0, 0.95], default
    [0, 0.25, 0.5, 0.75]; for ``2:4`` a subset of [0, 0.5], 0 meaning dense; for ``channels`` in [0, 0.9],
    default [0, 0.125, 0.25]).
    """

    kind: Literal["magnitude", "wanda", "2:4", "channels"] = "magnitude"
    choices: tuple[int | float, ...] = (0, 0.25, 0.5, 0.75)

    @classmethod
    def normalize(cls, options: dict[str, Any]) -> dict[str, Any]:
        out = super().normalize(options)
        kind = options.get("kind", "magnitude")
        if kind not in SPARSITY_KINDS:
            raise _fail("sparsity", "kind", f"must be one of {list(SPARSITY_KINDS)}", kind)
        if kind == "2:4":
            choices = _choices("sparsity", options.get("choices", [0, 0.5]), ints=False, low=0, high=0.5)
            if [c for c in choices if c not in (0, 0.5)]:
                raise _fail(
                    "sparsity",
                    "choices",
                    "must hold 0 (dense) and/or 0.5 (the 2:4 pattern) when kind is '2:4'",
                    options["choices"],
                )
        elif kind == "channels":
            # structured: whole FFN channels removed, so the matrices (and the time) really shrink
            modules = _select("sparsity", _module_names("sparsity", options), out["targets"])
            wrong = [m for m in modules if not m.endswith("." + FFN_UP)]
            if wrong:
                raise _fail(
                    "sparsity",
                    "targets",
                    f"must select only FFN up-projections ('<layer>.{FFN_UP}', BERT-style layers) when "
                    f"kind is 'channels' (it removes channels of '{FFN_UP}' and '{FFN_DOWN}' together); "
                    f"these are not: {wrong[:4]}",
                    out["targets"],
                )
            default: list[float] = [0, 0.125, 0.25]
            choices = _choices("sparsity", options.get("choices", default), ints=False, low=0, high=0.9)
        else:
            default = [0, 0.25, 0.5, 0.75]
            choices = _choices("sparsity", options.get("choices", default), ints=False, low=0, high=0.95)
        return {**out, "choices": choices}

    def config(self, value: Any) -> ConfigSpec | None:
        return SPARSITY_CONFIGS[self.kind](float(value)) if value != 0 else None


class Allocation:
    """A compiled ``bits`` or ``sparsity`` family item: its modules, groups and what a value means.

    Args:
        prefix: the item's ``name`` (parameters are ``PREFIX.<group>``).
        options: the family's validated options (:class:`BitsFamily` or :class:`SparsityFamily`).
    """

    def __init__(self, prefix: str, options: _AllocationFamily) -> None:
        self.options = options
        self.family = options.family
        self.prefix = prefix
        self.targets = list(options.targets)
        # the model description's Linear names, and those the targets select
        self.described = options.described()
        self.modules = options.selected()
        self.group_by = options.group_by
        self.choices: list[Any] = list(getattr(options, "choices", ()))
        self.kind: str = getattr(options, "kind", "magnitude")
        self.group_size: int | None = getattr(options, "group_size", None)
        self.symmetric: bool = getattr(options, "symmetric", True)
        self.groups: dict[str, list[str]] = {}
        for m in self.modules:
            self.groups.setdefault(f"{prefix}.{group_key(m, self.group_by)}", []).append(m)
        # the family whose depth gates the groups (``depth_of``), and each group's 0-based layer indices
        self.depth_of: str | None = options.depth_of
        self.group_layers = {
            g: sorted({i for m in ms if (i := layer_index(m)) is not None}) for g, ms in self.groups.items()
        }
        # every module whose weights the allocation changes, and per group
        self.covers = self._cut(self.modules)
        self.cuts = {g: self._cut(modules) for g, modules in self.groups.items()}

    @classmethod
    def of(cls, family: str, prefix: str, options: Mapping[str, Any]) -> Allocation:
        """Compile a spec item's raw ``options`` of family ``bits`` or ``sparsity``."""
        if family not in ("bits", "sparsity"):
            raise ValueError(f"Allocation families are 'bits' and 'sparsity'. Got {family!r} instead.")
        model = BitsFamily if family == "bits" else SparsityFamily
        compiled = model.compile(options)
        assert isinstance(compiled, _AllocationFamily)  # compile returns an instance of ``model``
        return cls(prefix, compiled)

    def _cut(self, modules: list[str]) -> list[str]:
        """``modules`` and, for ``channels``, the down-projections whose inputs go with them."""
        return [*modules, *(ffn_pair(m)[1] for m in modules)] if self.kind == "channels" else list(modules)

    def params(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for g in self.groups:
            param: dict[str, Any] = {"name": g, "kind": "ordinal", "choices": list(self.choices)}
            when = self.condition(g)
            if when is not None:
                param["when"] = when
            out.append(param)
        return out

    @property
    def depth_param(self) -> str | None:
        """The depth parameter that gates the groups (``<depth_of>.depth``), None when not gated."""
        return None if self.depth_of is None else f"{self.depth_of}.depth"

    def condition(self, group: str) -> dict[str, Any] | None:
        """The ``when`` of a group's parameter: with ``depth_of``, active only when the architecture has the
        group's shallowest layer (module index ``I`` is 0-based, the family's layer ``I + 1`` exists when
        ``depth >= I + 1``). A group of one layer (``none``, ``layer``, ``block``) is active exactly when
        that layer exists; one spanning layers (``module_type``, ``all``) when its shallowest one does, and
        its value then applies to those of its layers the architecture has. Layer 0 always exists."""
        layers = self.group_layers[group]
        if self.depth_param is None or not layers or layers[0] == 0:
            return None
        return {"param": self.depth_param, "ge": layers[0] + 1}

    def present(self, group: str, params: Mapping[str, Any]) -> list[str]:
        """The group's modules that exist in the candidate's architecture (all of them when not gated).

        Raises:
            ValueError: the candidate lacks the depth parameter, or gives the group a value although the
                architecture lacks all of its layers (an inactive parameter: not a candidate of the space).
        """
        modules = self.groups[group]
        name = self.depth_param
        if name is None:
            return modules
        if name not in params:
            raise ValueError(
                f"family '{self.prefix}' ({self.family}) is gated by '{name}' (depth_of: {self.depth_of}), "
                f"but the candidate has no '{name}' (it has {sorted(params)[:8]}); decode a candidate of the "
                "whole space"
            )
        depth = params[name]
        layers = self.group_layers[group]
        if layers and layers[0] >= depth:
            raise ValueError(
                f"family '{self.prefix}' ({self.family}): parameter '{group}' allocates layer {layers[0]} "
                f"(module indices are 0-based), but the architecture of family '{self.depth_of}' has "
                f"{depth} layers ('{name}' = {depth}: layers 0..{depth - 1}); an allocation for an absent "
                "layer is inactive in the space and cannot be applied. Decode a candidate sampled from it"
            )
        return [m for m in modules if (i := layer_index(m)) is None or i < depth]

    def config(self, value: Any) -> ConfigSpec | None:
        """What each module of a group gets when the group's parameter has ``value`` (None: a ratio of 0,
        the modules stay dense).

        Raises:
            ValueError: ``value`` is not one of the family's choices.
        """
        if value not in self.choices:
            raise ValueError(
                f"parameter of family '{self.prefix}' must be one of {self.choices}, but got {value!r}"
            )
        return self.options.config(value)


@dataclass(frozen=True)
class _Item:
    """A compiled allocation family item, as :func:`allocations` reads it from a space."""

    name: str
    compiled: _AllocationFamily


def allocations(space: Iterable[Any]) -> list[Allocation]:
    """The ``bits``/``sparsity`` family items of a spec's space (a :class:`StudySpec` or its ``space``)."""
    items = getattr(space, "space", space)
    out = []
    for item in items:
        if isinstance(item, _Item):
            out.append(Allocation(item.name, item.compiled))
        elif isinstance(item, FamilyParam) and item.family in ("bits", "sparsity"):
            out.append(Allocation.of(item.family, item.name, item.options))
    return out


def compression_recipe(space: Iterable[Any], params: Mapping[str, Any]) -> DecodedRecipe:
    """Decode a candidate of a compression space into the recipe it stands for (no torch).

    Args:
        space: a :class:`~spaces.StudySpec` or its ``space`` items; only ``bits``/``sparsity`` families count.
        params: the candidate's parameter values (``Candidate.params``); a family parameter that is missing
            leaves its modules uncompressed by that family.

    Returns:
        Per targeted module its configs in apply order (sparsity, then bits); a ``channels`` module's
        :class:`~spaces.StructuredPrune` targets its layer instead, its kept width a whole number of the
        down projection's quantization groups. Modules whose ratio is 0 get no sparsity config.

    A family with ``depth_of`` applies only to the layers the candidate's architecture has.

    Raises:
        ValueError: two families of the same kind assign the same module, a value is not a choice, or a
            ``depth_of`` family gives a value to a layer the architecture lacks.
    """
    per_module: dict[str, list[ConfigSpec]] = {}
    for alloc in check_allocations(space):
        for group in alloc.groups:
            if group not in params:
                continue
            modules = alloc.present(group, params)
            try:
                config = alloc.config(params[group])
            except ValueError:
                raise ValueError(
                    f"parameter '{group}' must be one of {alloc.choices}, but got {params[group]!r}"
                ) from None
            if config is not None:
                for m in modules:
                    per_module.setdefault(m, []).append(config)
    entries: dict[str, list[ConfigSpec]] = {}
    for module, configs in per_module.items():
        steps = sorted(configs, key=lambda c: c.STAGE)
        first = steps[0]
        if isinstance(first, StructuredPrune):
            layer, down = ffn_pair(module)
            bits = next((c for c in per_module.get(down, ()) if isinstance(c, WeightOnlyQuant)), None)
            round_to = math.lcm(8, (bits.group_size if bits is not None else None) or 8)
            entries[layer] = [dataclasses.replace(first, round_to=round_to)]
            steps = steps[1:]
        if steps:
            entries[module] = steps
    return DecodedRecipe(entries)


def check_allocations(space: Iterable[Any]) -> list[Allocation]:
    """The space's allocations, after checking that no module gets two bit-widths or two sparsities.

    Raises:
        ValueError: two families of the same kind target the same module.
    """
    allocs = allocations(space)
    owner: dict[tuple[str, str], str] = {}
    for alloc in allocs:
        for m in alloc.modules:
            key = (m, alloc.family)
            if key in owner:
                raise ValueError(
                    f"module '{m}' is allocated by two '{alloc.family}' families ('{owner[key]}' and "
                    f"'{alloc.prefix}'); make their targets disjoint"
                )
            owner[key] = alloc.prefix
    return allocs


def check_depth_links(space: Iterable[Any]) -> None:
    """Check every ``depth_of`` of a space's allocation families: it names an earlier ``nas``/``moe``
    family item, and the allocation covers no layer beyond that family's maximum depth.

    Items whose own options are invalid are skipped: :func:`~spaces.expand_space` reports those with the
    item's name.

    Raises:
        ValueError: naming the allocation family, the layer and the maximum (or the names available).
    """
    from frontier.spaces._family_lm import NASFamily

    earlier: dict[str, FamilyParam] = {}
    for item in getattr(space, "space", space):
        if not isinstance(item, FamilyParam):
            continue
        if item.family in ("bits", "sparsity") and item.options.get("depth_of") is not None:
            try:
                alloc = Allocation.of(item.family, item.name, item.options)
            except (TypeError, ValueError):
                alloc = None
            ref = earlier.get(str(item.options["depth_of"]))
            try:
                gate = None if ref is None else ref.compile()
            except (TypeError, ValueError):
                continue  # the referenced family's own error comes from expand_space
            if alloc is not None and not isinstance(gate, NASFamily):
                raise ValueError(
                    f"family '{item.name}' ({item.family}): 'depth_of' must name an earlier 'nas' or 'moe' "
                    "family item of the space (its depth gates this allocation's layers). Got "
                    f"{item.options['depth_of']!r}; earlier family items: {sorted(earlier)}"
                )
            if alloc is not None and isinstance(gate, NASFamily):
                high = gate.layers[1]
                deep = [(i, m) for m in alloc.modules if (i := layer_index(m)) is not None and i >= high]
                if deep:
                    i, m = max(deep)
                    raise ValueError(
                        f"family '{item.name}' ({item.family}) allocates layer {i} ('{m}'; module indices "
                        f"are 0-based), but family '{alloc.depth_of}' ({gate.family}) has at most {high} "
                        f"layers (layers: {list(gate.layers)}: indices 0..{high - 1}). Set num_layers <= "
                        f"{high} or narrow 'targets'"
                    )
        earlier[item.name] = item
