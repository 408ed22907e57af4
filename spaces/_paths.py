"""Path-valued options, marked by type so a service can hold exactly those to its allowed roots.

An options model (an evaluator's ``Options``, a space family's options) declares a field that names a local
file or directory as :data:`LocalPath` (or ``Annotated[str, PathOption()]``). :func:`path_option_names`
finds such fields by their type, so the service's policy checks every one of them, bare relative names
included (``tokenizer: mytok`` is the directory ``./mytok``), and nothing else: no guessing from the value.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, Field


@dataclass(frozen=True)
class PathOption:
    """Marks an options field whose value is a local path (a file or a directory).

    The value stays a string (specs round-trip through JSON unchanged); a service resolves it, refuses it
    outside its allowed roots and re-checks it when the study opens it.
    """


LocalPath = Annotated[str, PathOption(), Field(min_length=1)]
"""A non-empty string that names a local file or directory; see :class:`PathOption`."""


def _marked(annotation: Any) -> bool:
    """Whether ``annotation`` is (or, inside ``X | None``, contains) a :class:`PathOption`-marked type."""
    if typing.get_origin(annotation) is Annotated:
        return any(isinstance(m, PathOption) for m in annotation.__metadata__) or _marked(
            typing.get_args(annotation)[0]
        )
    return any(_marked(a) for a in typing.get_args(annotation))


def path_option_names(model: type[BaseModel]) -> list[str]:
    """The fields of ``model`` marked as paths (:class:`PathOption`), in declaration order."""
    return [
        name
        for name, info in model.model_fields.items()
        if any(isinstance(m, PathOption) for m in info.metadata) or _marked(info.annotation)
    ]
