"""Optuna adapter: storage, opening and resuming studies, telling results."""

from __future__ import annotations

import copy
import datetime
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from frontier.search._optuna_private import rdb_backend, rdb_models
from frontier.search._pareto import ERROR_ATTR, METRICS_ATTR
from frontier.spaces import StudySpec, spec_from_dict

SPEC_ATTR = "frontier.spec"
SAMPLER_ATTR = "frontier.sampler"
INTERRUPTED = (
    "interrupted: the process running this trial stopped before it finished (trial marked failed on resume)"
)
# Interrupted trials (their process died) are run once more with the same parameters, as Optuna's
# RetryFailedTrialCallback does: the original stays FAIL with its reason and RETRIED_ATTR, which takes it
# off the budget; the retry carries RETRY_OF_ATTR (the original's number) and Optuna's own system
# attributes ("failed_trial", "retry_history"), so RetryFailedTrialCallback.retried_trial_number reads it.
RETRY_OF_ATTR = "frontier.retry_of"
RETRIED_ATTR = "frontier.retried"
# A multi-fidelity trial's intermediate reports: [[step, {objective: value}], ...] in the order made. Optuna's
# own intermediate values (trial.report) hold one float per step, the first objective's; a multi-objective
# scheduler (MO-ASHA) needs every objective's, to rebuild its rungs when the study resumes.
STEPS_ATTR = "frontier.steps"

optuna.logging.set_verbosity(optuna.logging.WARNING)
log = logging.getLogger(__name__)


def default_storage(run_dir: str | Path) -> str:
    path = Path(run_dir).expanduser().resolve() / "frontier.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the MLflow tracker read while the searcher writes, and synchronous=NORMAL (safe with WAL:
    # a power cut may lose the last transactions, never corrupt the file) removes an fsync per commit.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_storage(url: str) -> optuna.storages.BaseStorage:
    """An RDB storage; SQLite gets a long lock timeout and WAL: the searcher and the tracker share it."""
    if url.startswith("sqlite:"):
        from sqlalchemy import event

        storage = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
        event.listen(storage.engine, "connect", _sqlite_pragmas)
        storage.engine.dispose()  # connections opened while creating tables reconnect with the pragmas
        return storage
    if url.startswith(("postgresql", "mysql")):
        return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
    raise ValueError(
        f"storage must be an SQLAlchemy URL starting with sqlite:, postgresql or mysql, but got {url!r}"
    )


def _shape(spec_dict: Mapping[str, Any]) -> dict[str, Any]:
    """What must not change when a study is resumed: its space, objectives and constraints."""
    return {k: spec_dict.get(k) for k in ("space", "objectives", "constraints", "evaluator")}


def open_study(spec: StudySpec, storage_url: str, sampler: optuna.samplers.BaseSampler) -> optuna.Study:
    """Create the study, or load it to resume. Trials left RUNNING by a dead process are marked failed.

    Raises:
        ValueError: the stored study of this name has another space, objectives or evaluator.
    """
    storage = make_storage(storage_url)
    study = optuna.create_study(
        study_name=spec.name,
        storage=storage,
        directions=list(spec.directions),
        sampler=sampler,
        load_if_exists=True,
    )
    stored = study.user_attrs.get(SPEC_ATTR)
    if stored is not None and _shape(stored) != _shape(spec.to_dict()):
        raise ValueError(
            f"study '{spec.name}' already exists in {storage_url} with a different space, objectives, "
            "constraints or evaluator; resuming needs the same ones. Give the study a new name "
            "(--set name=...) or use another storage."
        )
    if [d.name.lower() for d in study.directions] != spec.directions:
        raise ValueError(
            f"study '{spec.name}' in {storage_url} has directions "
            f"{[d.name.lower() for d in study.directions]}, but the spec asks for {spec.directions}"
        )
    study.set_user_attr(SPEC_ATTR, spec.to_dict())
    fail_interrupted(study)
    return study


def load_study(name: str, storage_url: str) -> optuna.Study:
    try:
        return optuna.load_study(study_name=name, storage=make_storage(storage_url))
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(make_storage(storage_url))]
        raise ValueError(f"Unknown study '{name}' in {storage_url}. Available: {sorted(names)}") from None


