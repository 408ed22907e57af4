"""Reading studies back: trial tables, Pareto sets, selection and export."""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import optuna
from optuna.trial import TrialState

from frontier.search._optuna import SAMPLER_ATTR, load_study, make_storage, stored_spec
from frontier.search._pareto import BASELINE_ATTR, ERROR_ATTR, is_feasible, pareto_trials, trial_metrics
from frontier.spaces import StudySpec, decode

STATE_ATTR = "frontier.state"
WEIGHTS_ATTR = "frontier.trials_dir"  # the trials' work directories, for studies that keep weights
EXPORT_VERSION = 1


@dataclass
class TrialRow:
    number: int
    state: str
    params: dict[str, Any]
    values: dict[str, float]
    metrics: dict[str, float]
    constraints: dict[str, float]
    feasible: bool
    pareto: bool
    error: str | None = None
    duration_s: float | None = None
    tags: dict[str, str] = field(default_factory=dict)
    evaluations: int = 1  # complete evaluations its values average (pareto_means); 1 in trial_rows

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pareto_means(rows: list[TrialRow]) -> list[TrialRow]:
    """The Pareto rows as the Pareto set was decided (:func:`~search.pareto_trials`): a configuration
    evaluated more than once carries the means of its complete evaluations' objective values, metrics and
    constraints, and how many there were (``evaluations``); the others as they are."""
    out = []
    for r in rows:
        if not r.pareto:
            continue
        same = [q for q in rows if q.state == "complete" and q.values and q.params == r.params]
        if len(same) > 1:
            r = replace(
                r,
                values=_mean([q.values for q in same]),
                metrics=_mean([q.metrics for q in same]),
                constraints=_mean([q.constraints for q in same]),
                evaluations=len(same),
            )
        out.append(r)
    return out


def _mean(dicts: list[dict[str, float]]) -> dict[str, float]:
    """Per key, the mean over the dicts that hold it (in the first one's key order, then the rest)."""
    keys = list(dict.fromkeys(k for d in dicts for k in d))
    return {k: sum(d[k] for d in dicts if k in d) / sum(k in d for d in dicts) for k in keys}


def trial_rows(study: optuna.Study, spec: StudySpec | None = None) -> list[TrialRow]:
    """Every trial of the study in order, with decoded params, metrics, constraints and the Pareto flag."""
    spec = spec or stored_spec(study)
    trials = study.get_trials(deepcopy=False)
    front = {t.number for t in pareto_trials(trials, spec.directions)}
    # latency.mode hybrid: the Pareto set's latency re-measured after the last trial.
    final = study.user_attrs.get("frontier.latency_final", {})
    rows = []
    for t in trials:
        values = (
            {o.name: v for o, v in zip(spec.objectives, t.values, strict=True)}
            if t.state == TrialState.COMPLETE and t.values
            else {}
        )
        duration = t.duration.total_seconds() if t.duration is not None else None
        tags = {
            k.removeprefix("frontier.tag."): str(v)
            for k, v in t.user_attrs.items()
            if k.startswith("frontier.tag.")
        }
        if t.user_attrs.get(BASELINE_ATTR):
            tags["baseline"] = str(t.user_attrs[BASELINE_ATTR])
        rows.append(
            TrialRow(
                number=t.number,
                state=t.state.name.lower(),
                params=decode(spec.params, t.params),
                values=values,
                metrics={
                    **trial_metrics(t),
                    **({"latency_final_ms": final[str(t.number)]} if str(t.number) in final else {}),
                },
                constraints=dict(t.constraints),
                feasible=is_feasible(t),
                pareto=t.number in front,
                error=t.user_attrs.get(ERROR_ATTR),
                duration_s=duration,
                tags=tags,
            )
        )
    return rows


@dataclass
class StudySummary:
    name: str
    state: str
    trials: int
    complete: int
    failed: int
    pruned: int
    running: int
    n_trials: int | None
    pareto: int
    started: str | None


