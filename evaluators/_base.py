"""The evaluator extension point: one base class, registered by name."""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from frontier.spaces import Candidate, SpecError, StudySpec
from frontier.spaces._errors import format_validation_error

if TYPE_CHECKING:
    from frontier.evaluators.latency import LatencyCache, LatencyStats, MeasurementLane


class EvaluatorOptions(BaseModel):
    """Base for an evaluator's ``options``: frozen, unknown fields rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


@dataclass(frozen=True)
class InitialCandidate:
    """A candidate the study evaluates first (:meth:`Evaluator.initial_candidates`).

    Attributes:
        params: parameter values (ordinal parameters hold the choice, as in ``Candidate.params``).
        label: what it is (``uniform-4bit``, ``sensitivity-greedy-1``); recorded on the trial.
        baseline: tag the trial ``baseline=<label>`` in Optuna and MLflow (else ``warm_start=<label>``).
    """

    params: Mapping[str, Any]
    label: str
    baseline: bool = False


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
        lane: the node's exclusive measurement lane (:class:`~evaluators.latency.MeasurementLane`); None
            outside a study. Evaluators wrap training work in :meth:`training` and time with
            :meth:`measure_latency`, which takes the lane exclusively.
        latency_cache: persistent latency figures (:class:`~evaluators.latency.LatencyCache`), or None.
        skip_latency: ``latency.mode`` is ``predicted`` or ``hybrid``: ``evaluate`` leaves the latency
            metrics out, the study predicts them or asks for them through :meth:`Evaluator.latency`.
        latency_batch_size, latency_input: the spec's ``latency.batch_size`` and ``seq_len``/``input_shape``
            (None: the evaluator's default).
        latency_log: one entry per :meth:`measure_latency` call (``cached``, ``waited_s``, ``median_ms``).
    """

    trial_number: int = -1
    seed: int = 0
    workdir: Path | None = None
    threads: int = 1
    device: str = "cpu"
    reporter: Callable[[int, Mapping[str, float]], bool] | None = None
    history: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    lane: MeasurementLane | None = None
    latency_cache: LatencyCache | None = None
    skip_latency: bool = False
    latency_batch_size: int | None = None
    latency_input: tuple[int, ...] | None = None
    latency_log: list[dict[str, Any]] = field(default_factory=list)

    def training(self) -> AbstractContextManager[Any]:
        """Hold the measurement lane shared around training work (a step or an epoch), so no latency
        measurement on this node runs meanwhile; a no-op without a lane."""
        return self.lane.training() if self.lane is not None else nullcontext()

    def measure_latency(
        self,
        fn: Callable[[], Any],
        *,
        signature: Mapping[str, Any],
        input_shape: Sequence[int],
        sync: Callable[[], None] | None = None,
        refresh: bool = False,
        dtype: str = "float32",
        **protocol: Any,
    ) -> LatencyStats:
        """Time ``fn`` (:func:`~evaluators.latency.measure_latency`) in the exclusive lane, via the cache.

        Args:
            fn: one inference call.
            signature: what determines the computation (architecture parameters, model-shaping options),
                JSON-serialisable; with ``input_shape`` and the device fingerprint it keys the cache.
            input_shape: the shape ``fn`` runs on.
            sync: e.g. ``torch.cuda.synchronize`` for asynchronous devices.
            refresh: measure even on a cache hit (and replace the stored figure).
            protocol: ``warmup``, ``min_repeats``, ``rel_ci``, ``time_cap_s``... of ``measure_latency``.

        On CPU the figure is normalised by an interleaved :class:`~evaluators.latency.ReferenceWorkload`
        (the latency at the device's calibrated speed; ``raw_median_ms`` keeps the plain median).
        """
        from frontier.evaluators.latency import ReferenceWorkload, device_fingerprint, measure_latency
        from frontier.evaluators.latency._reference import reference_key

        fingerprint = device_fingerprint(device=self.device, threads=self.threads, dtype=dtype)
        if self.device == "cpu":  # figures on the reference's scale are not comparable with raw ones
            fingerprint["scale"] = "reference-{reference}-v{version}".format(**reference_key())
        key = {"signature": dict(signature), "input_shape": list(input_shape), "fingerprint": fingerprint}
        if self.latency_cache is not None and not refresh:
            hit = self.latency_cache.get(signature, input_shape=input_shape, fingerprint=fingerprint)
            if hit is not None:
                self.latency_log.append({"cached": True, "waited_s": 0.0, "median_ms": hit.median_ms})
                return hit
        lane = self.lane.measuring() if self.lane is not None else nullcontext()
        with lane as wait:
            reference = None
            if self.device == "cpu":
                # CPU figures are normalised by an interleaved reference workload, so the drift of a
                # shared machine's speed cancels (evaluators.latency._reference); its nominal time is
                # stored with the cache, one scale for every figure there.
                reference = ReferenceWorkload()
                if self.latency_cache is not None:
                    reference.nominal_ms = self.latency_cache.reference_ms(fingerprint, reference.calibrate)
            stats = measure_latency(fn, sync=sync, reference=reference, **protocol)
        if self.latency_cache is not None:
            self.latency_cache.put(**key, stats=stats)  # type: ignore[arg-type]
        waited = float(getattr(wait, "waited_s", 0.0))
        self.latency_log.append({"cached": False, "waited_s": waited, "median_ms": stats.median_ms})
        return stats

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

    Lifecycle, run once per process and spec by :func:`evaluators.for_spec`: ``__init__(options)`` stores
    the validated options and must stay cheap; ``check_params(names)`` sees the space's parameter names;
    ``bind_spec(spec)`` reads the whole spec; ``setup()`` (through ``ensure_setup``) is called once before
    the first evaluation (load data, models: heavy imports go here);
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

    @classmethod
    def tiny_spec(cls, workdir: Path) -> dict[str, Any]:
        """A study spec (a dict) that evaluates one candidate of this evaluator in seconds, with whatever it
        needs (a tiny model, a table) written under ``workdir``. The conformance suite
        (``tests/evaluators/test_conformance.py``) runs every registered evaluator through its lifecycle
        with it; a new evaluator overrides it."""
        raise NotImplementedError(
            f"evaluator '{cls.name}' ({cls.__module__}.{cls.__qualname__}) ships no tiny_spec(workdir); "
            "override it with a spec it runs in seconds"
        )

    def metrics(self) -> tuple[str, ...]:
        """Names of the metrics ``evaluate`` returns; objectives and constraints must come from these."""
        return ()

    def latency(self, candidate: Candidate, context: EvalContext) -> dict[str, float]:
        """Measure only the candidate's latency metrics (``latency_ms`` and its companions).

        Optional: needed for ``latency.mode`` ``predicted`` (to calibrate a device) and ``hybrid`` (to
        measure the candidates that could enter the Pareto set). Latency does not depend on trained weights,
        so an implementation builds the untrained model and times it with ``context.measure_latency``.
        """
        raise NotImplementedError(f"evaluator '{self.name}' cannot measure latency on its own")

    def latency_signature(self, candidate: Candidate) -> dict[str, Any]:
        """The candidate's architecture as far as latency is concerned (predictors learn from these columns).

        Default: all of its parameters. Evaluators drop training-only ones (learning rate, dropout).
        """
        return dict(candidate.params)

    @classmethod
    def measures_latency_alone(cls) -> bool:
        """Whether :meth:`latency` is implemented (``latency.mode`` ``predicted``/``hybrid`` need it)."""
        return cls.latency is not Evaluator.latency

    def check_params(self, names: set[str]) -> None:  # noqa: B027 - optional hook
        """Raise ValueError if the space has parameters this evaluator cannot use."""

    def bind_spec(self, spec: StudySpec) -> None:  # noqa: B027 - optional hook
        """Read what candidates mean from the whole study spec, once, after :meth:`check_params`.

        Called by the engine's spec check and on each worker before ``setup``. Evaluators whose parameters
        only make sense with their family's options (compression allocations: which modules a parameter
        covers) keep what they need here; raise ValueError when the spec does not suit the evaluator.
        """

    def initial_candidates(self, spec: StudySpec) -> list[InitialCandidate]:
        """Candidates to evaluate before the sampler proposes its own (baselines, warm starts).

        Called once on the driver when a study starts fresh (never on resume), after :meth:`bind_spec`; it
        may call :meth:`ensure_setup` and measure. The engine enqueues them in order, within the budget.
        """
        return []

    def prepare_study(self, progress: Callable[[str], None]) -> None:  # noqa: B027 - optional hook
        """One-time work on the driver before a study's workers start (e.g. build or fetch files every
        worker then reads), reporting what it does through ``progress`` (one line per call); default:
        nothing. Called by :func:`search.run_study` after :meth:`bind_spec`, on fresh and resumed studies."""

    def setup(self) -> None:  # noqa: B027 - optional hook
        """Load data and models once per worker."""

    def ensure_setup(self) -> None:
        if not self._ready:
            self.setup()
            self._ready = True

    @abc.abstractmethod
    def evaluate(self, candidate: Candidate, context: EvalContext) -> dict[str, float]:
        """Return the candidate's metrics (finite floats); raise to mark the trial failed."""
