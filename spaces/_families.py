"""Search-space families: named macros that expand into ordinary parameters.

A spec may write ``{kind: family, name: lm, family: moe, options: {...}}``; the family's expander turns
the options into a list of plain parameter mappings (with ``when`` conditions), so every sampler sees an
ordinary conditional space and illegal combinations cannot be sampled.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

FamilyExpander = Callable[[str, Mapping[str, Any]], list[dict[str, Any]]]
_FAMILIES: dict[str, FamilyExpander] = {}


def register_family(name: str) -> Callable[[FamilyExpander], FamilyExpander]:
    """Register ``fn(prefix, options) -> [param mappings]`` as the space family ``name``."""

    def deco(fn: FamilyExpander) -> FamilyExpander:
        _FAMILIES[name] = fn
        return fn

    return deco


def available_families() -> list[str]:
    _load_builtin()
    return sorted(_FAMILIES)


def expand_family(family: str, prefix: str, options: Mapping[str, Any]) -> list[dict[str, Any]]:
    _load_builtin()
    try:
        fn = _FAMILIES[family]
    except KeyError:
        raise ValueError(f"Unknown space family '{family}'. Available: {sorted(_FAMILIES)}") from None
    return fn(prefix, options)


def _load_builtin() -> None:
    import importlib

    for module in ("frontier.spaces._family_lm", "frontier.spaces._family_compress"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
