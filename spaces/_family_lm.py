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
from typing import Any

from frontier.spaces._families import register_family

MAX_LAYERS = 64

_NAS_DEFAULTS: dict[str, Any] = {
    "layers": [1, 4],
    "hidden": [64, 128],
    "ffn_ratio": [1, 2, 4],
    "per_layer": True,
}
_MOE_DEFAULTS: dict[str, Any] = {
    **_NAS_DEFAULTS,
    "experts": [0, 4, 8],
    "top_k": [1, 2],
    "expert_ffn": [64, 128],
    "shared_expert": [False, True],
}
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


def _check_keys(family: str, options: Mapping[str, Any], allowed: Sequence[str]) -> None:
    if not isinstance(options, Mapping):
        raise TypeError(f"The options of family '{family}' must be a mapping. Got {options!r} instead.")
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"Unknown option(s) {unknown} for family '{family}'. Allowed options: {sorted(allowed)}"
        )


class _Layout:
    """Validated options shared by both families, and the helpers that name and condition parameters."""

    def __init__(self, family: str, prefix: str, options: Mapping[str, Any], defaults: Mapping[str, Any]):
        self.family = family
        self.prefix = prefix
        opts = {**defaults, **options}
        self.opts = opts
        self.low, self.high = _layers(family, opts["layers"])
        self.hidden = _int_choices(family, "hidden", opts["hidden"], minimum=1)
        self.ffn_ratio = _ratio_choices(family, "ffn_ratio", opts["ffn_ratio"])
        if not isinstance(opts["per_layer"], bool):
            raise _fail(family, "per_layer", "must be true or false", opts["per_layer"])
        self.per_layer: bool = opts["per_layer"]
        given = [k for k in _HEAD_KEYS if k in options]
        if len(given) > 1:
            raise ValueError(
                f"The 'head_dim' and 'heads' options of family '{family}' are alternatives: give one. "
                f"Got head_dim={options['head_dim']!r} and heads={options['heads']!r}."
            )
        self.head_key = given[0] if given else "head_dim"
        raw_heads = options.get(self.head_key, [16, 32] if not given else None)
        self.heads = _int_choices(family, self.head_key, raw_heads, minimum=1)
        for h in self.heads:
            bad = [d for d in self.hidden if d % h]
            if bad:
                what = "head width" if self.head_key == "head_dim" else "head count"
                raise _fail(
                    family,
                    self.head_key,
                    f"must divide every 'hidden' choice {self.hidden} (a layer's {what} splits the one "
                    f"residual width); {h} does not divide {bad}",
                    raw_heads,
                )

    def name(self, param: str, layer: int | None) -> str:
        return f"{self.prefix}.{param}" if layer is None else f"{self.prefix}.{param}_{layer}"

    def layer_slots(self) -> list[tuple[int | None, dict[str, Any] | None]]:
        """(layer index or None for global, the depth condition of that layer's first parameter)."""
        if not self.per_layer:
            return [(None, None)]
        depth = self.name("depth", None)
        return [(i, None if i <= self.low else {"param": depth, "ge": i}) for i in range(1, self.high + 1)]

    def head(self) -> list[dict[str, Any]]:
        depth = {"name": self.name("depth", None), "kind": "int", "low": self.low, "high": self.high}
        return [depth, _ordinal(self.name("hidden", None), self.hidden, None)]


def _ordinal(name: str, choices: Sequence[Any], when: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "kind": "ordinal", "choices": list(choices)}
    if when is not None:
        out["when"] = when
    return out