def stored_spec(study: optuna.Study) -> StudySpec:
    data = study.user_attrs.get(SPEC_ATTR)
    if data is None:
        raise ValueError(f"study '{study.study_name}' was not created by Frontier (it has no stored spec)")
    return spec_from_dict(data)


def fail_interrupted(study: optuna.Study, *, retry: bool = True) -> int:
    """Mark RUNNING trials as FAIL (their process died); return how many.

    With ``retry``, each one that is not itself a retry is enqueued once more with the same parameters
    (:func:`enqueue_retry`); the next run of the study evaluates it first.
    """
    storage = study._storage
    trials = study.get_trials(deepcopy=False)
    retried = {t.system_attrs.get("failed_trial") for t in trials}
    n = 0
    for t in trials:
        if t.state != TrialState.RUNNING:
            continue
        storage.set_trial_user_attr(t._trial_id, ERROR_ATTR, INTERRUPTED)
        if retry and RETRY_OF_ATTR not in t.user_attrs:
            if t.number not in retried:  # a crash after enqueueing the retry left the original RUNNING
                enqueue_retry(study, t.number, t.params, t.user_attrs)
            storage.set_trial_user_attr(t._trial_id, RETRIED_ATTR, True)
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        n += 1
    return n


def enqueue_retry(
    study: optuna.Study, number: int, params: Mapping[str, Any], user_attrs: Mapping[str, Any]
) -> FrozenTrial:
    """Enqueue (WAITING) a re-run of trial ``number`` with the same parameters and return it.

    Its user attributes are the original's (warm-start labels, say) less its outcome, plus
    ``RETRY_OF_ATTR``; its system attributes are those Optuna's ``RetryFailedTrialCallback`` writes.
    """
    kept = {k: v for k, v in user_attrs.items() if k not in (ERROR_ATTR, METRICS_ATTR, RETRIED_ATTR)}
    template = optuna.trial.create_trial(
        state=TrialState.WAITING,
        user_attrs={**kept, RETRY_OF_ATTR: number},
        system_attrs={"fixed_params": dict(params), "failed_trial": number, "retry_history": [number]},
    )
    study.add_trial(template)
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    return next(t for t in reversed(waiting) if t.system_attrs.get("failed_trial") == number)


def n_done(study: optuna.Study) -> int:
    """Trials that count against the budget: complete, failed and pruned; not the interrupted trials that
    were re-run (their retries count instead)."""
    states = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
    return sum(
        1 for t in study.get_trials(deepcopy=False, states=states) if not t.user_attrs.get(RETRIED_ATTR)
    )


def tell_result(
    study: optuna.Study,
    trial: optuna.Trial,
    spec: StudySpec,
    metrics: Mapping[str, float] | None,
    *,
    error: str | None = None,
    pruned: bool = False,
) -> FrozenTrial:
    """Record one evaluation: objective values and constraints, or a failure with its reason.

    A missing, NaN or infinite objective fails the trial (with the reason) rather than reaching the sampler.
    """
    clean = {k: float(v) for k, v in (metrics or {}).items() if isinstance(v, int | float)}
    storable = {k: v for k, v in clean.items() if math.isfinite(v)}
    if storable:
        trial.set_user_attr(METRICS_ATTR, storable)
    if error is None and not pruned:
        for o in spec.objectives:
            if o.name not in clean:
                error = f"objective '{o.name}' missing from the evaluator's metrics {sorted(clean)}"
                break
            if not math.isfinite(clean[o.name]):
                error = f"objective '{o.name}' is {clean[o.name]}, not a finite number"
                break
    if error is None and not pruned:
        for c in spec.constraints:
            value = clean.get(c.metric)
            if value is None or not math.isfinite(value):
                error = f"constraint metric '{c.metric}' missing or not finite in {sorted(clean)}"
                break
    if error is not None:
        trial.set_user_attr(ERROR_ATTR, error[:4000])
        return study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
    if pruned:
        return study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
    for c in spec.constraints:
        trial.set_constraint(f"{c.metric}{c.op}{c.value:g}", c.violation(clean[c.metric]))
    return study.tell(trial, [clean[o.name] for o in spec.objectives], skip_if_finished=True)


