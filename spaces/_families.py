"""Search-space families: named macros that expand into ordinary parameters.

A spec may write ``{kind: family, name: lm, family: moe, options: {...}}``; the family's expander turns
the options into a list of plain parameter mappings (with ``when`` conditions), so every sampler sees an
ordinary conditional space and illegal combinations cannot be sampled.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel

from frontier.spaces._registry import Registry

FamilyExpander = Callable[[str, Mapping[str, Any]], list[dict[str, Any]]]
FAMILIES: Registry[FamilyExpander] = Registry(
    "space family",
    builtins=("frontier.spaces._family_lm", "frontier.spaces._family_compress"),
)
"""Space families by name; the built-in ones are in the modules named here."""


def register_family(name: str) -> Callable[[FamilyExpander], FamilyExpander]:
    """Register ``fn(prefix, options) -> [param mappings]`` as the space family ``name``.

    Raises:
        ValueError: another function already holds ``name``.
    """
    return FAMILIES.register(name)


def available_families() -> list[str]:
    return FAMILIES.available()


def expand_family(family: str, prefix: str, options: Mapping[str, Any]) -> list[dict[str, Any]]:
    return FAMILIES.get(family)(prefix, options)


def family_options_model(family: str) -> type[BaseModel]:
    """The options model of the family registered as ``family`` (its path options are
    :func:`~spaces.path_option_names`); a family registered as a plain function has no declared options.

    Raises:
        ValueError: ``Unknown space family 'x'. Available: [...]``.
    """
    entry = FAMILIES.get(family)
    return entry if isinstance(entry, type) and issubclass(entry, BaseModel) else BaseModel
