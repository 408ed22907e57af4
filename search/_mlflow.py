"""MLflow adapter: one parent run per study, one nested child run per trial, the Pareto set kept current.

MLflow is a *view* of the Optuna storage, which is the source of truth: :meth:`MlflowTracker.sync` logs
every finished trial not yet in MLflow, so a crash never leaves MLflow behind for good: the next
``frontier run`` of the study (a resume) catches up.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from frontier.search._latency import SPEARMAN_KEY
from frontier.search._pareto import (
    BASELINE_ATTR,
    ERROR_ATTR,
    REFERENCE_ATTR,
    hypervolume,
    is_feasible,
    mean_trials,
    n_evaluations,
    pareto_trials,
    reference_point,
    to_loss,
    trial_metrics,
)
from frontier.spaces import StudySpec

log = logging.getLogger(__name__)

STUDY_TAG = "frontier.study"
STORAGE_TAG = "frontier.storage"
TRIAL_TAG = "frontier.trial"
PARETO_TAG = "pareto"
EVALUATIONS_TAG = "evaluations"  # on a Pareto run whose configuration was evaluated more than once
NOTE_TAG = "mlflow.note.content"  # the run's description, shown on its page
# Without a kind, MLflow 3's UI opens an experiment on its empty GenAI overview instead of the runs table.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
# MLflow's UI loads a shared view (filter, sort, visible columns, expanded rows) from the experiment tag
# VIEW_STATE_PREFIX + KEY when its runs URL carries ?viewStateShareKey=KEY; MLflow has no other way to show
# metric columns by default, and the objectives must be visible without the user adding columns.
VIEW_STATE_PREFIX = "mlflow.sharedViewState."
DEFAULT_EXPERIMENT = "frontier"
_STATUS = {TrialState.COMPLETE: "FINISHED", TrialState.FAIL: "FAILED", TrialState.PRUNED: "KILLED"}

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def view_key(study: str, view: str) -> str:
    """The share key of a study's MLflow UI view (``runs`` or ``pareto``): ``#/experiments/ID/runs?
    viewStateShareKey=KEY`` opens it."""
    import hashlib

    return f"frontier-{view}-{hashlib.sha1(study.encode()).hexdigest()[:12]}"


def view_states(spec: StudySpec, parent_id: str) -> dict[str, dict[str, Any]]:
    """The MLflow UI views of a study, by share key: its runs (the study run expanded over its trials) and
    its Pareto trials, each showing the objectives and the Pareto flag as columns."""
    columns = [*(f"metrics.`{o.name}`" for o in spec.objectives), f"tags.`{PARETO_TAG}`"]
    mine = f"tags.`{STUDY_TAG}` = '{spec.name}'"
    first = spec.objectives[0]
    shared = {"selectedColumns": columns, "runsExpanded": {parent_id: True}}
    return {
        view_key(spec.name, "runs"): {
            "searchFilter": mine,
            "orderByKey": "attributes.start_time",
            "orderByAsc": True,
            **shared,
        },
        view_key(spec.name, "pareto"): {
            "searchFilter": f"{mine} and tags.`{PARETO_TAG}` = 'true'",
            "orderByKey": f"metrics.`{first.name}`",
            "orderByAsc": first.direction == "minimize",
            **shared,
        },
    }


def default_tracking_uri(run_dir: str | Path) -> str:
    path = Path(run_dir).expanduser().resolve() / "mlflow.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


class MlflowTracker:
    """Logs a study to MLflow. Thread-safe: :meth:`sync` may run from a background thread.

    Args:
        spec: the study spec (logged as ``spec.json``).
        tracking_uri: MLflow tracking URI.
        storage_url: the Optuna storage, recorded as a tag so the study can be found again.
        experiment: experiment name (default ``frontier``).
        artifact_root: where a new experiment keeps artifacts (default beside a local SQLite store).
    """

    def __init__(
        self,
        spec: StudySpec,
        *,
        tracking_uri: str,
        storage_url: str,
        experiment: str | None = None,
        artifact_root: Path | None = None,
    ) -> None:
        from mlflow.tracking import MlflowClient

        self.spec = spec
        self.tracking_uri = tracking_uri
        self.storage_url = storage_url
        self.experiment = experiment or DEFAULT_EXPERIMENT
        self.client = MlflowClient(tracking_uri=tracking_uri)
        _fast_sqlite_store(self.client)
        self.artifact_root = artifact_root
        self.parent_id: str | None = None
        self._child: dict[int, str] = {}  # trial number -> run id
        self._pareto: set[int] = set()
        self._evaluations: dict[int, int] = {}
        self._hv_steps: set[int] = set()
        self._artifacts_stale = False  # trials were logged since the Pareto artifacts were last written
        self._lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> str:
        """Find the study's parent run (resume) or create it; load what is already logged."""
        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is None:
            location = self.artifact_root.resolve().as_uri() if self.artifact_root else None
            exp_id = self.client.create_experiment(
                self.experiment, artifact_location=location, tags=EXPERIMENT_KIND
            )
        else:
            exp_id = exp.experiment_id
            for key, value in EXPERIMENT_KIND.items():
                if key not in exp.tags:
                    self.client.set_experiment_tag(exp_id, key, value)
        self.experiment_id = exp_id
        query = f"tags.`{STUDY_TAG}` = '{self.spec.name}' and tags.`{STORAGE_TAG}` = '{self.storage_url}'"
        parents = self.client.search_runs([exp_id], filter_string=query, max_results=1)
        if parents:
            self.parent_id = parents[0].info.run_id
            self.client.update_run(self.parent_id, status="RUNNING")
            self._load_children()
        else:
            run = self.client.create_run(
                exp_id,
                run_name=self.spec.name,
                tags={STUDY_TAG: self.spec.name, STORAGE_TAG: self.storage_url, "frontier.kind": "study"},
            )
            self.parent_id = run.info.run_id
            self.client.set_tag(self.parent_id, NOTE_TAG, self._parent_note([]))
            self.client.log_dict(self.parent_id, self.spec.to_dict(), "spec.json")
            from mlflow.entities import Param

            flat = {
                "evaluator": self.spec.evaluator.kind,
                "sampler": self.spec.search.sampler,
                "objectives": ",".join(f"{o.name}:{o.direction}" for o in self.spec.objectives),
                "constraints": ",".join(f"{c.metric}{c.op}{c.value:g}" for c in self.spec.constraints) or "-",
                "n_params": str(len(self.spec.params)),
            }
            self.client.log_batch(self.parent_id, params=[Param(k, v) for k, v in flat.items()])
        for key, state in view_states(self.spec, self.parent_id).items():
            self.client.set_experiment_tag(exp_id, VIEW_STATE_PREFIX + key, json.dumps(state))
        return self.parent_id

    def _load_children(self) -> None:
        assert self.parent_id is not None
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{self.parent_id}'",
            max_results=50000,
        )
        for r in runs:
            number = r.data.tags.get(TRIAL_TAG)
            if number is not None:
                self._child[int(number)] = r.info.run_id
                if r.data.tags.get(PARETO_TAG) == "true":
                    self._pareto.add(int(number))
        for m in self.client.get_metric_history(self.parent_id, "hypervolume"):
            self._hv_steps.add(int(m.step))

    def finish(self, status: str = "FINISHED") -> None:
        if self.parent_id is not None:
            self.client.set_terminated(self.parent_id, status=status)

    def set_tags(self, tags: dict[str, str]) -> None:
        if self.parent_id is not None:
            for k, v in tags.items():
                self.client.set_tag(self.parent_id, k, v)

    @property
    def run_url(self) -> str:
        return f"#/experiments/{getattr(self, 'experiment_id', '0')}/runs/{self.parent_id}"

    # -- syncing -------------------------------------------------------------------------------------
    def sync(self, study: optuna.Study, *, artifacts: bool = True) -> None:
        """Log new finished trials, refresh Pareto tags, hypervolume history and the Pareto artifacts.

        Args:
            study: the study, read from its storage.
            artifacts: also rewrite the Pareto table and plot if trials were logged since they were last
                written (the plot takes ~0.2 s of CPU, so the background thread asks for it less often).
        """
        with self._lock:
            trials = study.get_trials(deepcopy=False)
            done = [t for t in trials if t.state in _STATUS]
            new = [t for t in done if t.number not in self._child]
            self._artifacts_stale |= bool(new) or not self._hv_steps
            for t in new:
                self._log_trial(t)
                rho = trial_metrics(t).get(SPEARMAN_KEY)
                if (
                    rho is not None and self.parent_id is not None
                ):  # latency.mode hybrid: the predictor's running rank correlation
                    self.client.log_metric(self.parent_id, SPEARMAN_KEY, rho, step=t.number)
            front = {t.number for t in pareto_trials(done, self.spec.directions)}
            # A configuration evaluated more than once shows the mean of its evaluations and their count.
            # A trial merged into an earlier evaluation of its configuration (it finished first, so it was
            # on the front alone until then) is named from its own values when it leaves the front.
            by_number = {t.number: t for t in done} | {t.number: t for t in mean_trials(done)}
            evals = {n: n_evaluations(by_number[n]) for n in front}
            changed = {n for n in front if evals[n] != self._evaluations.get(n, 1)}
            for number in (front ^ self._pareto) | changed:
                if number in self._child:
                    run_id, on_front = self._child[number], number in front
                    self.client.set_tag(run_id, PARETO_TAG, "true" if on_front else "false")
                    trial = by_number[number]
                    if n_evaluations(trial) > 1:
                        self.client.set_tag(run_id, EVALUATIONS_TAG, str(n_evaluations(trial)))
                    # The runs table shows names without any setup: the name carries the Pareto flag.
                    self.client.update_run(run_id, name=trial_run_name(trial, self.spec, pareto=on_front))
                    self.client.set_tag(run_id, NOTE_TAG, trial_note(trial, self.spec, pareto=on_front))
            self._pareto = front
            self._evaluations = evals
            ref = self._reference(study, done)
            if ref is not None:
                self._log_hypervolume(done, ref)
            if artifacts and self._artifacts_stale:
                self._log_artifacts(done, front)
                self._artifacts_stale = False

    def log_trial_metrics(self, metrics: dict[int, dict[str, float]]) -> None:
        """Log metrics found after a trial finished (e.g. its re-measured latency) to its child run."""
        with self._lock:
            for number, values in metrics.items():
                run_id = self._child.get(number)
                if run_id is not None:
                    for key, value in values.items():
                        self.client.log_metric(run_id, key, value)

    def _log_trial(self, t: FrozenTrial) -> None:
        from mlflow.entities import Metric, Param

        assert self.parent_id is not None
        tags = {
            "mlflow.parentRunId": self.parent_id,
            TRIAL_TAG: str(t.number),
            "n": str(t.number),
            STUDY_TAG: self.spec.name,
            "state": t.state.name.lower(),
            PARETO_TAG: "false",
        }
        if t.state == TrialState.COMPLETE and t.constraints:
            tags["feasible"] = str(is_feasible(t)).lower()
        if ERROR_ATTR in t.user_attrs:
            tags["error"] = str(t.user_attrs[ERROR_ATTR])[:4000]
        if t.user_attrs.get(BASELINE_ATTR):
            tags["baseline"] = str(t.user_attrs[BASELINE_ATTR])
        for k, v in t.user_attrs.items():
            if k.startswith("frontier.tag."):
                tags[k.removeprefix("frontier.tag.")] = str(v)
        tags[NOTE_TAG] = trial_note(t, self.spec, pareto=False)
        start = int(t.datetime_start.timestamp() * 1000) if t.datetime_start else None
        run = self.client.create_run(
            self.experiment_id,
            start_time=start,
            run_name=trial_run_name(t, self.spec, pareto=False),
            tags=tags,
        )
        ts = int((t.datetime_complete or t.datetime_start).timestamp() * 1000) if t.datetime_start else 0
        metrics = [Metric(k, v, ts, 0) for k, v in trial_metrics(t).items()]
        for name, c in t.constraints.items():
            metrics.append(Metric(f"constraint.{_metric_key(name)}", float(c), ts, 0))
        params = [Param(k, str(v)[:6000]) for k, v in t.params.items()]
        self.client.log_batch(run.info.run_id, metrics=metrics, params=params)
        end = int(t.datetime_complete.timestamp() * 1000) if t.datetime_complete else None
        self.client.set_terminated(run.info.run_id, status=_STATUS[t.state], end_time=end)
        self._child[t.number] = run.info.run_id

    def _reference(self, study: optuna.Study, done: Sequence[FrozenTrial]) -> np.ndarray | None:
        """The hypervolume reference point: from the spec, else fixed once from the first feasible trials."""
        feasible = [t for t in done if t.state == TrialState.COMPLETE and is_feasible(t)]
        values = np.array([t.values for t in feasible], dtype=float)
        loss = to_loss(values.reshape(len(feasible), len(self.spec.objectives)), self.spec.directions)
        stored = study.user_attrs.get(REFERENCE_ATTR)
        ref = reference_point(self.spec, loss, stored, min_rows=min(5, self.spec.search.n_trials))
        if (
            ref is not None
            and stored is None
            and not all(o.reference is not None for o in self.spec.objectives)
        ):
            study.set_user_attr(REFERENCE_ATTR, ref.tolist())  # fixed once, so hypervolumes stay comparable
        return ref

    def _log_hypervolume(self, done: Sequence[FrozenTrial], ref: np.ndarray) -> None:
        from mlflow.entities import Metric

        assert self.parent_id is not None
        complete = sorted(
            (t for t in done if t.state == TrialState.COMPLETE and is_feasible(t)), key=lambda t: t.number
        )
        numbers = sorted(t.number for t in done)
        batch: list[Metric] = []
        for n in numbers:
            if n in self._hv_steps:
                continue
            prefix = [t.values for t in complete if t.number <= n]
            hv = hypervolume(to_loss(np.array(prefix), self.spec.directions), ref) if prefix else 0.0
            batch.append(Metric("hypervolume", hv, 0, n))
            self._hv_steps.add(n)
        for i in range(0, len(batch), 900):
            self.client.log_batch(self.parent_id, metrics=batch[i : i + 900])
        if batch:
            self.client.log_batch(
                self.parent_id,
                metrics=[
                    Metric("pareto_size", float(len(self._pareto)), 0, max(numbers)),
                    Metric("trials_finished", float(len(done)), 0, max(numbers)),
                ],
            )

    def _log_artifacts(self, done: Sequence[FrozenTrial], front: set[int]) -> None:
        from frontier.search._plot import plot_pareto

        assert self.parent_id is not None
        rows = pareto_rows(done, front, self.spec)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp)
            (path / "pareto.json").write_text(json.dumps(rows, indent=2, default=str))
            self.client.log_artifact(self.parent_id, str(path / "pareto.json"))
            if any(t.state == TrialState.COMPLETE for t in done):
                plot_pareto(done, front, self.spec, path / "pareto.png")
                self.client.log_artifact(self.parent_id, str(path / "pareto.png"))
        self.client.set_tag(self.parent_id, NOTE_TAG, self._parent_note(rows))

    def _parent_note(self, rows: list[dict[str, Any]]) -> str:
        """The study run's description: links to the Pareto plot, table and trials, and the Pareto table."""
        assert self.parent_id is not None
        exp, run = getattr(self, "experiment_id", "0"), self.parent_id
        # Relative links: the UI serves artifacts at get-artifact and routes everything else after '#'.
        artifact = f"get-artifact?run_uuid={run}&path="
        front = f"#/experiments/{exp}/runs?viewStateShareKey={view_key(self.spec.name, 'pareto')}"
        lines = [
            f"**Study {self.spec.name}**: {len(rows)} trials on the Pareto set "
            f"({', '.join(f'{o.direction} {o.name}' for o in self.spec.objectives)}).",
            "",
            f"[Pareto plot]({artifact}pareto.png) · [Pareto table (JSON)]({artifact}pareto.json) · "
            f"[Pareto trials]({front}) · [all artifacts](#/experiments/{exp}/runs/{run}/artifacts)",
        ]
        if rows:
            names = [o.name for o in self.spec.objectives]
            lines += ["", "| trial | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
            for r in rows[:_NOTE_ROWS]:
                lines.append(
                    f"| {r['number']} | " + " | ".join(_num(r["values"].get(n)) for n in names) + " |"
                )
            if len(rows) > _NOTE_ROWS:
                lines.append(f"\n{len(rows) - _NOTE_ROWS} more in the Pareto table.")
        return "\n".join(lines)


_NOTE_ROWS = 50  # a description is a tag value: MLflow caps it, so the full table stays in pareto.json


def _num(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) else "-"


def trial_run_name(t: FrozenTrial, spec: StudySpec, *, pareto: bool) -> str:
    """A trial's MLflow run name: number, Pareto flag and objective values, e.g.
    ``trial-7 ★ pareto · accuracy=0.987 latency_ms=0.235`` (what the runs table shows by default)."""
    if t.state != TrialState.COMPLETE or not t.values:
        return f"trial-{t.number} · {t.state.name.lower()}"
    values = " ".join(f"{o.name}={_num(v)}" for o, v in zip(spec.objectives, t.values, strict=False))
    flag = " ★ pareto" if pareto else ("" if is_feasible(t) else " · infeasible")
    return f"trial-{t.number}{flag} · {values}"[:250]


def trial_note(t: FrozenTrial, spec: StudySpec, *, pareto: bool) -> str:
    """A trial's run description: Pareto membership, objectives, constraints, or its error."""
    head = f"**Trial {t.number}** of study {spec.name}: {t.state.name.lower()}"
    if t.state == TrialState.COMPLETE and t.values:
        head += ", on the Pareto set" if pareto else ("" if is_feasible(t) else ", infeasible")
        if n_evaluations(t) > 1:
            head += f" (mean of {n_evaluations(t)} evaluations of this configuration)"
        lines = [head, ""] + [
            f"- {o.name} ({o.direction}): {_num(v)}" for o, v in zip(spec.objectives, t.values, strict=False)
        ]
        lines += [f"- constraint {name}: {_num(c)} (<= 0 holds)" for name, c in t.constraints.items()]
        return "\n".join(lines)
    error = str(t.user_attrs.get(ERROR_ATTR) or "").strip()
    return head + (f"\n\n```\n{error[-3000:]}\n```" if error else "")


def _fast_sqlite_store(client: Any) -> None:
    """WAL and synchronous=NORMAL on a local SQLite tracking store, as on the Optuna storage.

    MLflow commits several times per logged run, and on SQLite's default rollback journal each commit
    syncs the file to disk: logging a trial took 36 ms with it and 21 ms without, in one measurement.
    MLflow shares one engine per URI in the process, so this is set once; other stores are left alone.
    """
    from frontier.search._optuna import _sqlite_pragmas

    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    engine = getattr(store, "engine", None)
    if engine is None or getattr(engine.dialect, "name", None) != "sqlite":
        return
    from sqlalchemy import event

    if not event.contains(engine, "connect", _sqlite_pragmas):
        event.listen(engine, "connect", _sqlite_pragmas)
        engine.dispose()  # pooled connections reconnect with the pragmas


def _metric_key(name: str) -> str:
    return "".join(
        ch if ch.isalnum() or ch in "_-. /" else "_"
        for ch in name.replace("<=", "_le_").replace(">=", "_ge_")
    )


def pareto_rows(trials: Sequence[FrozenTrial], front: set[int], spec: StudySpec) -> list[dict[str, Any]]:
    """The Pareto table: one row per Pareto trial with params, objective values and all metrics."""
    from frontier.spaces import decode

    out = []
    # Means over a configuration's evaluations (search._pareto.mean_trials), with their count.
    for t in sorted((t for t in mean_trials(trials) if t.number in front), key=lambda t: t.number):
        out.append(
            {
                "number": t.number,
                "params": decode(spec.params, t.params),
                "values": {o.name: v for o, v in zip(spec.objectives, t.values, strict=True)},
                "metrics": trial_metrics(t),
                "constraints": dict(t.constraints),
                "evaluations": n_evaluations(t),
            }
        )
    return out


def find_parent_run(study: str, storage_url: str, tracking_uri: str) -> str | None:
    """The MLflow parent run of a study, or None when the tracking store does not have it."""
    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri.removeprefix("sqlite:///")).exists():
        return None
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exps = [e.experiment_id for e in client.search_experiments()]
    if not exps:
        return None
    query = f"tags.`{STUDY_TAG}` = '{study}' and tags.`{STORAGE_TAG}` = '{storage_url}'"
    runs = client.search_runs(exps, filter_string=query, max_results=1)
    return runs[0].info.run_id if runs else None