def with_steps(
    frozen: FrozenTrial, steps: Sequence[tuple[int, Mapping[str, float]]], spec: StudySpec
) -> FrozenTrial:
    """``frozen`` with its intermediate reports: Optuna's intermediate values (``trial.report`` semantics:
    the first objective's value, the first report of a step kept) and every objective's in ``STEPS_ATTR``.
    The persistent write (:meth:`WriteThroughStudy.persist`) stores both with the trial's outcome."""
    names = [o.name for o in spec.objectives]
    intermediate: dict[int, float] = {}
    recorded: list[list[Any]] = []
    for step, metrics in steps:
        values = {n: float(metrics[n]) for n in names if isinstance(metrics.get(n), int | float)}
        recorded.append([int(step), values])
        if names[0] in values:
            intermediate.setdefault(int(step), values[names[0]])
    out = copy.copy(frozen)
    out.intermediate_values = {**frozen.intermediate_values, **intermediate}
    out.user_attrs = {**frozen.user_attrs, STEPS_ATTR: recorded}
    return out


def stored_steps(trial: FrozenTrial) -> list[tuple[int, dict[str, float]]]:
    """A stored trial's intermediate reports (:data:`STEPS_ATTR`), ``(step, {objective: value})`` in order."""
    return [(int(step), dict(values)) for step, values in trial.user_attrs.get(STEPS_ATTR, [])]


@dataclass
class LiveTrial:
    """A trial being evaluated: the in-memory trial the sampler sees, and its persisted twin."""

    trial: optuna.Trial
    trial_id: int
    number: int


