"""Latency modes of a study (``latency.mode``): measured, predicted, hybrid.

``measured`` is the evaluator timing every trial (in the node's exclusive lane, through the latency cache).
``predicted`` and ``hybrid`` run the evaluator with ``skip_latency`` and ask a :class:`LatencyPolicy` —
one per study, a Ray actor the workers call — whether to measure a trial's latency or predict it:

* ``predicted``: always predict, with a predictor fitted on the device profile
  (``frontier latency calibrate``).
* ``hybrid``: measure the first ``calibration`` trials and every ``calibration_every``-th after them; measure
  any other trial that *could enter the Pareto set*: one that no finished feasible trial dominates when
  its latency is taken as ``predicted x (1 - e)``, ``e`` the larger of ``margin`` and the 90th percentile
  of the current predictor's cross-validated over-prediction on the measured trials. The rest keep their
  predicted latency. The predictor is refitted (and cross-validated) after each measurement. A trial
  whose latency signature was measured before in the study (or is a row of the device profile) takes that
  measurement and counts as measured: an architecture is timed once, however often the sampler returns.

A trial told with a predicted latency was dominated when it was told; values never change afterwards, so
it stays dominated: the Pareto set of a hybrid study holds measured trials only. After the last trial the
engine re-measures the Pareto set (:func:`remeasure`) and reports the fresh figure as ``latency_final_ms``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from frontier.search._pareto import to_loss
from frontier.spaces import StudySpec, spec_from_dict

MEASURED_KEY = "latency_measured"
PREDICTED_KEY = "latency_predicted_ms"
SPEARMAN_KEY = "latency_spearman"
BOUND_KEY = "latency_error_bound"
SOURCE_ATTR = "frontier.tag.latency_source"
FINAL_ATTR = "frontier.latency_final"
FINAL_KEY = "latency_final_ms"
PROFILE_VERSION = 1


def profile_path(run_dir: str | Path, device: str) -> Path:
    """Where ``frontier latency calibrate --device NAME`` stores the device profile."""
    return Path(run_dir) / "devices" / f"{device}.json"


def load_profile(run_dir: str | Path, device: str) -> dict[str, Any]:
    """The stored device profile ``device``.

    Raises:
        ValueError: there is none; says how to create it.
    """
    path = profile_path(run_dir, device)
    if not path.exists():
        raise ValueError(
            f"latency.device: no device profile '{device}' at {path}. Create it with "
            f"`frontier latency calibrate --device {device} --space SPEC -k K --run-dir {run_dir}`"
        )
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def column_kinds(signatures: Sequence[Mapping[str, Any]]) -> dict[str, bool]:
    """Parameter name -> whether it is numeric (a column no signature has is numeric: all 0)."""
    names = sorted({k for s in signatures for k in s})
    kinds = {}
    for name in names:
        present = [s[name] for s in signatures if s.get(name) is not None]
        kinds[name] = all(_is_number(v) for v in present)
    return kinds


def signature_frame(signatures: Sequence[Mapping[str, Any]], kinds: Mapping[str, bool] | None = None) -> Any:
    """A predictor's configuration table: one row per signature, one column per parameter (``kinds``:
    name -> numeric, from :func:`column_kinds`; default inferred from ``signatures``).

    A parameter a candidate does not have (an inactive layer) is 0 in a numeric column and ``"none"`` in
    a categorical one: an absent layer has no width.
    """
    import pandas as pd

    kinds = column_kinds(signatures) if kinds is None else kinds
    data: dict[str, list[Any]] = {}
    for name, numeric in kinds.items():
        values = [s.get(name) for s in signatures]
        if numeric:
            data[name] = [
                float(v) if isinstance(v, int | float) and not isinstance(v, bool) else 0.0 for v in values
            ]
        else:
            data[name] = ["none" if v is None else str(v) for v in values]
    return pd.DataFrame(data, columns=list(kinds))


def _signature_key(signature: Mapping[str, Any]) -> str:
    return json.dumps(signature, sort_keys=True, default=str)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


@dataclass(frozen=True)
class LatencyDecision:
    """Measure this trial's latency, or use ``predicted_ms``; ``reason`` says why; ``error_bound`` is the
    relative prediction error assumed for it. ``reused``: ``predicted_ms`` is no prediction but the latency
    measured for the same signature earlier in the study (an architecture seen before is not re-timed)."""

    measure: bool
    predicted_ms: float | None
    reason: str
    error_bound: float = 0.0
    reused: bool = False


class LatencyPolicy:
    """Decides per trial whether its latency is measured or predicted, and keeps the predictor current.

    Lifecycle: ``decide(signature, metrics)`` once the evaluator has returned the other metrics, then
    ``observe(signature, metrics, measured=..., predicted_ms=...)`` with the latency filled in. Runs as a
    Ray actor in a study (the calls are serialised); a plain object in tests.

    Args:
        spec: the study spec (objectives, constraints, ``latency``), or its JSON.
        profile: a device profile (``frontier latency calibrate``) whose rows seed the predictor.
        history: finished trials of an earlier run of the study (resume): their metrics.
    """

    def __init__(
        self,
        spec: StudySpec | str,
        *,
        profile: Mapping[str, Any] | None = None,
        history: list[Mapping[str, float]] | None = None,
    ) -> None:
        self.spec = spec if isinstance(spec, StudySpec) else spec_from_dict(json.loads(spec))
        self.cfg = self.spec.latency
        self.metric = self.cfg.metric
        # signature -> its measured latency: the profile's rows, then this study's measurements
        self.known: dict[str, float] = {}
        # One row per signature: a resumed study's stored trials include the ones that reused a measurement.
        self.profile_rows: list[tuple[dict[str, Any], float]] = []
        for r in (profile or {}).get("rows", []):
            key = _signature_key(r["signature"])
            if key not in self.known:
                self.known[key] = float(r["latency_ms"])
                self.profile_rows.append((dict(r["signature"]), float(r["latency_ms"])))
        self.measured: list[tuple[dict[str, Any], float]] = []
        self.pairs: list[tuple[float, float]] = []  # (predicted before measuring, measured)
        self.values: list[list[float]] = []  # loss vectors of finished feasible trials
        self.seen = 0
        self.n_measured = 0
        self.n_predicted = 0
        self.n_reused = 0
        self.predictor: Any = None
        self.cv_errors: list[float] = []
        self.kinds: dict[str, bool] = {}
        for metrics in history or []:
            self._record(metrics)
        self._refit()
        if self.cfg.mode == "predicted" and self.predictor is None:
            raise ValueError(
                f"latency.device: the device profile '{self.cfg.device}' has no measured rows to fit the "
                f"'{self.cfg.predictor}' predictor on; calibrate it with -k 5 or more"
            )

    # -- what the workers call --------------------------------------------------------------------
    def decide(self, signature: Mapping[str, Any], metrics: Mapping[str, float]) -> LatencyDecision:
        known = self.known.get(_signature_key(signature))
        if known is not None and self.cfg.mode == "hybrid":
            return LatencyDecision(False, known, "measured before (same signature)", 0.0, reused=True)
        self.seen += 1
        predicted = self.predict(signature)
        bound = self.error_bound()
        if self.cfg.mode == "predicted":
            return LatencyDecision(False, predicted, "predicted mode", bound)
        # Rows of the device profile (or of an earlier run of the study) calibrate as well as new ones.
        if len(self.profile_rows) + self.n_measured < self.cfg.calibration or predicted is None:
            return LatencyDecision(True, predicted, "calibration", bound)
        every = self.cfg.calibration_every
        if every and (self.seen - self.cfg.calibration) % every == 0:
            return LatencyDecision(True, predicted, "calibration sample", bound)
        optimistic = predicted * (1 - bound)
        if not self._feasible(metrics, optimistic=optimistic):
            return LatencyDecision(False, predicted, "infeasible", bound)
        if self._could_enter_front(metrics, optimistic=optimistic):
            return LatencyDecision(True, predicted, "could enter the Pareto set", bound)
        return LatencyDecision(False, predicted, "dominated", bound)

    def observe(
        self,
        signature: Mapping[str, Any],
        metrics: Mapping[str, float],
        *,
        measured: bool,
        predicted_ms: float | None = None,
        reused: bool = False,
    ) -> float | None:
        """Record a finished trial; refit on a new measurement. Returns the running Spearman."""
        self._record(metrics)
        if reused:
            self.n_reused += 1
        elif measured:
            self.n_measured += 1
            value = float(metrics[self.metric])
            self.known.setdefault(_signature_key(signature), value)
            self.measured.append((dict(signature), value))
            if predicted_ms is not None:
                self.pairs.append((float(predicted_ms), value))
            self._refit()
        else:
            self.n_predicted += 1
        return self.spearman()

    # -- state ------------------------------------------------------------------------------------
    def predict(self, signature: Mapping[str, Any]) -> float | None:
        if self.predictor is None:
            return None
        frame = signature_frame([signature], self.kinds)
        return max(float(self.predictor.predict(frame)[0]), 1e-6)

    def spearman(self) -> float | None:
        """Rank correlation of the predictions (made before measuring) with the measurements so far."""
        if len(self.pairs) < 3:
            return None
        from scipy.stats import spearmanr

        pred, meas = np.array(self.pairs).T
        if np.ptp(pred) == 0 or np.ptp(meas) == 0:
            return None
        return float(spearmanr(pred, meas).statistic)

    def error_bound(self) -> float:
        """How far below its prediction a trial's latency may lie: the 90th percentile, over the measured
        rows predicted by the current predictor without them (cross-validation), of ``max(0, 1 - measured /
        predicted)`` (0 where the prediction was low), at least ``margin``. So ``predicted x (1 - e)``
        undercuts the true latency for about 9 trials in 10."""
        observed = float(np.quantile(self.cv_errors, 0.9)) if len(self.cv_errors) >= 4 else 1.0
        return min(max(self.cfg.margin, observed), 0.95)

    def summary(self) -> dict[str, Any]:
        return {
            "measured": self.n_measured,
            "predicted": self.n_predicted,
            "reused": self.n_reused,
            "spearman": self.spearman(),
            "error_bound": self.error_bound(),
        }

    # -- internals --------------------------------------------------------------------------------
    def _record(self, metrics: Mapping[str, float]) -> None:
        names = [o.name for o in self.spec.objectives]
        if all(n in metrics and math.isfinite(float(metrics[n])) for n in names) and self._feasible(metrics):
            row = [float(metrics[n]) for n in names]
            self.values.append(list(to_loss(np.array([row]), self.spec.directions)[0]))

    def _feasible(self, metrics: Mapping[str, float], optimistic: float | None = None) -> bool:
        for c in self.spec.constraints:
            value = (
                optimistic if (c.metric == self.metric and optimistic is not None) else metrics.get(c.metric)
            )
            if value is None or c.violation(float(value)) > 0:
                return False
        return True

    def _could_enter_front(self, metrics: Mapping[str, float], *, optimistic: float) -> bool:
        if not self.values:
            return True
        row = [optimistic if o.name == self.metric else float(metrics[o.name]) for o in self.spec.objectives]
        cand = to_loss(np.array([row]), self.spec.directions)[0]
        done = np.asarray(self.values)
        dominated = np.all(done <= cand, axis=1) & np.any(done < cand, axis=1)
        return not bool(dominated.any())

    def _refit(self) -> None:
        rows = self.profile_rows + self.measured
        if len(rows) < 2:
            return
        signatures = [s for s, _ in rows]
        self.kinds = column_kinds(signatures)
        frame = signature_frame(signatures, self.kinds)
        latency = np.array([v for _, v in rows])
        self.predictor = self._new_predictor().fit(frame, latency)
        self.cv_errors = self._cross_validate(frame, latency)

    def _new_predictor(self) -> Any:
        from frontier.evaluators.latency import get_predictor

        return get_predictor(self.cfg.predictor, seed=self.spec.search.seed or 0)

    def _cross_validate(self, frame: Any, latency: np.ndarray) -> list[float]:
        """Over-prediction of the rows held out of the fit (leave-one-out up to 40 rows, then 10 folds):
        ``max(0, 1 - measured / predicted)``, how far below a prediction the truth was."""
        n = len(latency)
        if n < 4:
            return []
        folds = np.arange(n) if n <= 40 else np.arange(n) % 10
        errors: list[float] = []
        for fold in np.unique(folds):
            held = folds == fold
            try:
                p = self._new_predictor().fit(frame[~held].reset_index(drop=True), latency[~held])
                pred = p.predict(frame[held].reset_index(drop=True))
            except ValueError:  # e.g. a held-out row with a value the rest never had
                continue
            errors.extend(np.maximum(0.0, 1 - latency[held] / pred).tolist())
        return errors


def resolve_latency(
    evaluator: Any, candidate: Any, context: Any, metrics: dict[str, float], policy: Any, metric: str
) -> dict[str, float]:
    """In a worker, after ``evaluate`` with ``skip_latency``: measure or predict the latency, per ``policy``.

    ``policy`` is a :class:`LatencyPolicy` or a Ray actor handle to one.
    """
    signature = evaluator.latency_signature(candidate)
    decision: LatencyDecision = _call(policy, "decide", signature, metrics)
    out = dict(metrics)
    if decision.measure:
        measured = evaluator.latency(candidate, context)
        if metric not in measured:
            raise ValueError(
                f"latency.metric is '{metric}' but evaluator '{evaluator.name}' measures {sorted(measured)}"
            )
        out.update(measured)
    else:
        assert decision.predicted_ms is not None  # the policy only predicts once it is fitted
        out[metric] = decision.predicted_ms
    out[MEASURED_KEY] = 1.0 if decision.measure or decision.reused else 0.0
    out[BOUND_KEY] = decision.error_bound
    predicted = None if decision.reused else decision.predicted_ms
    if predicted is not None:
        out[PREDICTED_KEY] = predicted
    rho = _call(
        policy,
        "observe",
        signature,
        out,
        measured=decision.measure,
        predicted_ms=predicted,
        reused=decision.reused,
    )
    if rho is not None:
        out[SPEARMAN_KEY] = rho
    return out


def _call(policy: Any, method: str, *args: Any, **kwargs: Any) -> Any:
    if isinstance(policy, LatencyPolicy):
        return getattr(policy, method)(*args, **kwargs)
    import ray

    return ray.get(getattr(policy, method).remote(*args, **kwargs))


@dataclass(frozen=True)
class LatencyRuntime:
    """What a worker needs to handle latency: the lane, the cache, the mode's policy (picklable)."""

    lane: str | None = "default"
    lane_dir: str | None = None
    cache_path: str | None = None
    skip: bool = False
    batch_size: int | None = None
    input: tuple[int, ...] | None = None
    metric: str = "latency_ms"
    policy: Any = None

    def context_kwargs(self, *, cache: bool = True) -> dict[str, Any]:
        from frontier.evaluators.latency import LatencyCache, MeasurementLane

        return {
            "lane": MeasurementLane(self.lane, directory=self.lane_dir) if self.lane else None,
            "latency_cache": LatencyCache(self.cache_path) if (self.cache_path and cache) else None,
            "skip_latency": self.skip,
            "latency_batch_size": self.batch_size,
            "latency_input": self.input,
        }


