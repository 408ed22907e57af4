"""Evaluators score candidates: tasks, quality, latency and size measurement.

``import evaluators`` stays light; each evaluator imports torch or pandas only when it runs.
"""

from frontier.evaluators._base import (
    EvalContext,
    Evaluator,
    EvaluatorOptions,
    InitialCandidate,
    TrialStopped,
)
from frontier.evaluators._lm_export import write_hf_checkpoint
from frontier.evaluators._registry import (
    available_evaluators,
    for_spec,
    get_evaluator_class,
    make_evaluator,
    register_evaluator,
)

__all__ = [
    "DeviceTransferPredictor",
    "EvalContext",
    "Evaluator",
    "EvaluatorOptions",
    "InitialCandidate",
    "TrialStopped",
    "available_evaluators",
    "for_spec",
    "get_evaluator_class",
    "make_evaluator",
    "register_evaluator",
    "write_hf_checkpoint",
]


def __getattr__(name: str) -> object:
    # Latency predictors need pandas/scikit-learn: imported on first use, so `import evaluators` stays light.
    if name == "DeviceTransferPredictor":
        from frontier.evaluators.latency import DeviceTransferPredictor

        return DeviceTransferPredictor
    raise AttributeError(f"module 'evaluators' has no attribute {name!r}")
