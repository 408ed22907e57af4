"""Declarative search spaces and study specs.

``import spaces`` is light: it pulls in pydantic and PyYAML, never torch or ray (a test says so).
"""

from frontier.spaces._candidate import Candidate, active, decode, distribution, encode, suggest
from frontier.spaces._deploy import RUNTIMES, RuntimeRules, check_deploy
from frontier.spaces._errors import SpecError
from frontier.spaces._families import SpaceFamily, available_families, register_family
from frontier.spaces._family_compress import compression_recipe
from frontier.spaces._family_experts import ExpertPlan, expert_plan
from frontier.spaces._family_lm import LayerArch, LMArch
from frontier.spaces._params import (
    CategoricalParam,
    Condition,
    FamilyParam,
    FloatParam,
    IntParam,
    OrdinalParam,
    Param,
)
from frontier.spaces._paths import LocalPath, PathOption, path_option_names
from frontier.spaces._recipe import (
    ConfigSpec,
    DecodedRecipe,
    MagnitudeSparsity,
    NMSparsity,
    StructuredPrune,
    WandaSparsity,
    WeightOnlyQuant,
)
from frontier.spaces._registry import Registry
from frontier.spaces._samplers import available_samplers
from frontier.spaces._spec import (
    Constraint,
    DeployTarget,
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
    "RUNTIMES",
    "Candidate",
    "CategoricalParam",
    "Condition",
    "ConfigSpec",
    "Constraint",
    "DecodedRecipe",
    "DeployTarget",
    "EvaluatorSpec",
    "ExpertPlan",
    "FamilyParam",
    "FloatParam",
    "IntParam",
    "LMArch",
    "LatencyConfig",
    "LayerArch",
    "LocalPath",
    "MagnitudeSparsity",
    "NMSparsity",
    "Objective",
    "OrdinalParam",
    "Param",
    "PathOption",
    "Registry",
    "Resources",
    "RuntimeRules",
    "SchedulerConfig",
    "SearchConfig",
    "SpaceFamily",
    "SpecError",
    "StructuredPrune",
    "StudySpec",
    "Tracking",
    "WandaSparsity",
    "WeightOnlyQuant",
    "active",
    "available_families",
    "available_samplers",
    "check_deploy",
    "compression_recipe",
    "decode",
    "distribution",
    "encode",
    "expand_space",
    "expert_plan",
    "load_spec",
    "parse_overrides",
    "path_option_names",
    "register_family",
    "spec_from_dict",
    "suggest",
]
