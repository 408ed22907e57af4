"""The target-pattern language that names modules: exact names, globs and ``re:`` regexes.

Shared by the spec (``spaces``, which must not import torch) and :func:`kernels.select_modules`, so a
pattern a study validates is the pattern the kernels apply.
"""

from __future__ import annotations

import functools
import re


@functools.lru_cache(maxsize=256)
def compile_target(pattern: str) -> re.Pattern[str]:
    """A target pattern as a regex matched against whole qualified names.

    Exact names match themselves; in globs ``*`` matches one name segment, ``?`` one character of it and
    ``**`` any number of segments (``a.**.b`` also matches ``a.b``); ``re:PATTERN`` is a regex.

    Raises:
        ValueError: an invalid regex.
    """
    if pattern.startswith("re:"):
        try:
            return re.compile(pattern[3:])
        except re.error as exc:
            raise ValueError(f"The target {pattern!r} is not a valid regular expression: {exc}.") from None
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            if out and out[-1] == r"\." and pattern.startswith("**.", i):
                out[-1] = r"(?:\.|\..*\.)"
                i += 3
                continue
            out.append(".*")
            i += 2
            continue
        ch = pattern[i]
        out.append(r"[^.]*" if ch == "*" else r"[^.]" if ch == "?" else re.escape(ch))
        i += 1
    return re.compile("".join(out))