def list_studies(storage_url: str) -> list[StudySummary]:
    storage = make_storage(storage_url)
    out = []
    for s in optuna.get_all_study_summaries(storage, include_best_trial=False):
        study = optuna.load_study(study_name=s.study_name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        counts = {st: sum(1 for t in trials if t.state == st) for st in TrialState}
        try:
            spec: StudySpec | None = stored_spec(study)
        except ValueError:
            spec = None
        front = pareto_trials(trials, spec.directions) if spec else []
        out.append(
            StudySummary(
                name=s.study_name,
                state=str(study.user_attrs.get(STATE_ATTR, "unknown")),
                trials=len(trials),
                complete=counts[TrialState.COMPLETE],
                failed=counts[TrialState.FAIL],
                pruned=counts[TrialState.PRUNED],
                running=counts[TrialState.RUNNING],
                n_trials=spec.search.n_trials if spec else None,
                pareto=len(front),
                started=s.datetime_start.isoformat(timespec="seconds") if s.datetime_start else None,
            )
        )
    return out


_CLAUSE = re.compile(r"^\s*(?P<metric>[A-Za-z_][\w.\-]*)\s*(?P<op><=|>=|==|<|>)\s*(?P<value>[-+0-9.eE]+)\s*$")
_PICK = re.compile(r"^\s*(?P<how>max|min)\s*\(\s*(?P<metric>[A-Za-z_][\w.\-]*)\s*\)\s*$")
_TRIAL = re.compile(r"^\s*trial\s*=\s*(?P<n>\d+)\s*$")


def select(rows: list[TrialRow], expr: str | None, spec: StudySpec) -> TrialRow:
    """Pick one Pareto trial.

    ``expr`` is a comma-separated list of filters ``METRIC OP NUMBER`` (OP one of <=, >=, <, >, ==) and at
    most one preference ``max(METRIC)`` or ``min(METRIC)`` (default: the best on the first objective), or
    ``trial=N``. Example: ``"latency_ms<=2, max(accuracy)"``.
    """
    front = pareto_means(rows)  # a repeated configuration is chosen on its mean, as the set was decided
    if not front:
        raise ValueError("the study has no feasible complete trial, so there is no Pareto point to select")
    first = spec.objectives[0]
    how, key = ("max" if first.direction == "maximize" else "min"), first.name
    filters: list[tuple[str, str, float]] = []
    picked: str | None = None
    for raw in (expr or "").split(","):
        if not raw.strip():
            continue
        if m := _TRIAL.match(raw):
            n = int(m["n"])
            match = [r for r in front if r.number == n]
            if not match:
                raise ValueError(
                    f"trial {n} is not on the Pareto set; Pareto trials: {[r.number for r in front]}"
                )
            return match[0]
        if m := _PICK.match(raw):
            if picked is not None:
                raise ValueError(
                    f"--select: at most one preference max(METRIC) or min(METRIC), but got {picked!r} and "
                    f"{raw.strip()!r}; keep one and turn the other into a filter such as 'latency_ms<=2'"
                )
            picked = raw.strip()
            how, key = m["how"], m["metric"]
        elif m := _CLAUSE.match(raw):
            try:
                filters.append((m["metric"], m["op"], float(m["value"])))
            except ValueError:
                raise ValueError(f"--select: {m['value']!r} in {raw.strip()!r} is not a number") from None
        else:
            raise ValueError(
                f"--select: cannot read {raw.strip()!r}. Use filters like 'latency_ms<=2', a preference "
                "'max(accuracy)' or 'min(size_mb)', or 'trial=N', separated by commas"
            )
    ops = {"<=": float.__le__, ">=": float.__ge__, "<": float.__lt__, ">": float.__gt__, "==": float.__eq__}
    known = set().union(*(r.metrics.keys() | r.values.keys() for r in front))
    for metric, _, _ in [*filters, (key, "", 0.0)]:
        if metric not in known:
            raise ValueError(f"--select: unknown metric '{metric}'. Available: {sorted(known)}")
    chosen = front
    for metric, op, value in filters:
        kept = [r for r in chosen if ops[op](_get(r, metric), value)]
        if not kept:
            vals = [_get(r, metric) for r in chosen]
            raise ValueError(
                f"no Pareto point has {metric} {op} {value:g}; on the remaining front {metric} ranges "
                f"from {min(vals):g} to {max(vals):g}"
            )
        chosen = kept
    best = (max if how == "max" else min)(chosen, key=lambda r: _get(r, key))
    return best


def _get(row: TrialRow, metric: str) -> float:
    v = row.values.get(metric, row.metrics.get(metric, math.nan))
    return float(v)


def export_point(
    study_name: str, storage_url: str, expr: str | None, tracking_uri: str | None = None
) -> dict:
    """The export document for one Pareto point: params, metrics and provenance (see ``frontier export``).

    ``checkpoint`` names the trial's saved weights (its work directory) when the study kept them
    (``lm-train``'s ``keep_weights``; :func:`evaluators.write_hf_checkpoint` reads it), else None.
    """
    study = load_study(study_name, storage_url)
    spec = stored_spec(study)
    rows = trial_rows(study, spec)
    row = select(rows, expr, spec)
    doc = {
        "frontier_export": EXPORT_VERSION,
        "study": study_name,
        "trial": row.number,
        "evaluator": {"kind": spec.evaluator.kind, "options": dict(spec.evaluator.options)},
        "params": row.params,
        "objectives": row.values,
        "metrics": row.metrics,
        "constraints": row.constraints,
        "provenance": {
            "storage": storage_url,
            "tracking_uri": tracking_uri,
            "selected_by": expr or f"best {spec.objectives[0].name}",
            "sampler": study.user_attrs.get(SAMPLER_ATTR),
            "exported_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "spec": spec.to_dict(),
        },
    }
    if row.evaluations > 1:  # objectives, metrics and constraints are means over these evaluations
        doc["evaluations"] = row.evaluations
    doc["checkpoint"] = _checkpoint(study, row.number)
    doc.update(compression_export(spec, row.params))
    return doc


def _checkpoint(study: optuna.Study, number: int) -> str | None:
    """The trial's saved weights (its work directory, when the evaluator kept them: ``lm-train``'s
    ``keep_weights``), or None."""
    from pathlib import Path

    root = study.user_attrs.get(WEIGHTS_ATTR)
    if root is None:
        return None
    path = Path(root) / str(number)
    return str(path) if path.is_dir() and any(path.iterdir()) else None


def compression_export(spec: StudySpec, params: dict[str, Any]) -> dict[str, Any]:
    """What ``frontier apply`` re-creates a point with, beyond its params: for a study with an ``experts``
    family, ``experts``, the :class:`spaces.ExpertPlan` dict (experts and top-k kept per MoE layer); for
    ``bits``/``sparsity`` families, the ``recipe`` the point decodes to (:func:`spaces.compression_recipe`,
    the :class:`kernels.CompressionRecipe` dict, also what ``kernels.apply_`` takes); empty for other
    studies."""
    from frontier.spaces import compression_recipe, expert_plan
    from frontier.spaces._family_compress import allocations

    out: dict[str, Any] = {}
    plan = expert_plan(spec, params)
    if plan is not None:
        out["experts"] = plan.to_dict()
    if allocations(spec):
        out["recipe"] = compression_recipe(spec, params).to_dict()
    return out
