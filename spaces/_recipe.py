"""What a candidate of a ``bits``/``sparsity`` space decodes to: a compression recipe of torch-free configs.

``spaces`` never imports torch, and the kernels' config classes live next to the torch code that applies
them; so the decoded recipe holds small frozen dataclasses that describe those configs field for field.
:meth:`DecodedRecipe.to_dict` writes exactly the :class:`kernels.CompressionRecipe` dict format, which
``kernels.CompressionRecipe.from_dict`` (and so ``frontier apply`` and ``kernels.apply_``) loads; a test
holds every config here to its kernels counterpart's ``to_dict``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, Literal

RECIPE_VERSION = 1  # kernels.CompressionRecipe.VERSION


@dataclass(frozen=True)
class ConfigSpec:
    """Base of the torch-free config descriptions.

    ``KERNEL_TYPE`` is the name of the :class:`kernels.CompressionConfig` class it describes (the type name a
    stored recipe holds); ``STAGE`` orders configs on one module as ``kernels.Stage`` does (structure,
    sparsity, quantization).
    """

    KERNEL_TYPE: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1
    STAGE: ClassVar[int] = 2

    def to_dict(self) -> dict[str, Any]:
        """The kernels config's ``to_dict``: ``{"type", "version", **fields}``."""
        out: dict[str, Any] = {"type": self.KERNEL_TYPE, "version": self.VERSION}
        out.update({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})
        return out


@dataclass(frozen=True)
class WeightOnlyQuant(ConfigSpec):
    """:class:`kernels.WeightOnlyQuantConfig`: ``bits``-bit weights, a scale per ``group_size`` inputs."""

    KERNEL_TYPE: ClassVar[str] = "WeightOnlyQuantConfig"
    STAGE: ClassVar[int] = 2
    bits: int
    group_size: int | None = None
    symmetric: bool = True


@dataclass(frozen=True)
class MagnitudeSparsity(ConfigSpec):
    """:class:`kernels.MagnitudeSparsityConfig`: the ``ratio`` smallest weights of a layer masked."""

    KERNEL_TYPE: ClassVar[str] = "MagnitudeSparsityConfig"
    STAGE: ClassVar[int] = 1
    ratio: float


@dataclass(frozen=True)
class WandaSparsity(ConfigSpec):
    """:class:`kernels.WandaSparsityConfig`: Wanda pruning (|W|·‖X‖ per output row; needs calibration)."""

    KERNEL_TYPE: ClassVar[str] = "WandaSparsityConfig"
    STAGE: ClassVar[int] = 1
    ratio: float


@dataclass(frozen=True)
class NMSparsity(ConfigSpec):
    """:class:`kernels.NMSparsityConfig`: ``n`` of every ``m`` weights kept (2:4)."""

    KERNEL_TYPE: ClassVar[str] = "NMSparsityConfig"
    STAGE: ClassVar[int] = 1
    n: int = 2
    m: int = 4
    importance: Literal["magnitude", "activation"] = "magnitude"


@dataclass(frozen=True)
class StructuredPrune(ConfigSpec):
    """:class:`kernels.StructuredPruneConfig`: whole FFN channels removed from a layer (targets the layer)."""

    KERNEL_TYPE: ClassVar[str] = "StructuredPruneConfig"
    STAGE: ClassVar[int] = 0
    heads: int = 0
    ffn_ratio: float = 0.0
    importance: Literal["magnitude", "activation"] = "magnitude"
    round_to: int = 1


class DecodedRecipe:
    """A candidate of a compression space: which configs apply to which modules (exact names).

    The torch-free twin of :class:`kernels.CompressionRecipe`: :meth:`to_dict` is its dict format, so
    ``kernels.CompressionRecipe.from_dict(decoded.to_dict())`` is the recipe the evaluator applies and the
    export re-creates.
    """

    __slots__ = ("_entries",)

    def __init__(self, entries: Mapping[str, Sequence[ConfigSpec]]) -> None:
        self._entries = MappingProxyType({t: tuple(cs) for t, cs in entries.items()})

    @property
    def entries(self) -> Mapping[str, tuple[ConfigSpec, ...]]:
        return self._entries

    def items(self) -> Iterator[tuple[str, tuple[ConfigSpec, ...]]]:
        return iter(self._entries.items())

    def __bool__(self) -> bool:
        return bool(self._entries)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DecodedRecipe) and dict(self._entries) == dict(other._entries)

    def __hash__(self) -> int:
        return hash(tuple(self._entries.items()))

    def __repr__(self) -> str:
        return f"DecodedRecipe({dict(self._entries)!r})"

    def to_dict(self) -> dict[str, Any]:
        """``{"version": 1, "entries": {target: [config dict, ...]}}``, as :class:`kernels.CompressionRecipe`
        writes it."""
        return {
            "version": RECIPE_VERSION,
            "entries": {t: [c.to_dict() for c in cs] for t, cs in self._entries.items()},
        }
