"""The worked example of docs/architecture.md ("Extension points"): a space family and an evaluator added in
one module register, load from a spec and pass the evaluator conformance suite; the document shows that
module verbatim."""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from frontier.evaluators._registry import EVALUATORS
from frontier.spaces import available_families, spec_from_dict
from frontier.spaces._families import FAMILIES
from tests.evaluators.test_conformance import run_conformance

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "examples" / "extension_example.py"


@pytest.fixture
def example() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("frontier_extension_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    try:
        yield module
    finally:  # leave the registries as the other tests expect them
        EVALUATORS.remove("example-sphere")
        FAMILIES.remove("example-box")
        del sys.modules[spec.name]


def test_example_registers_and_passes_conformance(example: ModuleType, tmp_path: Path) -> None:
    assert "example-box" in available_families()
    metrics = run_conformance("example-sphere", tmp_path)
    assert set(metrics) == {"loss", "l1"} and metrics["loss"] >= 0
    spec = spec_from_dict(example.Sphere.tiny_spec(tmp_path))
    assert [p.name for p in spec.params] == ["p.x0", "p.x1", "p.x2"]


def test_example_family_errors_name_the_rule(example: ModuleType) -> None:
    tiny = example.Sphere.tiny_spec(Path("."))
    tiny["space"][0]["options"] = {"dims": 0}
    with pytest.raises(
        ValueError, match=r"The 'dims' option of family 'example-box': .*greater than or equal to 1"
    ):
        spec_from_dict(tiny)
    tiny["space"][0]["options"] = {"low": 1, "high": 0}
    with pytest.raises(ValueError, match=r"example-box needs low < high. Got low=1.0, high=0.0"):
        spec_from_dict(tiny)
    tiny["space"][0]["options"] = {"dim": 3}
    with pytest.raises(ValueError, match=r"Unknown option\(s\) \['dim'\] for family 'example-box'"):
        spec_from_dict(tiny)


def test_example_evaluator_gets_the_decoded_point(example: ModuleType) -> None:
    spec = spec_from_dict(example.Sphere.tiny_spec(Path(".")))
    assert spec.decode({"p.x0": 0.5, "p.x1": 0.25, "p.x2": 0}) == {"p": (0.5, 0.25, 0.0)}


def test_architecture_doc_shows_the_example_verbatim() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, flags=re.S)
    assert EXAMPLE.read_text() in blocks, "docs/architecture.md must show docs/examples/extension_example.py"
