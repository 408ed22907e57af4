"""Space families for decoder-only LMs: ``nas`` (dense transformer) and ``moe`` (Mixture-of-Experts).

Both expand into ordinary conditional parameters named ``PREFIX.<param>``, so every sampler sees a plain
space in which illegal models cannot be drawn:

- the residual stream has one width, ``PREFIX.hidden``, shared by every layer;
- attention heads are chosen by per-layer head width (``PREFIX.head_dim_i``, heads = hidden / head_dim) or
  head count (``PREFIX.heads_i``); the expander checks that every choice divides every ``hidden`` choice;
- layer ``i``'s parameters are active only when ``PREFIX.depth >= i`` (layers up to ``layers[0]`` always);
- in ``moe``, ``PREFIX.experts_i`` (0 = dense) gates the rest of the layer: ``PREFIX.ffn_ratio_i`` is active
  for a dense layer, ``PREFIX.top_k_i``, ``PREFIX.expert_ffn_i`` and ``PREFIX.shared_expert_i`` for an MoE
  layer; top-k choices never exceed the smallest non-dense expert count, so ``top_k <= experts`` always
  holds.

With ``per_layer: false`` the per-layer parameters become one global parameter each (``PREFIX.head_dim``,
``PREFIX.ffn_ratio``, ...), which makes every candidate a uniform stack.

Example:
    ``{kind: family, name: lm, family: moe, options: {layers: [1, 4], hidden: [64, 128], experts: [0, 4, 8],
    top_k: [1, 2], expert_ffn: [64, 128]}}``
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from frontier.spaces._families import SpaceFamily, register_family

MAX_LAYERS = 64

_HEAD_KEYS = ("head_dim", "heads")


def _fail(family: str, option: str, rule: str, value: Any) -> ValueError:
    return ValueError(f"The '{option}' option of family '{family}' {rule}. Got {value!r} instead.")


def _int_choices(family: str, option: str, value: Any, *, minimum: int) -> list[int]:
    if isinstance(value, bool) or not isinstance(value, Sequence) or isinstance(value, str) or not value:
        raise _fail(family, option, "must be a non-empty list of ints", value)
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int):
            raise _fail(family, option, "must be a non-empty list of ints", value)
        if v < minimum:
            raise _fail(family, option, f"must hold ints >= {minimum}", value)
    if len(set(value)) != len(value):
        raise _fail(family, option, "must not repeat a choice", value)
    return sorted(value)


def _ratio_choices(family: str, option: str, value: Any) -> list[int | float]:
    if isinstance(value, bool) or not isinstance(value, Sequence) or isinstance(value, str) or not value:
        raise _fail(family, option, "must be a non-empty list of positive numbers", value)
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int | float) or not v > 0 or v != v or v == float("inf"):
            raise _fail(family, option, "must be a non-empty list of positive numbers", value)
    if len(set(value)) != len(value):
        raise _fail(family, option, "must not repeat a choice", value)
    return sorted(value)


def _bool_choices(family: str, option: str, value: Any) -> list[bool]:
    if not isinstance(value, Sequence) or isinstance(value, str) or not value:
        raise _fail(family, option, "must be a non-empty list of booleans", value)
    if any(not isinstance(v, bool) for v in value) or len(set(value)) != len(value):
        raise _fail(family, option, "must be a non-empty list of distinct booleans", value)
    return sorted(value)


def _layers(family: str, value: Any) -> tuple[int, int]:
    rule = f"must be [low, high] with 1 <= low <= high <= {MAX_LAYERS}"
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
        raise _fail(family, "layers", rule, value)
    low, high = value
    if any(isinstance(v, bool) or not isinstance(v, int) for v in (low, high)):
        raise _fail(family, "layers", rule, value)
    if not 1 <= low <= high <= MAX_LAYERS:
        raise _fail(family, "layers", rule, value)
    return low, high


@dataclass(frozen=True)
class LayerArch:
    """One decoder layer. ``experts == 0`` is a dense SwiGLU FFN of width ``ffn``; otherwise ``ffn`` is
    each expert's width."""

    heads: int
    experts: int
    ffn: int
    top_k: int = 1
    shared_expert: bool = False

    @property
    def is_moe(self) -> bool:
        return self.experts >= 2


