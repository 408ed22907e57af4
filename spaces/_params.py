"""Search-space parameters: a discriminated union on ``kind``, with optional conditions."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    from frontier.spaces._families import SpaceFamily

_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.\-]*$"
Scalar = int | float | str | bool


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Condition(_Frozen):
    """Makes a parameter active only when an earlier parameter has given values.

    Give ``in`` (a list of values) or a numeric range with ``ge``/``le`` (or both).

    Example: ``when: {param: depth, ge: 3}`` activates ``width_3`` only for depth >= 3.
    """

    param: str
    in_: tuple[Scalar, ...] | None = Field(default=None, alias="in")
    ge: float | None = None
    le: float | None = None

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _one_rule(self) -> Condition:
        if self.in_ is None and self.ge is None and self.le is None:
            raise ValueError(
                f"a condition on '{self.param}' needs 'in' (a list of values) or 'ge'/'le' (a range); "
                "got none of them"
            )
        return self

    def holds(self, params: dict[str, Any]) -> bool:
        if self.param not in params:
            return False
        value = params[self.param]
        if self.in_ is not None and value not in self.in_:
            return False
        if self.ge is not None and not (isinstance(value, int | float) and value >= self.ge):
            return False
        return not (self.le is not None and not (isinstance(value, int | float) and value <= self.le))


class _ParamBase(_Frozen):
    name: str = Field(pattern=_NAME_PATTERN)
    when: Condition | None = None
    per: str | None = Field(
        default=None,
        description="Name of an earlier int parameter (e.g. 'depth'): expands this parameter into "
        "NAME_1..NAME_high, NAME_i active only when that parameter is >= i.",
    )


class IntParam(_ParamBase):
    kind: Literal["int"]
    low: int
    high: int
    step: int = Field(default=1, ge=1)
    log: bool = False

    @model_validator(mode="after")
    def _range(self) -> IntParam:
        if self.low > self.high:
            raise ValueError(f"`low <= high` must hold, but got (low={self.low}, high={self.high})")
        if self.log and self.low < 1:
            raise ValueError(f"`low >= 1` must hold when log=true, but got low={self.low}")
        if self.log and self.step != 1:
            raise ValueError(f"step must be 1 when log=true, but got step={self.step}")
        return self


class FloatParam(_ParamBase):
    kind: Literal["float"]
    low: float
    high: float
    step: float | None = Field(default=None, gt=0)
    log: bool = False

    @model_validator(mode="after")
    def _range(self) -> FloatParam:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError(f"low and high must be finite, but got (low={self.low}, high={self.high})")
        if self.low > self.high:
            raise ValueError(f"`low <= high` must hold, but got (low={self.low}, high={self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"`low > 0` must hold when log=true, but got low={self.low}")
        if self.log and self.step is not None:
            raise ValueError(f"step and log cannot be used together, but got step={self.step}, log=true")
        return self


class CategoricalParam(_ParamBase):
    """Unordered choices."""

    kind: Literal["categorical"]
    choices: tuple[Scalar | None, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> CategoricalParam:
        if len(set(map(repr, self.choices))) != len(self.choices):
            raise ValueError(f"choices must be unique, but got {list(self.choices)}")
        return self


class OrdinalParam(_ParamBase):
    """Ordered choices (e.g. bit-widths [2, 3, 4, 8]): searched by position so samplers see the order."""

    kind: Literal["ordinal"]
    choices: tuple[Scalar, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> OrdinalParam:
        if len(set(map(repr, self.choices))) != len(self.choices):
            raise ValueError(f"choices must be unique, but got {list(self.choices)}")
        return self


class FamilyParam(_Frozen):
    """A named family of parameters (e.g. ``moe``), expanded by its registered expander.

    The expanded parameters are named ``NAME.<param>`` (or as the family documents).
    """

    kind: Literal["family"]
    name: str = Field(pattern=_NAME_PATTERN)
    family: str = Field(min_length=1)
    options: dict[str, Any] = Field(default_factory=dict)

    def compile(self) -> SpaceFamily | None:
        """The family's validated options (None for a family registered as a plain function)."""
        from frontier.spaces._families import compile_family

        return compile_family(self.family, self.options)

    def decode(self, params: Mapping[str, Any]) -> Any:
        """What a candidate's values of this item's parameters stand for (:meth:`SpaceFamily.decode`).

        Raises:
            TypeError: the family was registered as a plain function, so it decodes nothing.
        """
        compiled = self.compile()
        if compiled is None:
            raise TypeError(
                f"family '{self.family}' of item '{self.name}' is registered as a plain function and decodes "
                "nothing; register a SpaceFamily subclass to decode its candidates"
            )
        return compiled.decode(self.name, params)


Param = Annotated[IntParam | FloatParam | CategoricalParam | OrdinalParam, Field(discriminator="kind")]
SpaceItem = Annotated[
    IntParam | FloatParam | CategoricalParam | OrdinalParam | FamilyParam, Field(discriminator="kind")
]
PARAM_KINDS = ("int", "float", "categorical", "ordinal", "family")
