"""The evaluator extension point: one base class, registered by name."""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from spaces import Candidate, SpecError
from spaces._errors import format_validation_error


class EvaluatorOptions(BaseModel):
    """Base for an evaluator's ``options``: frozen, unknown fields rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class TrialStopped(Exception):
    """Raised inside :meth:`EvalContext.report` when the scheduler stops the trial early."""


@dataclass
class EvalContext:
    """What an evaluation may know and do besides the candidate.

    Attributes:
        trial_number: Optuna trial number (or -1 outside a study).
        seed: a per-trial seed derived from the study seed and the trial number.
        workdir: a scratch directory for this trial's files.
        threads: CPU threads the trial may use (its ``resources.cpu``).
        device: ``"cpu"`` or ``"cuda"``.
    """

    trial_number: int = -1
    seed: int = 0
    workdir: Path | None = None
    threads: int = 1
    device: str = "cpu"
    reporter: Callable[[int, Mapping[str, float]], bool] | None = None
    history: list[tuple[int, dict[str, float]]] = field(default_factory=list)

    def report(self, step: int, metrics: Mapping[str, float]) -> None:
        """Report intermediate metrics at fidelity ``step`` (e.g. an epoch or a training step count).

        Raises:
            TrialStopped: when a multi-fidelity scheduler decided to stop this trial; let it propagate.
        """
        clean = {k: float(v) for k, v in metrics.items()}
        self.history.append((step, clean))
        if self.reporter is not None and not self.reporter(step, clean):
            raise TrialStopped(f"stopped by the scheduler at step {step}")


class Evaluator(abc.ABC):
    """Scores a candidate: builds (or compresses) a model and measures it.

    Lifecycle, on each worker: ``__init__(options)`` stores the validated options and must stay cheap;
    ``setup()`` is called once before the first evaluation (load data, models: heavy imports go here);
    ``evaluate(candidate, context)`` is called once per trial on the same instance, so it may cache
    what does not depend on the candidate. Long evaluations call ``context.report(step, metrics)``
    at each fidelity step; it raises :class:`TrialStopped` when a scheduler stops the trial.

    Subclasses declare ``Options`` (an :class:`EvaluatorOptions`) and register with
    :func:`register_evaluator`.
    """

    name: ClassVar[str] = ""
    Options: ClassVar[type[EvaluatorOptions]] = EvaluatorOptions

    def __init__(self, options: EvaluatorOptions) -> None:
        self.options = options
        self._ready = False

    @classmethod
    def from_spec(cls, options: Mapping[str, Any]) -> Evaluator:
        try:
            parsed = cls.Options.model_validate(dict(options))
        except ValidationError as exc:
            raise SpecError(
                format_validation_error(exc, cls.Options, prefix=("evaluator", "options"))
            ) from None
        return cls(parsed)

    def metrics(self) -> tuple[str, ...]:
        """Names of the metrics ``evaluate`` returns; objectives and constraints must come from these."""
        return ()

    def check_params(self, names: set[str]) -> None:  # noqa: B027 - optional hook
        """Raise ValueError if the space has parameters this evaluator cannot use."""

    def setup(self) -> None:  # noqa: B027 - optional hook
        """Load data and models once per worker."""

    def ensure_setup(self) -> None:
        if not self._ready:
            self.setup()
            self._ready = True

    @abc.abstractmethod
    def evaluate(self, candidate: Candidate, context: EvalContext) -> dict[str, float]:
        """Return the candidate's metrics (finite floats); raise to mark the trial failed."""


def check_metrics(metrics: Mapping[str, Any], required: list[str]) -> dict[str, float]:
    """Coerce metrics to floats and check the required ones are present and finite."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        try:
            out[key] = float(value)
        except (TypeError, ValueError):
            continue  # non-numeric extras (tags) are not metrics
    for name in required:
        if name not in out:
            raise ValueError(f"the evaluator returned no '{name}' metric; it returned {sorted(out)}")
        if not math.isfinite(out[name]):
            raise ValueError(f"metric '{name}' is {out[name]}, not a finite number")
    return out
