"""``apply_(model, config_or_recipe)`` and ``CompressionRecipe``."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any, ClassVar

import torch
from torch import nn

from frontier.kernels._config import ApplyContext, CompressionConfig, _entry_for, config_from_dict
from frontier.kernels._select import get_submodule, select_modules, set_submodule


class CompressionRecipe:
    """Which configs apply to which modules, applied in one :func:`apply_` call.

    ``CompressionRecipe({"encoder.layer.*.intermediate.dense": [WeightOnlyQuantConfig(4, group_size=32)],
    "re:.*attention.self.(query|key)": [NMSparsityConfig(), WeightOnlyQuantConfig(8)]})``

    Keys are targets: exact qualified module names, globs or ``re:`` regexes (see
    :func:`~kernels.select_modules`); values are one config or a list. :func:`apply_` runs every structural
    config first, then sparsity, then quantization (recipe order within each), so a recipe is a
    declaration rather than a script; a module may be matched by at most one config of each type.
    """

    VERSION: ClassVar[int] = 1

    __slots__ = ("_entries",)

    def __init__(self, entries: Mapping[str, CompressionConfig | Sequence[CompressionConfig]]) -> None:
        if not isinstance(entries, Mapping):
            raise TypeError(
                f"CompressionRecipe expects a mapping of target -> configs. Got {entries!r} instead."
            )
        out: dict[str, tuple[CompressionConfig, ...]] = {}
        for target, configs in entries.items():
            if not isinstance(target, str):
                raise TypeError(f"CompressionRecipe targets must be str. Got {target!r} instead.")
            items = (configs,) if isinstance(configs, CompressionConfig) else tuple(configs)
            bad = [c for c in items if not isinstance(c, CompressionConfig)]
            if bad or not items:
                raise TypeError(
                    f"The configs for target {target!r} must be one or more CompressionConfig instances. "
                    f"Got {configs!r} instead."
                )
            out[target] = items
        self._entries = MappingProxyType(out)

    @property
    def entries(self) -> Mapping[str, tuple[CompressionConfig, ...]]:
        return self._entries

    def items(self) -> Iterator[tuple[str, tuple[CompressionConfig, ...]]]:
        return iter(self._entries.items())

    def to_dict(self) -> dict[str, Any]:
        """``{"version": 1, "entries": {target: [config dict, ...]}}`` (JSON-ready)."""
        return {
            "version": self.VERSION,
            "entries": {t: [c.to_dict() for c in cs] for t, cs in self._entries.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CompressionRecipe:
        """Inverse of :meth:`to_dict`; every config goes through the registered-type allowlist."""
        if not isinstance(data, Mapping) or not isinstance(data.get("entries"), Mapping):
            raise ValueError(
                f"A CompressionRecipe dict must have an 'entries' mapping. Got {data!r} instead."
            )
        version = data.get("version", cls.VERSION)
        if version != cls.VERSION:
            raise ValueError(
                f"The 'version' field of a CompressionRecipe dict must be {cls.VERSION}. "
                f"Got {version!r} instead."
            )
        unknown = sorted(set(data) - {"version", "entries"})
        if unknown:
            raise ValueError(
                f"Unknown field(s) {unknown} for CompressionRecipe. Allowed fields: ['entries', 'version']"
            )
        entries: dict[str, list[CompressionConfig]] = {}
        for target, configs in data["entries"].items():
            if not isinstance(configs, Sequence) or isinstance(configs, str):
                raise ValueError(
                    f"The configs for target {target!r} must be a list of dicts. Got {configs!r}."
                )
            entries[target] = [config_from_dict(c) for c in configs]
        return cls(entries)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CompressionRecipe) and dict(self._entries) == dict(other._entries)

    def __hash__(self) -> int:
        return hash(tuple(self._entries.items()))

    def __repr__(self) -> str:
        return f"CompressionRecipe({dict(self._entries)!r})"


def apply_(
    model: nn.Module,
    config: CompressionConfig | CompressionRecipe,
    *,
    targets: str | Sequence[str] | None = None,
    calibration: Mapping[str, torch.Tensor] | None = None,
) -> nn.Module:
    """Compress ``model`` in place with one config or a whole recipe; returns the model.

    Args:
        model: the model; modules are replaced in place (the return value differs from ``model`` only
            when the root module itself is replaced, e.g. a bare ``nn.Linear``).
        config: a registered :class:`~kernels.CompressionConfig`, or a :class:`CompressionRecipe`.
        targets: for a single config, the modules to apply it to (names, globs, ``re:`` regexes); modules
            the config does not apply to are skipped. ``None``: every Linear for quantization and sparsity,
            the whole model for structured pruning. Not allowed with a recipe (it names its own targets).
        calibration: per-module input norms from :func:`~kernels.calibrate`, needed by activation-aware
            configs (Wanda, N:M or structured pruning with ``importance="activation"``).

    Raises:
        ValueError: unknown config type, a target matching nothing applicable, a module matched twice by
            the same config type, missing calibration, or a shape the config cannot handle.
        TypeError: ``config`` is neither a config nor a recipe.
    """
    if isinstance(config, CompressionRecipe):
        if targets is not None:
            raise ValueError(
                "apply_ takes 'targets' only with a single config; a CompressionRecipe names its own."
            )
        steps: list[tuple[str | Sequence[str] | None, CompressionConfig]] = [
            (t, c) for t, cs in config.items() for c in cs
        ]
    elif isinstance(config, CompressionConfig):
        steps = [(targets, config)]
    else:
        raise TypeError(f"apply_ expects a CompressionConfig or CompressionRecipe. Got {config!r} instead.")
    for _, cfg in steps:
        _entry_for(cfg)  # unknown types fail before anything is modified
    calib = None if calibration is None else dict(calibration)
    for stage in sorted({cfg.STAGE for _, cfg in steps}):
        plan: list[tuple[str, CompressionConfig]] = []
        claimed: dict[tuple[str, type], object] = {}
        for target, cfg in (s for s in steps if stage == s[1].STAGE):
            for name in _resolve(model, target, cfg):
                key = (name, type(cfg))
                if key in claimed:
                    raise ValueError(
                        f"Module '{name}' is matched by two {type(cfg).__name__} entries (targets "
                        f"{claimed[key]!r} and {target!r}). Make the targets disjoint."
                    )
                claimed[key] = target
                plan.append((name, cfg))
        for name, cfg in plan:
            module = get_submodule(model, name)
            new = _entry_for(cfg).handler(module, cfg, ApplyContext(name, model, calib))
            if new is not module:
                if name == "":
                    model = new
                else:
                    set_submodule(model, name, new)
    return model


def _resolve(model: nn.Module, target: str | Sequence[str] | None, cfg: CompressionConfig) -> list[str]:
    entry = _entry_for(cfg)
    kind = type(cfg).__name__
    if target is None:
        if entry.default_targets is not None:
            names = entry.default_targets(model)
        else:
            names = [n for n, m in model.named_modules() if entry.accepts(m)]
        if not names:
            raise ValueError(f"{kind} found no module it applies to in {type(model).__name__}.")
        return names
    selected = select_modules(model, target)
    names = [n for n, m in selected.items() if entry.accepts(m)]
    if not names:
        shown = [f"{n or '<root>'} ({type(m).__name__})" for n, m in list(selected.items())[:3]]
        raise ValueError(
            f"The target {target!r} matched {len(selected)} module(s), none of which {kind} applies to: "
            f"{shown}."
        )
    return names