class _TrialWriter:
    """Writes a trial's creation, and later its whole outcome, each in one SQLite transaction.

    Optuna's RDB storage commits every attribute, value and parameter in a transaction of its own and
    re-reads the trial row before each (27 statements and 4 commits for a trial with three parameters and
    one metrics attribute, ~15 ms of CPU on the driver); these two transactions write the same rows in
    ~2 ms. They use the tables and value encodings of the installed Optuna's own models, and are used only
    on the schema version they were checked against (a test compares every field they write with what
    Optuna's own calls write); any other storage or version keeps Optuna's calls.
    """

    SCHEMA = "v3.2.0.a"  # Optuna's RDB schema (alembic revision) these writes were checked against

    def __init__(self, backend: optuna.storages.RDBStorage) -> None:
        import sqlalchemy

        models = rdb_models()
        self.engine = backend.engine
        self.models = models
        self.trials = models.TrialModel.__table__
        self.params = models.TrialParamModel.__table__
        self.values = models.TrialValueModel.__table__
        self.intermediate = models.TrialIntermediateValueModel.__table__
        self.user_attrs = models.TrialUserAttributeModel.__table__
        self.system_attrs = models.TrialSystemAttributeModel.__table__
        # How a datetime is stored (naive UTC in Optuna 5) is the model's business, not the schema's: its
        # attribute setters do the conversion, so datetimes are converted through a model object.
        mapper = sqlalchemy.inspect(models.TrialModel)
        self._datetime_keys = {
            column: mapper.get_property_by_column(self.trials.c[column]).key
            for column in ("datetime_start", "datetime_complete")
        }

    @classmethod
    def for_storage(cls, storage: optuna.storages.BaseStorage) -> _TrialWriter | None:
        backend = rdb_backend(storage)  # studies wrap an RDBStorage in a cache
        if not isinstance(backend, optuna.storages.RDBStorage) or backend.engine.dialect.name != "sqlite":
            return None
        try:
            version = backend.get_current_version()
            if version != cls.SCHEMA:
                log.info("Optuna storage schema %s (not %s): using Optuna's own writes", version, cls.SCHEMA)
                return None
            return cls(backend)
        except Exception as exc:  # a renamed model or column: Optuna's own calls still work
            log.info("Optuna's RDB models changed (%r): using Optuna's own writes", exc)
            return None

    def _stored(self, column: str, when: datetime.datetime | None) -> Any:
        model = self.models.TrialModel(**{column: when})
        return getattr(model, self._datetime_keys[column])

    def create_running(
        self, study_id: int, params: Mapping[str, Any], distributions: Mapping[str, Any]
    ) -> tuple[int, int]:
        """Insert a RUNNING trial with its parameters; return its id and number."""
        import sqlalchemy as sa
        from optuna.distributions import distribution_to_json

        trials = self.trials
        start = self._stored("datetime_start", datetime.datetime.now())
        # The INSERT comes first so that the transaction holds SQLite's write lock from its first statement
        # (a transaction that reads first and writes later can fail at once instead of waiting for it).
        with self.engine.begin() as conn:
            inserted = conn.execute(
                sa.insert(trials).values(
                    study_id=study_id, number=None, state=TrialState.RUNNING, datetime_start=start
                )
            )
            trial_id = int(inserted.inserted_primary_key[0])  # type: ignore[index]
            # The number is Optuna's: how many trials of the study came before this one.
            number = conn.execute(
                sa.select(sa.func.count(trials.c.trial_id)).where(
                    trials.c.study_id == study_id, trials.c.trial_id < trial_id
                )
            ).scalar_one()
            conn.execute(sa.update(trials).where(trials.c.trial_id == trial_id).values(number=number))
            if params:
                conn.execute(
                    sa.insert(self.params),
                    [
                        {
                            "trial_id": trial_id,
                            "param_name": name,
                            "param_value": distributions[name].to_internal_repr(value),
                            "distribution_json": distribution_to_json(distributions[name]),
                        }
                        for name, value in params.items()
                    ],
                )
        return int(trial_id), int(number)

    def finish(self, trial_id: int, finished: FrozenTrial) -> None:
        """Write a finished trial's attributes, intermediate and final values and state, all at once.

        Raises:
            optuna.exceptions.UpdateFinishedTrialError: the stored trial is no longer RUNNING.
        """
        import sqlalchemy as sa

        trials, m = self.trials, self.models
        complete = self._stored("datetime_complete", finished.datetime_complete or datetime.datetime.now())
        with self.engine.begin() as conn:
            done = conn.execute(
                sa.update(trials)
                .where(trials.c.trial_id == trial_id, trials.c.state == TrialState.RUNNING)
                .values(state=finished.state, datetime_complete=complete)
            )
            if done.rowcount != 1:
                raise optuna.exceptions.UpdateFinishedTrialError(
                    f"trial {trial_id} is no longer RUNNING in the storage; its result was not written"
                )
            for table, attrs in (
                (self.user_attrs, finished.user_attrs),
                (self.system_attrs, finished.system_attrs),
            ):
                if attrs:  # an enqueued trial already has some of them: replace those
                    conn.execute(
                        sa.delete(table).where(table.c.trial_id == trial_id, table.c.key.in_(list(attrs)))
                    )
                    conn.execute(
                        sa.insert(table),
                        [
                            {"trial_id": trial_id, "key": k, "value_json": json.dumps(v)}
                            for k, v in attrs.items()
                        ],
                    )
            steps = finished.intermediate_values
            if steps:
                table = self.intermediate
                conn.execute(
                    sa.delete(table).where(table.c.trial_id == trial_id, table.c.step.in_(list(steps)))
                )
                rows = []
                for step, value in steps.items():
                    stored, kind = m.TrialIntermediateValueModel.intermediate_value_to_stored_repr(value)
                    rows.append(
                        {
                            "trial_id": trial_id,
                            "step": step,
                            "intermediate_value": stored,
                            "intermediate_value_type": kind,
                        }
                    )
                conn.execute(sa.insert(table), rows)
            if finished.values is not None:
                rows = []
                for objective, value in enumerate(finished.values):
                    stored, kind = m.TrialValueModel.value_to_stored_repr(value)
                    rows.append(
                        {"trial_id": trial_id, "objective": objective, "value": stored, "value_type": kind}
                    )
                conn.execute(sa.insert(self.values), rows)