def trial_run(doc: dict[str, Any], *, storage_url: str, tracking_uri: str) -> Any:
    """The MLflow child run of an export's trial (under its study's parent run); ``ValueError`` if none."""
    from mlflow.tracking import MlflowClient

    study, number = doc["study"], int(doc["trial"])
    parent = find_parent_run(study, storage_url, tracking_uri)
    if parent is None:
        raise ValueError(
            f"study '{study}' has no MLflow run in {tracking_uri}; run it with tracking on (or pass the "
            "--tracking-uri it was tracked in) before registering"
        )
    client = MlflowClient(tracking_uri=tracking_uri)
    exp_id = client.get_run(parent).info.experiment_id
    query = f"tags.`mlflow.parentRunId` = '{parent}' and tags.`{TRIAL_TAG}` = '{number}'"
    children = client.search_runs([exp_id], filter_string=query, max_results=1)
    if not children:
        raise ValueError(
            f"trial {number} of study '{study}' has no MLflow run yet; run `frontier run` to sync"
        )
    return children[0]


def version_tags(doc: dict[str, Any], *, storage_url: str) -> dict[str, str]:
    """The model-version tags of an export: study, trial, storage, selection, spec, every objective and
    metric value and, for a compression study, its recipe (JSON)."""
    prov = doc.get("provenance") or {}
    tags = {
        STUDY_TAG: str(doc["study"]),
        TRIAL_TAG: str(doc["trial"]),
        STORAGE_TAG: storage_url,
        "frontier.selected_by": str(prov.get("selected_by")),
        "frontier.spec": json.dumps(prov.get("spec"), sort_keys=True)[:5000],
        **{f"objective.{k}": f"{v:.6g}" for k, v in (doc.get("objectives") or {}).items()},
        **{
            f"metric.{_metric_key(k)}": f"{v:.6g}"
            for k, v in (doc.get("metrics") or {}).items()
            if _is_number(v)
        },
    }
    if doc.get("recipe") is not None:
        recipe = json.dumps(doc["recipe"], sort_keys=True)
        # MLflow caps a version tag at 100,000 characters; the full recipe is also in export/point.yaml
        tags["frontier.recipe"] = recipe if len(recipe) <= 100_000 else "see export/point.yaml of the run"
    return tags


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def register_export(
    doc: dict[str, Any],
    *,
    name: str,
    storage_url: str,
    tracking_uri: str,
    model_dir: str | Path,
    alias: str | None = None,
) -> str:
    """Register an exported Pareto point's applied model in the MLflow Model Registry; return the version.

    The applied Hugging Face directory is logged as an MLflow pyfunc model in the trial's child run (see
    :func:`frontier.search.log_model_dir`; it loads with ``mlflow.pyfunc.load_model`` and no Frontier), the
    export YAML beside it as ``export/point.yaml``, and a new version of ``name`` is created from the
    model, tagged with the study, trial, storage, selection, objective and metric values and recipe
    (:func:`version_tags`). With ``alias``, the alias moves to the new version, so production loads
    ``models:/NAME@ALIAS``.

    Args:
        doc: the export document (:func:`frontier.search.export_point`).
        name: the registered model's name (created if new).
        storage_url: the study's Optuna storage.
        tracking_uri: the MLflow tracking URI the study was tracked in.
        model_dir: the applied model directory (``frontier apply`` output).
        alias: a registry alias to point at the new version, e.g. ``production``.
    """
    import yaml
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from frontier.search._mlflow_model import log_model_dir, read_model_dir, use_tracking_uri

    read_model_dir(model_dir)  # a bad directory fails before anything is written to the store
    if alias is not None:
        _check_alias(alias)
    child = trial_run(doc, storage_url=storage_url, tracking_uri=tracking_uri)
    run_id = child.info.run_id
    client = MlflowClient(tracking_uri=tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "point.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        client.log_artifact(run_id, str(path), artifact_path="export")
    info = log_model_dir(model_dir, run_id=run_id, tracking_uri=tracking_uri)
    with contextlib.suppress(MlflowException):  # already registered: add a version to it
        client.create_registered_model(name, description="Pareto points exported from Frontier studies")
    with use_tracking_uri(tracking_uri):  # the SQL registry looks the models:/ source up in the default store
        version = client.create_model_version(
            name,
            source=info.model_uri,
            run_id=run_id,
            tags=version_tags(doc, storage_url=storage_url),
            model_id=info.model_id,
        )
    if alias is not None:
        client.set_registered_model_alias(name, alias, version.version)
    return str(version.version)


def _check_alias(alias: str) -> None:
    """MLflow's alias rule, checked before anything is logged (MLflow checks it only at the end)."""
    import re

    if not re.fullmatch(r"[\w-]{1,255}", alias) or re.fullmatch(r"[vV]\d+|latest", alias, re.IGNORECASE):
        raise ValueError(
            f"the alias must be letters, digits, '_' or '-' and not 'latest' or v<number> (which name "
            f"versions); got '{alias}'. Use e.g. 'production' or 'staging'"
        )


class TrackerThread:
    """Calls :meth:`MlflowTracker.sync` every ``interval`` seconds in the background, and once at stop.

    The Pareto artifacts are redrawn at most every ``artifact_interval`` seconds meanwhile (the plot holds
    the interpreter for ~0.2 s that the driver's scheduling loop would otherwise have), and always at stop.
    """

    def __init__(
        self,
        tracker: MlflowTracker,
        study_name: str,
        storage_url: str,
        interval: float = 3.0,
        artifact_interval: float = 30.0,
    ):
        self.tracker = tracker
        self.study_name = study_name
        self.storage_url = storage_url
        self.interval = interval
        self.artifact_interval = artifact_interval
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="frontier-mlflow", daemon=True)
        self.errors: list[str] = []

    def _study(self) -> optuna.Study:
        from frontier.search._optuna import make_storage

        return optuna.load_study(study_name=self.study_name, storage=make_storage(self.storage_url))

    def _loop(self) -> None:
        study = self._study()
        drawn = time.monotonic()
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                draw = time.monotonic() - drawn >= self.artifact_interval
                self.tracker.sync(study, artifacts=draw)
                if draw:
                    drawn = time.monotonic()
            except Exception as exc:  # tracking must never stop a study; the final sync retries
                self.errors.append(repr(exc))
                log.warning("MLflow sync failed (will retry): %r", exc)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join()
        self.tracker.sync(self._study())
