"""Declarative search spaces and study specs.

``import spaces`` is light: it pulls in pydantic and PyYAML, never torch or ray (a test says so).
"""

from spaces._candidate import Candidate, active, decode, distribution, encode, suggest
from spaces._errors import SpecError
from spaces._families import available_families, register_family
from spaces._family_compress import compression_plan
from spaces._params import CategoricalParam, Condition, FamilyParam, FloatParam, IntParam, OrdinalParam, Param
from spaces._spec import (
    SAMPLER_NAMES,
    Constraint,
    EvaluatorSpec,
    LatencyConfig,
    Objective,
    Resources,
    SchedulerConfig,
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
    "FamilyParam",
    "FloatParam",
    "IntParam",
    "LatencyConfig",
    "Objective",
    "OrdinalParam",
    "Param",
    "Resources",
    "SchedulerConfig",
    "SearchConfig",
    "SpecError",
    "StudySpec",
    "Tracking",
    "active",
    "available_families",
    "compression_plan",
    "decode",
    "distribution",
    "encode",
    "expand_space",
    "load_spec",
    "parse_overrides",
    "register_family",
    "spec_from_dict",
    "suggest",
]
