"""Search-space families: typed options that expand into ordinary parameters and decode a candidate back.

A spec may write ``{kind: family, name: lm, family: moe, options: {...}}``. The ``family`` name picks a
registered :class:`SpaceFamily` (the discriminator, resolved through the registry so a plugin adds its own),
whose frozen pydantic model validates ``options`` (unknown options refused). The compiled family then

- :meth:`~SpaceFamily.expand`\\s into plain parameter mappings (with ``when`` conditions), so every sampler
  sees an ordinary conditional space and illegal combinations cannot be sampled; and
- :meth:`~SpaceFamily.decode`\\s a candidate's values of those parameters into the typed thing they stand
  for (an :class:`~spaces.LMArch`, a compression allocation), which the evaluator builds and the export
  re-creates.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Self, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from frontier.spaces._registry import Registry

FamilyExpander = Callable[[str, Mapping[str, Any]], list[dict[str, Any]]]


class SpaceFamily(BaseModel):
    """Base of a space family: its options, as a frozen model that refuses unknown options.

    A subclass declares its options as fields (path-valued ones as :data:`~spaces.LocalPath`, so a service
    checks them), registers with :func:`register_family`, and implements :meth:`expand`; :meth:`decode`
    is optional (default: the family's own parameter values).

    Lifecycle: :meth:`compile` validates a spec item's ``options`` once; ``expand(prefix)`` gives the
    parameters (named ``PREFIX.<param>``) in sampling order; ``decode(prefix, params)`` reads them back.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    family: ClassVar[str] = ""

    @model_validator(mode="before")
    @classmethod
    def _known_options(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            raise TypeError(f"The options of family '{cls.family}' must be a mapping. Got {data!r} instead.")
        allowed = sorted(f.alias or name for name, f in cls.model_fields.items())
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise ValueError(
                f"Unknown option(s) {unknown} for family '{cls.family}'. Allowed options: {allowed}"
            )
        return cls.normalize(dict(data))

    @classmethod
    def normalize(cls, options: dict[str, Any]) -> dict[str, Any]:
        """Check the options across fields before the fields are parsed (a subclass's rules and messages,
        in its order) and return them normalised; default: unchanged."""
        return options

    @classmethod
    def compile(cls, options: Mapping[str, Any]) -> Self:
        """The validated options.

        Raises:
            ValueError: naming the option, its rule and the value received.
            TypeError: ``options`` is not a mapping.
        """
        try:
            return cls.model_validate(options)
        except ValidationError as exc:
            raise ValueError(_first_error(cls.family, exc)) from None

    def expand(self, prefix: str) -> list[dict[str, Any]]:
        """Parameter mappings (``{"name", "kind", ...}``, optionally ``when``) in sampling order."""
        raise NotImplementedError(f"family '{self.family}' ({type(self).__qualname__}) must implement expand")

    def decode(self, prefix: str, params: Mapping[str, Any]) -> Any:
        """What a candidate's values of this family's parameters stand for; default: those values."""
        return {k: v for k, v in params.items() if k.startswith(prefix + ".")}


def _first_error(family: str, exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    cause = (err.get("ctx") or {}).get("error")
    if err["type"] == "value_error" and cause is not None:
        return str(cause)  # the family's own message (it names the option, the rule and the value)
    option = ".".join(str(p) for p in err["loc"]) or "options"
    msg = err["msg"].removeprefix("Value error, ")
    return f"The '{option}' option of family '{family}': {msg}. Got {err.get('input')!r} instead."


FAMILIES: Registry[type[SpaceFamily] | FamilyExpander] = Registry(
    "space family",
    builtins=(
        "frontier.spaces._family_lm",
        "frontier.spaces._family_compress",
        "frontier.spaces._family_experts",
    ),
)
"""Space families by name; the built-in ones are in the modules named here."""
F = TypeVar("F", bound="type[SpaceFamily] | FamilyExpander")


def register_family(name: str) -> Callable[[F], F]:
    """Class decorator: make a :class:`SpaceFamily` available to specs as ``family: NAME``.

    A plain function ``fn(prefix, options) -> [param mappings]`` is still accepted (an untyped family: its
    options are not validated here and it decodes nothing).

    Raises:
        ValueError: another family already holds ``name``.
    """

    def deco(obj: F) -> F:
        if isinstance(obj, type) and issubclass(obj, SpaceFamily):
            obj.family = name
        FAMILIES.add(name, obj)
        return obj

    return deco


def available_families() -> list[str]:
    return FAMILIES.available()


def compile_family(family: str, options: Mapping[str, Any]) -> SpaceFamily | None:
    """The validated options of a typed family (None for a family registered as a plain function).

    Raises:
        ValueError: an unknown family, an unknown option or a value that breaks an option's rule.
    """
    entry = FAMILIES.get(family)
    if isinstance(entry, type) and issubclass(entry, SpaceFamily):
        return entry.compile(options)
    return None


def expand_family(family: str, prefix: str, options: Mapping[str, Any]) -> list[dict[str, Any]]:
    compiled = compile_family(family, options)
    if compiled is not None:
        return compiled.expand(prefix)
    expander: FamilyExpander = FAMILIES.get(family)  # type: ignore[assignment]  # not a SpaceFamily: a function
    return expander(prefix, options)


def family_options_model(family: str) -> type[BaseModel]:
    """The options model of the family registered as ``family`` (its path options are
    :func:`~spaces.path_option_names`); a family registered as a plain function has no declared options.

    Raises:
        ValueError: ``Unknown space family 'x'. Available: [...]``.
    """
    entry = FAMILIES.get(family)
    return entry if isinstance(entry, type) else BaseModel
