"""Selecting modules by qualified name: exact names, globs (``*``: one segment, ``**``: any) or regexes."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from torch import nn

# the pattern language is the spec's (torch-free, so spaces can validate targets without torch)
from frontier.spaces._targets import compile_target as _compile


def name_matches(pattern: str, name: str) -> bool:
    """Whether qualified module ``name`` matches ``pattern`` (whole-name match)."""
    return _compile(pattern).fullmatch(name) is not None


def _as_list(targets: str | Sequence[str]) -> list[str]:
    if isinstance(targets, str):
        return [targets]
    if not isinstance(targets, Sequence) or not all(isinstance(t, str) for t in targets):
        raise TypeError(f"Targets must be a str or a sequence of str. Got {targets!r} instead.")
    return list(targets)


def select_modules(model: nn.Module, targets: str | Sequence[str]) -> dict[str, nn.Module]:
    """Modules of ``model`` whose qualified names match any of ``targets``, in ``named_modules`` order.

    Args:
        model: the root module; its own name is ``""``.
        targets: exact names (``encoder.layer.0.attention.self.query``), globs where ``*`` matches one
            name segment and ``**`` any number of them (``encoder.layer.*.attention.self.query``,
            ``encoder.**.dense``), or regexes prefixed with ``re:`` (matched against the whole name).

    Raises:
        ValueError: a target matches no module (the message lists close names), or a regex is invalid.
    """
    patterns = _as_list(targets)
    names = [n for n, _ in model.named_modules()]
    modules = dict(model.named_modules())
    selected: set[str] = set()
    for pattern in patterns:
        hits = [n for n in names if name_matches(pattern, n)]
        if not hits:
            close = difflib.get_close_matches(pattern, names, n=5, cutoff=0.5) or names[1:6]
            raise ValueError(
                f"The target {pattern!r} matched no module of {type(model).__name__}. "
                f"Close names: {close}. Use an exact name, a glob ('*' = one segment, '**' = any) "
                f"or 're:<regex>'."
            )
        selected.update(hits)
    return {n: modules[n] for n in names if n in selected}


def get_submodule(model: nn.Module, name: str) -> nn.Module:
    return model if name == "" else model.get_submodule(name)


def set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule at ``name`` (not the root)."""
    parent_name, _, child = name.rpartition(".")
    setattr(get_submodule(model, parent_name), child, module)