def latency_runtime(spec: StudySpec, run_dir: Path, policy: Any = None) -> LatencyRuntime:
    cfg = spec.latency
    if cfg.cache is True:
        cache: str | None = str(run_dir / "latency_cache.db")
    elif cfg.cache is False:
        cache = None
    else:
        cache = str(Path(cfg.cache).expanduser().resolve())
    return LatencyRuntime(
        lane="default" if cfg.lane else None,
        cache_path=cache,
        skip=cfg.mode != "measured",
        batch_size=cfg.batch_size,
        input=cfg.input,
        metric=cfg.metric,
        policy=policy,
    )


def remeasure(
    spec_json: str, runtime: LatencyRuntime, params: list[dict[str, Any]], threads: int, device: str
) -> list[dict[str, float]]:
    """Measure the latency of each candidate afresh (never from the cache): the final Pareto set."""
    from frontier.evaluators import EvalContext, for_spec
    from frontier.spaces import Candidate, spec_from_dict

    evaluator = for_spec(spec_from_dict(json.loads(spec_json)))
    out = []
    for p in params:
        ctx = EvalContext(threads=threads, device=device, **runtime.context_kwargs(cache=False))
        out.append(evaluator.latency(Candidate(p), ctx))
    return out


def choose_candidates(
    spec: StudySpec, signature: Any, *, k: int, seed: int = 0, pool: int = 500
) -> list[Any]:
    """``k`` distinct candidates of the spec's space, spread over it: the first drawn at random, each next
    one the farthest (in standardised signature features) from those chosen (greedy farthest-point)."""
    import optuna

    from frontier.spaces import suggest

    sampler = optuna.samplers.RandomSampler(seed=seed)
    study = optuna.create_study(sampler=sampler)
    seen: dict[str, Any] = {}
    for _ in range(pool):
        trial = study.ask()
        c = suggest(trial, spec.params)
        study.tell(trial, 0.0)
        seen.setdefault(json.dumps(signature(c), sort_keys=True, default=str), c)
    candidates = list(seen.values())
    if len(candidates) <= k:
        return candidates
    sigs = [signature(c) for c in candidates]
    frame = signature_frame(sigs)
    x = np.asarray(__import__("pandas").get_dummies(frame, dtype=float).to_numpy(dtype=float), dtype=float)
    x = (x - x.mean(axis=0)) / np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0)
    chosen = [0]
    dist = np.linalg.norm(x - x[0], axis=1)
    while len(chosen) < k:
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(x - x[nxt], axis=1))
    return [candidates[i] for i in chosen]