@register_family("nas")
def expand_nas(prefix: str, options: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Dense decoder-only transformer: depth, one residual width, per-layer heads and FFN ratio.

    Args:
        prefix: the family item's ``name``; parameters are ``PREFIX.depth``, ``PREFIX.hidden``,
            ``PREFIX.head_dim_i`` (or ``PREFIX.heads_i``) and ``PREFIX.ffn_ratio_i``.
        options: ``layers`` ([low, high] depth range, default [1, 4]), ``hidden`` (residual widths,
            default [64, 128]), ``head_dim`` (head widths, default [16, 32]) *or* ``heads`` (head counts),
            each dividing every hidden choice, ``ffn_ratio`` (FFN width / hidden, default [1, 2, 4]),
            ``per_layer`` (default true; false gives one global choice per parameter).

    Returns:
        Parameter mappings in sampling order.

    Raises:
        ValueError: an unknown option or a value that breaks an option's rule (named in the message).
    """
    _check_keys("nas", options, [*_NAS_DEFAULTS, *_HEAD_KEYS])
    lay = _Layout("nas", prefix, options, _NAS_DEFAULTS)
    out = lay.head()
    for i, when in lay.layer_slots():
        out.append(_ordinal(lay.name(lay.head_key, i), lay.heads, when))
        out.append(_ordinal(lay.name("ffn_ratio", i), lay.ffn_ratio, when))
    return out


@register_family("moe")
def expand_moe(prefix: str, options: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Decoder-only transformer whose FFNs may be Mixture-of-Experts layers, chosen per layer.

    Everything of :func:`expand_nas`, plus per layer ``PREFIX.experts_i`` (0 = a dense FFN of
    ``ffn_ratio_i * hidden``); for MoE layers (experts >= 2) ``PREFIX.top_k_i``, ``PREFIX.expert_ffn_i``
    (each expert's hidden width) and ``PREFIX.shared_expert_i`` (an always-on expert of the same width).

    Args:
        prefix: the family item's ``name``.
        options: the ``nas`` options and ``experts`` (expert counts, 0 or >= 2, at least one >= 2; default
            [0, 4, 8]), ``top_k`` (each <= the smallest non-zero expert count; default [1, 2]),
            ``expert_ffn`` (expert widths, default [64, 128]), ``shared_expert`` (default [false, true]).

    Returns:
        Parameter mappings in sampling order.

    Raises:
        ValueError: an unknown option or a value that breaks an option's rule (named in the message).
    """
    _check_keys("moe", options, [*_MOE_DEFAULTS, *_HEAD_KEYS])
    lay = _Layout("moe", prefix, options, _MOE_DEFAULTS)
    experts = _int_choices("moe", "experts", lay.opts["experts"], minimum=0)
    if 1 in experts:
        raise _fail(
            "moe", "experts", "must hold 0 (a dense layer) or counts >= 2; 1 expert is a dense layer", experts
        )
    routed = [e for e in experts if e >= 2]
    if not routed:
        raise _fail(
            "moe", "experts", "must hold at least one count >= 2 (use family 'nas' for dense models)", experts
        )
    top_k = _int_choices("moe", "top_k", lay.opts["top_k"], minimum=1)
    if max(top_k) > routed[0]:
        raise _fail(
            "moe",
            "top_k",
            f"must hold choices <= the smallest non-zero expert count {routed[0]} (experts={experts}), "
            "so that top_k <= experts holds in every layer",
            top_k,
        )
    expert_ffn = _int_choices("moe", "expert_ffn", lay.opts["expert_ffn"], minimum=1)
    shared = _bool_choices("moe", "shared_expert", lay.opts["shared_expert"])

    out = lay.head()
    for i, when in lay.layer_slots():
        n_experts = lay.name("experts", i)
        out.append(_ordinal(lay.name(lay.head_key, i), lay.heads, when))
        out.append(_ordinal(n_experts, experts, when))
        # Conditions chain: a parameter conditioned on experts_i is inactive whenever experts_i is.
        if 0 in experts:
            out.append(_ordinal(lay.name("ffn_ratio", i), lay.ffn_ratio, {"param": n_experts, "in": [0]}))
        is_moe = {"param": n_experts, "ge": 2}
        out.append(_ordinal(lay.name("top_k", i), top_k, is_moe))
        out.append(_ordinal(lay.name("expert_ffn", i), expert_ffn, is_moe))
        out.append(
            {"name": lay.name("shared_expert", i), "kind": "categorical", "choices": shared, "when": is_moe}
        )
    return out
