"""A new space family and a new evaluator, each registered in this one module.

``import`` it before loading a spec that names them (``frontier run`` takes specs only; a plugin module is
imported by the program that starts the study). tests/evaluators/test_extension_example.py runs it through
the evaluator conformance suite.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from frontier.evaluators import EvalContext, Evaluator, EvaluatorOptions, register_evaluator
from frontier.spaces import Candidate, FamilyParam, SpaceFamily, StudySpec, register_family


@register_family("example-box")
class Box(SpaceFamily):
    """``dims`` float parameters ``PREFIX.x0 ...`` in ``[low, high]``; a candidate decodes to its point."""

    dims: int = Field(default=2, ge=1, le=64)
    low: float = -1.0
    high: float = 1.0

    @model_validator(mode="after")
    def _ordered(self) -> Box:
        if not self.low < self.high:
            raise ValueError(f"example-box needs low < high. Got low={self.low}, high={self.high}")
        return self

    def expand(self, prefix: str) -> list[dict[str, Any]]:
        return [
            {"kind": "float", "name": f"{prefix}.x{i}", "low": self.low, "high": self.high}
            for i in range(self.dims)
        ]

    def decode(self, prefix: str, params: Mapping[str, Any]) -> tuple[float, ...]:
        return tuple(float(params[f"{prefix}.x{i}"]) for i in range(self.dims))


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

    def bind_spec(self, spec: StudySpec) -> None:
        if not any(isinstance(item, FamilyParam) and item.family == "example-box" for item in spec.space):
            raise ValueError("example-sphere needs an 'example-box' family in the space")
        self.spec = spec

    def evaluate(self, candidate: Candidate, context: EvalContext) -> dict[str, float]:
        points = self.spec.decode(candidate.params).values()  # one tuple per example-box item
        d = [x - self.options.center for point in points for x in point]
        return {"loss": sum(x * x for x in d), "l1": sum(abs(x) for x in d)}
