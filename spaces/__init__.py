"""Declarative search spaces and study specs.

``import spaces`` is light: it pulls in pydantic and PyYAML, never torch or ray (a test says so).
"""

from spaces._candidate import Candidate, active, decode, distribution, encode, suggest
from spaces._errors import SpecError
from spaces._params import CategoricalParam, Condition, FloatParam, IntParam, OrdinalParam, Param
from spaces._spec import (
    SAMPLER_NAMES,
    Constraint,
    EvaluatorSpec,
    Objective,
    Resources,
    SearchConfig,
    StudySpec,
    Tracking,
    expand_space,
    load_spec,
    parse_overrides,
    spec_from_dict,
)

__all__ = [
    "SAMPLER_NAMES",
    "Candidate",
    "CategoricalParam",
    "Condition",
    "Constraint",
    "EvaluatorSpec",
    "FloatParam",
    "IntParam",
    "Objective",
    "OrdinalParam",
    "Param",
    "Resources",
    "SearchConfig",
    "SpecError",
    "StudySpec",
    "Tracking",
    "active",
    "decode",
    "distribution",
    "encode",
    "expand_space",
    "load_spec",
    "parse_overrides",
    "spec_from_dict",
    "suggest",
]
