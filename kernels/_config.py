"""Compression configs: the base class, the handler registry (which is also the serialisation allowlist).

A config is a small frozen dataclass named for what it does. The code that applies it is registered against
the config's *type* with :func:`register_handler`; only registered types can be rebuilt by
:meth:`CompressionConfig.from_dict`, so a stored recipe can never name an arbitrary class.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from frontier.spaces._registry import Registry

if TYPE_CHECKING:
    import torch
    from torch import nn


class Stage(enum.IntEnum):
    """When a config runs inside one :func:`~kernels.apply_` call: shapes first, then masks, then bits."""

    STRUCTURE = 0
    SPARSITY = 1
    QUANTIZATION = 2


@dataclass(frozen=True)
class CompressionConfig:
    """Base of every compression config.

    Subclasses are frozen dataclasses whose fields are plain JSON values (int, float, bool, str, None) and
    whose ``__post_init__`` validates them. ``VERSION`` is bumped when a field's meaning changes;
    :meth:`from_dict` refuses dicts written by a newer version. ``STAGE`` orders configs inside a recipe.
    """

    VERSION: ClassVar[int] = 1
    STAGE: ClassVar[Stage] = Stage.QUANTIZATION

    def to_dict(self) -> dict[str, Any]:
        """``{"type": class name, "version": VERSION, **fields}``; :meth:`from_dict` inverts it."""
        out: dict[str, Any] = {"type": type(self).__name__, "version": self.VERSION}
        for f in dataclasses.fields(self):
            out[f.name] = getattr(self, f.name)
        return out

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> CompressionConfig:
        """Rebuild a config from :meth:`to_dict` output. Only registered config types are accepted."""
        return config_from_dict(data)


C = TypeVar("C", bound=CompressionConfig)


@dataclass(frozen=True)
class ApplyContext:
    """What a handler gets besides the module and the config.

    Attributes:
        name: qualified name of the module in ``model`` ("" for the root).
        model: the root module being compressed.
        calibration: per-module input norms from :func:`~kernels.calibrate` (a private copy that handlers
            may update when they change a module's input width), or ``None``.
    """

    name: str
    model: nn.Module
    calibration: dict[str, torch.Tensor] | None = None


Handler = Callable[["nn.Module", C, ApplyContext], "nn.Module"]


@dataclass(frozen=True)
class _Entry(Generic[C]):
    config_type: type[C]
    handler: Handler[C]
    accepts: Callable[[nn.Module], bool]
    default_targets: Callable[[nn.Module], list[str]] | None = field(default=None)


def _entry_origin(entry: _Entry[Any]) -> str:
    cls, fn = entry.config_type, entry.handler
    return f"{cls.__module__}.{cls.__qualname__} (handler {fn.__module__}.{fn.__qualname__})"


HANDLERS: Registry[_Entry[Any]] = Registry(
    "compression config type",
    builtins=("frontier.kernels._qlinear", "frontier.kernels._prune", "frontier.kernels._sparsity"),
    origin=_entry_origin,
)
"""Handlers by config type name (the name ``to_dict`` writes); the built-in ones are in the modules named
here. Keyed by name, not type, because the name is what a stored recipe holds: two config classes may not
share one."""


def register_handler(
    config_type: type[C],
    *,
    accepts: Callable[[nn.Module], bool],
    default_targets: Callable[[nn.Module], list[str]] | None = None,
) -> Callable[[Handler[C]], Handler[C]]:
    """Decorator: ``handler(module, config, ctx) -> module`` applies ``config_type`` to one module.

    Registering also puts ``config_type`` on the allowlist that :meth:`CompressionConfig.from_dict` uses.

    Args:
        config_type: the config class the handler applies.
        accepts: which selected modules the handler takes; the others a target pattern matches are skipped.
        default_targets: module names used when ``apply_`` gets no ``targets`` (default: every module
            ``accepts`` takes).

    Raises:
        TypeError: ``config_type`` is not a :class:`CompressionConfig` subclass.
        ValueError: another handler or config class already holds the config type's name.
    """
    if not (isinstance(config_type, type) and issubclass(config_type, CompressionConfig)):
        raise TypeError(
            f"register_handler expects a CompressionConfig subclass. Got {config_type!r} instead."
        )

    def deco(fn: Handler[C]) -> Handler[C]:
        HANDLERS.add(config_type.__name__, _Entry(config_type, fn, accepts, default_targets))
        return fn

    return deco


def available_configs() -> list[str]:
    """Names of the config types that can be applied and rebuilt from a dict."""
    return HANDLERS.available()


def _entry_for(config: CompressionConfig) -> _Entry[Any]:
    name = type(config).__name__
    entry = HANDLERS.get(name)
    if entry.config_type is not type(config):  # a same-named class from elsewhere is not on the allowlist
        raise ValueError(
            f"Unknown compression config type '{name}' from {type(config).__module__}: the registered "
            f"'{name}' is {entry.config_type.__module__}.{entry.config_type.__qualname__}. "
            "Register a handler for it under a distinct class name."
        )
    return entry


def config_from_dict(data: Mapping[str, Any]) -> CompressionConfig:
    """Rebuild any registered config from ``{"type": ..., "version": ..., **fields}``."""
    if not isinstance(data, Mapping):
        raise TypeError(f"A compression config dict must be a mapping. Got {type(data).__name__} instead.")
    type_name = data.get("type")
    if not isinstance(type_name, str):
        raise ValueError(HANDLERS.unknown_message(type_name))
    cls = HANDLERS.get(type_name).config_type
    version = data.get("version", cls.VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= cls.VERSION:
        raise ValueError(
            f"The 'version' field of a {type_name} dict must be an int in [1, {cls.VERSION}] "
            f"(this build reads up to version {cls.VERSION}). Got {version!r} instead."
        )
    fields_ = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in data.items() if k not in ("type", "version")}
    unknown = sorted(set(values) - fields_)
    if unknown:
        raise ValueError(f"Unknown field(s) {unknown} for {type_name}. Allowed fields: {sorted(fields_)}")
    return cls(**values)