@dataclass(frozen=True)
class LMArch:
    """A decoder-only LM: tied byte/token embeddings, pre-norm layers (RMSNorm, RoPE attention, FFN).

    What a candidate of a ``nas``/``moe`` family decodes to (:meth:`NASFamily.decode`); ``vocab`` and
    ``max_len`` come from the data and the evaluator, not from the space.
    """

    vocab: int
    hidden: int
    layers: tuple[LayerArch, ...]
    max_len: int

    @property
    def moe_layers(self) -> int:
        return sum(layer.is_moe for layer in self.layers)

    @property
    def llama_expressible(self) -> bool:
        """Whether ``LlamaForCausalLM`` can express it: dense, and every layer alike."""
        first = self.layers[0]
        return all(not layer.is_moe and layer == first for layer in self.layers)


@register_family("nas")
class NASFamily(SpaceFamily):
    """Dense decoder-only transformer: depth, one residual width, per-layer heads and FFN ratio.

    Options: ``layers`` ([low, high] depth range, default [1, 4]), ``hidden`` (residual widths, default
    [64, 128]), ``head_dim`` (head widths, default [16, 32]) *or* ``heads`` (head counts), each dividing
    every hidden choice, ``ffn_ratio`` (FFN width / hidden, default [1, 2, 4]), ``per_layer`` (default true;
    false gives one global choice per parameter). Parameters are ``PREFIX.depth``, ``PREFIX.hidden``,
    ``PREFIX.head_dim_i`` (or ``PREFIX.heads_i``) and ``PREFIX.ffn_ratio_i``, in that sampling order.
    """

    layers: tuple[int, int] = (1, 4)
    hidden: tuple[int, ...] = (64, 128)
    ffn_ratio: tuple[int | float, ...] = (1, 2, 4)
    per_layer: bool = True
    head_dim: tuple[int, ...] | None = None
    heads: tuple[int, ...] | None = None

    @classmethod
    def normalize(cls, options: dict[str, Any]) -> dict[str, Any]:
        family = cls.family
        out = dict(options)
        out["layers"] = _layers(family, options.get("layers", [1, 4]))
        out["hidden"] = hidden = _int_choices(family, "hidden", options.get("hidden", [64, 128]), minimum=1)
        out["ffn_ratio"] = _ratio_choices(family, "ffn_ratio", options.get("ffn_ratio", [1, 2, 4]))
        if not isinstance(options.get("per_layer", True), bool):
            raise _fail(family, "per_layer", "must be true or false", options["per_layer"])
        given = [k for k in _HEAD_KEYS if k in options]
        if len(given) > 1:
            raise ValueError(
                f"The 'head_dim' and 'heads' options of family '{family}' are alternatives: give one. "
                f"Got head_dim={options['head_dim']!r} and heads={options['heads']!r}."
            )
        key = given[0] if given else "head_dim"
        raw = options.get(key, [16, 32] if not given else None)
        out[key] = heads = _int_choices(family, key, raw, minimum=1)
        for h in heads:
            bad = [d for d in hidden if d % h]
            if bad:
                what = "head width" if key == "head_dim" else "head count"
                raise _fail(
                    family,
                    key,
                    f"must divide every 'hidden' choice {hidden} (a layer's {what} splits the one "
                    f"residual width); {h} does not divide {bad}",
                    raw,
                )
        return out

    # -- naming ----------------------------------------------------------------------------------------
    @property
    def head_key(self) -> str:
        return "heads" if self.heads is not None else "head_dim"

    @property
    def head_choices(self) -> tuple[int, ...]:
        return self.heads if self.heads is not None else self.head_dim or ()

    def _slots(self, prefix: str) -> list[tuple[int | None, dict[str, Any] | None]]:
        """(layer index or None for global, the depth condition of that layer's first parameter)."""
        if not self.per_layer:
            return [(None, None)]
        low, high = self.layers
        return [(i, None if i <= low else {"param": f"{prefix}.depth", "ge": i}) for i in range(1, high + 1)]

    def _head(self, prefix: str) -> list[dict[str, Any]]:
        depth = {"name": f"{prefix}.depth", "kind": "int", "low": self.layers[0], "high": self.layers[1]}
        return [depth, _ordinal(f"{prefix}.hidden", self.hidden, None)]

    def expand(self, prefix: str) -> list[dict[str, Any]]:
        out = self._head(prefix)
        for i, when in self._slots(prefix):
            out.append(_ordinal(_name(prefix, self.head_key, i), self.head_choices, when))
            out.append(_ordinal(_name(prefix, "ffn_ratio", i), self.ffn_ratio, when))
        return out

    # -- decoding --------------------------------------------------------------------------------------
    def decode(
        self, prefix: str, params: Mapping[str, Any], *, vocab: int = 256, max_len: int = 2048
    ) -> LMArch:
        """The model a candidate describes (``vocab`` and ``max_len`` from the data and the evaluator).

        Raises:
            ValueError: a parameter of the family is missing or breaks a rule (named, with its value).
        """
        read = _Reader(self.family, prefix, params, self.per_layer)
        depth = read.integer("depth", None, minimum=1)
        hidden = read.integer("hidden", None, minimum=1)
        layers = [self._layer(read, i, hidden) for i in range(1, depth + 1)]
        return LMArch(vocab=vocab, hidden=hidden, layers=tuple(layers), max_len=max_len)

    def _layer(self, read: _Reader, i: int, hidden: int) -> LayerArch:
        return LayerArch(heads=read.heads(self.head_key, i, hidden), experts=0, ffn=read.dense_ffn(i, hidden))