class WriteThroughStudy:
    """Ask/tell where the sampler reads an in-memory copy of the study and every write goes to storage.

    Optuna's samplers re-read all trials several times per suggestion; on an RDB storage that costs tens of
    milliseconds per trial and grows with the study. Frontier runs one driver per study, so it keeps the
    sampler's view in memory (loaded from storage on start, so resume works) and writes through to the
    persistent storage: the trial is created there (RUNNING, with its params) before it is evaluated, and its
    attributes, constraints, values and state are written the moment it finishes. A crash therefore loses
    nothing that finished, and leaves the running trials RUNNING, to be marked failed on resume.

    Trial numbers users see are the persistent ones; the in-memory numbering is private to the sampler.
    """

    def __init__(self, study: optuna.Study, sampler: optuna.samplers.BaseSampler) -> None:
        self.persistent = study
        self.storage = study._storage
        self.study_id = study._study_id
        self.memory = optuna.create_study(directions=study.directions, sampler=sampler)
        trials = study.get_trials(deepcopy=False)
        self.memory.add_trials([t for t in trials if t.state.is_finished()])
        waiting = [t for t in trials if t.state == TrialState.WAITING]
        # Retries of interrupted trials go first (as a retry asked for in this run does): a resumed study
        # then runs its trials in the order an uninterrupted run would have, warm starts after them.
        self._waiting = sorted(waiting, key=lambda t: "failed_trial" not in t.system_attrs)
        self._writer = _TrialWriter.for_storage(self.storage)

    def ask(self, params: Any) -> tuple[LiveTrial, Any]:
        """Ask the sampler for a candidate over ``params`` and create its persistent RUNNING trial."""
        from frontier.spaces import suggest

        if self._waiting:  # trials enqueued in storage (warm starts) go first, in order
            queued = self._waiting.pop(0)
            self.memory.enqueue_trial(
                queued.system_attrs.get("fixed_params", {}), user_attrs=queued.user_attrs
            )
            trial = self.memory.ask()
            candidate = suggest(trial, params)
            self.storage.set_trial_state_values(queued._trial_id, TrialState.RUNNING)
            for name, value in trial.params.items():
                self.storage.set_trial_param(
                    queued._trial_id,
                    name,
                    trial.distributions[name].to_internal_repr(value),
                    trial.distributions[name],
                )
            return LiveTrial(trial, queued._trial_id, queued.number), candidate
        trial = self.memory.ask()
        candidate = suggest(trial, params)
        if self._writer is not None:
            trial_id, number = self._writer.create_running(self.study_id, trial.params, trial.distributions)
            return LiveTrial(trial, trial_id, number), candidate
        template = optuna.trial.create_trial(
            state=TrialState.RUNNING, params=trial.params, distributions=trial.distributions
        )
        trial_id = self.storage.create_new_trial(self.study_id, template_trial=template)
        return LiveTrial(trial, trial_id, self.storage.get_trial_number_from_id(trial_id)), candidate

    def retry(self, live: LiveTrial) -> None:
        """Enqueue a re-run of ``live`` (its worker died) with the same parameters, to be asked for next.

        Call before persisting the original's failure, with ``RETRIED_ATTR`` set on it: a crash in
        between leaves the original RUNNING and the retry queued, which a resume keeps as one retry.
        """
        trial = live.trial
        queued = enqueue_retry(self.persistent, live.number, trial.params, trial.user_attrs)
        self._waiting.insert(0, queued)

    def persist(self, live: LiveTrial, finished: FrozenTrial) -> FrozenTrial:
        """Write a finished in-memory trial to storage; return it with its persistent number."""
        if self._writer is not None:
            self._writer.finish(live.trial_id, finished)
        else:
            self._write_finished(live.trial_id, finished)
        out = copy.copy(finished)
        out.number = live.number
        out._trial_id = live.trial_id
        return out

    def _write_finished(self, trial_id: int, finished: FrozenTrial) -> None:
        for key, value in finished.user_attrs.items():
            self.storage.set_trial_user_attr(trial_id, key, value)
        for key, value in finished.system_attrs.items():
            self.storage.set_trial_system_attr(trial_id, key, value)
        for step, value in finished.intermediate_values.items():
            self.storage.set_trial_intermediate_value(trial_id, step, value)
        self.storage.set_trial_state_values(trial_id, finished.state, finished.values)