def calibrate(
    spec: StudySpec,
    *,
    device: str,
    k: int,
    run_dir: str | Path,
    seed: int = 0,
    threads: int | None = None,
    on_row: Any = None,
) -> dict[str, Any]:
    """Measure ``k`` chosen candidates of the spec's space on this machine and store the device profile
    ``RUN_DIR/devices/DEVICE.json`` that ``latency: {mode: predicted | hybrid, device: DEVICE}`` reads.

    Candidates are spread over the space (:func:`choose_candidates`); each is timed by the evaluator's
    :meth:`~evaluators.Evaluator.latency` in the exclusive lane and through the run's latency cache, with
    the spec's ``latency.batch_size``/``input_shape`` and ``resources.cpu`` threads.

    Raises:
        ValueError: ``k`` < 2 or ``device`` is not a plain name.
        SpecError: the evaluator cannot measure latency on its own.
    """
    from frontier.evaluators import EvalContext, for_spec, get_evaluator_class
    from frontier.evaluators.latency import device_fingerprint
    from frontier.spaces import LatencyConfig, SpecError

    if k < 2:
        raise ValueError(f"-k must be >= 2 (a predictor needs at least two measurements). Got {k}.")
    try:
        LatencyConfig(device=device)
    except Exception:
        raise ValueError(
            f"--device must be a plain name (letters, digits, '_', '.', '-'). Got {device!r}."
        ) from None
    if not get_evaluator_class(spec.evaluator.kind).measures_latency_alone():
        raise SpecError(
            f"evaluator '{spec.evaluator.kind}' cannot measure latency on its own (Evaluator.latency), so it "
            "cannot calibrate a device"
        )
    evaluator = for_spec(spec)
    run_path = Path(run_dir).expanduser().resolve()
    runtime = latency_runtime(spec, run_path)
    n_threads = threads or max(1, int(spec.resources.cpu))
    dev = "cuda" if spec.resources.gpu > 0 else "cpu"
    rows = []
    for c in choose_candidates(spec, evaluator.latency_signature, k=k, seed=seed):
        ctx = EvalContext(
            threads=n_threads, device=dev, **{**runtime.context_kwargs(), "skip_latency": False}
        )
        measured = evaluator.latency(c, ctx)
        row = {
            "signature": evaluator.latency_signature(c),
            "params": dict(c.params),
            "latency_ms": measured[spec.latency.metric],
            "metrics": measured,
            "cached": bool(ctx.latency_log and ctx.latency_log[-1]["cached"]),
        }
        rows.append(row)
        if on_row is not None:
            on_row(row)
    profile = {
        "version": PROFILE_VERSION,
        "device": device,
        "fingerprint": device_fingerprint(device=dev, threads=n_threads),
        "evaluator": spec.evaluator.kind,
        "metric": spec.latency.metric,
        "batch_size": spec.latency.batch_size,
        "input": list(spec.latency.input) if spec.latency.input else None,
        "rows": rows,
    }
    path = profile_path(run_path, device)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(profile, indent=1, default=str))
    return profile