@register_family("moe")
class MoEFamily(NASFamily):
    """Decoder-only transformer whose FFNs may be Mixture-of-Experts layers, chosen per layer.

    Everything of :class:`NASFamily`, plus per layer ``PREFIX.experts_i`` (0 = a dense FFN of
    ``ffn_ratio_i * hidden``); for MoE layers (experts >= 2) ``PREFIX.top_k_i``, ``PREFIX.expert_ffn_i``
    (each expert's hidden width) and ``PREFIX.shared_expert_i`` (an always-on expert of the same width).
    Options: the ``nas`` ones and ``experts`` (expert counts, 0 or >= 2, at least one >= 2; default
    [0, 4, 8]), ``top_k`` (each <= the smallest non-zero expert count; default [1, 2]), ``expert_ffn``
    (expert widths, default [64, 128]), ``shared_expert`` (default [false, true]).
    """

    experts: tuple[int, ...] = (0, 4, 8)
    top_k: tuple[int, ...] = (1, 2)
    expert_ffn: tuple[int, ...] = (64, 128)
    shared_expert: tuple[bool, ...] = (False, True)

    @classmethod
    def normalize(cls, options: dict[str, Any]) -> dict[str, Any]:
        out = super().normalize(options)
        experts = _int_choices("moe", "experts", options.get("experts", [0, 4, 8]), minimum=0)
        if 1 in experts:
            raise _fail(
                "moe",
                "experts",
                "must hold 0 (a dense layer) or counts >= 2; 1 expert is a dense layer",
                experts,
            )
        routed = [e for e in experts if e >= 2]
        if not routed:
            raise _fail(
                "moe",
                "experts",
                "must hold at least one count >= 2 (use family 'nas' for dense models)",
                experts,
            )
        top_k = _int_choices("moe", "top_k", options.get("top_k", [1, 2]), minimum=1)
        if max(top_k) > routed[0]:
            raise _fail(
                "moe",
                "top_k",
                f"must hold choices <= the smallest non-zero expert count {routed[0]} (experts={experts}), "
                "so that top_k <= experts holds in every layer",
                top_k,
            )
        expert_ffn = _int_choices("moe", "expert_ffn", options.get("expert_ffn", [64, 128]), minimum=1)
        shared = _bool_choices("moe", "shared_expert", options.get("shared_expert", [False, True]))
        return {**out, "experts": experts, "top_k": top_k, "expert_ffn": expert_ffn, "shared_expert": shared}

    def expand(self, prefix: str) -> list[dict[str, Any]]:
        out = self._head(prefix)
        for i, when in self._slots(prefix):
            n_experts = _name(prefix, "experts", i)
            out.append(_ordinal(_name(prefix, self.head_key, i), self.head_choices, when))
            out.append(_ordinal(n_experts, self.experts, when))
            # Conditions chain: a parameter conditioned on experts_i is inactive whenever experts_i is.
            if 0 in self.experts:
                out.append(
                    _ordinal(_name(prefix, "ffn_ratio", i), self.ffn_ratio, {"param": n_experts, "in": [0]})
                )
            is_moe = {"param": n_experts, "ge": 2}
            out.append(_ordinal(_name(prefix, "top_k", i), self.top_k, is_moe))
            out.append(_ordinal(_name(prefix, "expert_ffn", i), self.expert_ffn, is_moe))
            out.append(
                {
                    "name": _name(prefix, "shared_expert", i),
                    "kind": "categorical",
                    "choices": list(self.shared_expert),
                    "when": is_moe,
                }
            )
        return out

    def _layer(self, read: _Reader, i: int, hidden: int) -> LayerArch:
        heads = read.heads(self.head_key, i, hidden)
        experts = read.integer("experts", i, minimum=0)
        if experts == 1:
            raise read.fail("experts", i, "must be 0 (dense) or >= 2", experts)
        if experts == 0:
            return LayerArch(heads=heads, experts=0, ffn=read.dense_ffn(i, hidden))
        top_k = read.integer("top_k", i, minimum=1)
        if top_k > experts:
            raise read.fail("top_k", i, f"must be <= experts={experts}", top_k)
        ffn = read.integer("expert_ffn", i, minimum=1)
        shared = read.value("shared_expert", i)
        if not isinstance(shared, bool):
            raise read.fail("shared_expert", i, "must be true or false", shared)
        return LayerArch(heads=heads, experts=experts, ffn=ffn, top_k=top_k, shared_expert=shared)


