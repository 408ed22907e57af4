"""A new space family and a new evaluator, each registered in this one module.

``import`` it before loading a spec that names them (``frontier run`` takes specs only; a plugin module is
imported by the program that starts the study). tests/evaluators/test_extension_example.py runs it through
the evaluator conformance suite.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field

from frontier.evaluators import EvalContext, Evaluator, EvaluatorOptions, register_evaluator
from frontier.spaces import Candidate, register_family


@register_family("example-box")
def expand_box(prefix: str, options: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``dims`` float parameters ``PREFIX.x0 ...`` in ``[low, high]``."""
    unknown = sorted(set(options) - {"dims", "low", "high"})
    if unknown:
        raise ValueError(f"example-box options {unknown} are unknown. Allowed: ['dims', 'high', 'low']")
    dims, low, high = (
        int(options.get("dims", 2)),
        float(options.get("low", -1)),
        float(options.get("high", 1)),
    )
    if not dims >= 1 or not low < high:
        raise ValueError(
            f"example-box needs dims >= 1 and low < high. Got dims={dims}, low={low}, high={high}"
        )
    return [{"kind": "float", "name": f"{prefix}.x{i}", "low": low, "high": high} for i in range(dims)]


class SphereOptions(EvaluatorOptions):
    center: float = Field(default=0.0, description="Where the minimum of every coordinate is.")


@register_evaluator("example-sphere")
class Sphere(Evaluator):
    """``loss``: squared distance of the candidate's coordinates to ``center``; ``l1``: the L1 distance."""

    Options = SphereOptions
    options: SphereOptions

    @classmethod
    def tiny_spec(cls, workdir: Path) -> dict[str, Any]:
        return {
            "name": "tiny-sphere",
            "evaluator": {"kind": "example-sphere", "options": {"center": 0.25}},
            "space": [{"kind": "family", "name": "p", "family": "example-box", "options": {"dims": 3}}],
            "objectives": [{"name": "loss", "direction": "minimize"}],
        }

    def metrics(self) -> tuple[str, ...]:
        return ("loss", "l1")

    def check_params(self, names: set[str]) -> None:
        if not names:
            raise ValueError("example-sphere needs at least one float parameter")

    def evaluate(self, candidate: Candidate, context: EvalContext) -> dict[str, float]:
        d = [float(v) - self.options.center for v in candidate.params.values()]
        return {"loss": sum(x * x for x in d), "l1": sum(abs(x) for x in d)}
