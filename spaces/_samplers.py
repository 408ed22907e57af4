"""The sampler registry, kept here (torch-, Ray- and Optuna-free) so the spec can check ``search.sampler``.

The factories themselves live in :mod:`frontier.search._samplers`, the one built-in module this registry
imports on first use; it registers them with ``@register_sampler``. A user's sampler registered before a
spec is loaded is accepted by the spec like a built-in one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from frontier.spaces._registry import Registry

if TYPE_CHECKING:
    from frontier.spaces._spec import StudySpec

SamplerFactory = Callable[["StudySpec"], Any]
"""``factory(spec) -> optuna.samplers.BaseSampler`` (typed ``Any`` here: ``spaces`` never imports Optuna)."""

SAMPLERS: Registry[SamplerFactory] = Registry("sampler", builtins=("frontier.search._samplers",))


def available_samplers() -> list[str]:
    """Names ``search.sampler`` accepts (the built-in ones load Optuna's module on first call)."""
    return SAMPLERS.available()