def _name(prefix: str, param: str, layer: int | None) -> str:
    return f"{prefix}.{param}" if layer is None else f"{prefix}.{param}_{layer}"


class _Reader:
    """Reads a family's parameters from a candidate by the names the family gave them."""

    def __init__(self, family: str, prefix: str, params: Mapping[str, Any], per_layer: bool) -> None:
        self.family, self.prefix, self.params, self.per_layer = family, prefix, params, per_layer

    def name(self, key: str, layer: int | None) -> str:
        return _name(self.prefix, key, layer if self.per_layer else None)

    def fail(self, key: str, layer: int | None, rule: str, value: Any) -> ValueError:
        where = f"'{key}'" if layer is None else f"'{key}' of layer {layer}"
        return ValueError(
            f"family '{self.prefix}' ({self.family}): parameter {where} ({self.name(key, layer)}) {rule}. "
            f"Got {value!r} instead."
        )

    def value(self, key: str, layer: int | None) -> Any:
        name = self.name(key, layer)
        if name not in self.params:
            raise ValueError(
                f"family '{self.prefix}' ({self.family}): the candidate has no parameter '{name}' (it has "
                f"{sorted(self.params)[:8]}); decode a candidate of this family's space"
            )
        return self.params[name]

    def integer(self, key: str, layer: int | None, *, minimum: int) -> int:
        value = self.value(key, layer)
        if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
            raise self.fail(key, layer, "must be an integer", value)
        if value < minimum:
            raise self.fail(key, layer, f"must be >= {minimum}", value)
        return int(value)

    def heads(self, key: str, layer: int, hidden: int) -> int:
        if key == "head_dim":
            head_dim = self.integer("head_dim", layer, minimum=1)
            if hidden % head_dim:
                raise self.fail("head_dim", layer, f"must divide hidden={hidden}", head_dim)
            return hidden // head_dim
        heads = self.integer("heads", layer, minimum=1)
        if hidden % heads:
            raise self.fail("heads", layer, f"must divide hidden={hidden}", heads)
        return heads

    def dense_ffn(self, layer: int, hidden: int) -> int:
        ratio = self.value("ffn_ratio", layer)
        if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not ratio > 0:
            raise self.fail("ffn_ratio", layer, "must be a positive number", ratio)
        return max(1, round(ratio * hidden))


def _ordinal(name: str, choices: Sequence[Any], when: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "kind": "ordinal", "choices": list(choices)}
    if when is not None:
        out["when"] = when
    return out
