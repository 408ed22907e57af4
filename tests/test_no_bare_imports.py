"""Nothing imports Frontier's packages by their bare folder names (``services._cli``, ``kernels``): those are
``frontier.services``, ``frontier.kernels``, ... A bare import loads a second copy of a module from the
checkout, and ``kernels``/``spaces`` name Hugging Face's packages once installed. Code strings run with
``python -c`` count too."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("search", "spaces", "evaluators", "kernels", "services")
_NAMES = "|".join(PACKAGES)
# `from kernels import x`, `from services._cli import y`, `import spaces`; not `from frontier import kernels`,
# and not a mention in reST double backticks (prose about Hugging Face's packages)
BARE = re.compile(rf"(?<![\w.`])(?:from\s+(?:{_NAMES})[.\s]|(?<!frontier )import\s+(?:{_NAMES})\b(?!`))")


# imports Hugging Face's own `kernels` on purpose, next to Frontier
ALLOWED = {"tests/test_namespace.py"}


def test_no_source_imports_a_package_by_its_bare_name() -> None:
    folders = [*PACKAGES, "frontier", "tests", "benchmarks", "docs"]
    offenders = []
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if str(path.relative_to(ROOT)) in ALLOWED:
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if BARE.search(line) and path != Path(__file__).resolve():
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "import these as frontier.<package>:\n" + "\n".join(offenders)
