from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError


class SpecError(ValueError):
    """A study spec that cannot run. The message names each bad field path, the rule and what was given."""


def _unwrap(annotation: Any) -> list[Any]:
    """Model classes reachable from an annotation (through Optional, unions, tuples, Annotated)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType, tuple, list, dict):
        out: list[Any] = []
        for arg in typing.get_args(annotation):
            out.extend(_unwrap(arg))
        return out
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return []


def _allowed_fields(root: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    models: list[type[BaseModel]] = [root]
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        nxt: list[type[BaseModel]] = []
        for m in models:
            if part in m.model_fields:
                nxt.extend(_unwrap(m.model_fields[part].annotation))
            # a discriminated-union tag appears in the loc: keep the member whose kind matches
            kind = m.model_fields.get("kind")
            if kind is not None and part in typing.get_args(kind.annotation):
                nxt.append(m)
        models = nxt or models
    names: list[str] = []
    for m in models:
        for fname, field in m.model_fields.items():
            names.append(field.alias or fname)
    return sorted(set(names))


def _path(loc: tuple[Any, ...]) -> str:
    from frontier.spaces._params import PARAM_KINDS

    out = ""
    prev: Any = None
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(prev, int) and part in PARAM_KINDS:
            pass  # pydantic's discriminator tag; the index already names the item
        else:
            out += ("." if out else "") + str(part)
        prev = part
    return out or "(top level)"


def format_validation_error(
    exc: ValidationError, root: type[BaseModel], *, prefix: tuple[str, ...] = (), what: str = "study spec"
) -> str:
    lines: list[str] = []
    errors = exc.errors(include_url=False)
    bad_locs = [tuple(e["loc"]) for e in errors]
    for err in errors:
        loc = tuple(err["loc"])
        if err["type"] == "too_short" and any(o[: len(loc)] == loc and o != loc for o in bad_locs):
            continue  # pydantic's echo of a list whose items failed; the item errors say it all
        msg = err["msg"].removeprefix("Value error, ")
        got = err.get("input")
        if err["type"] == "extra_forbidden":
            msg = f"unknown field; allowed fields: {_allowed_fields(root, loc)}"
        elif err["type"] == "missing":
            msg = "field required"
            got = None
        line = f"  {_path(prefix + loc)}: {msg}"
        if got is not None and err["type"] not in ("value_error",):
            shown = repr(got)
            line += f" (got {shown[:80] + '...' if len(shown) > 80 else shown})"
        lines.append(line)
    head = f"invalid {what} ({len(lines)} problem{'s' if len(lines) > 1 else ''}):"
    return "\n".join([head, *lines])
