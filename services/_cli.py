"""The ``frontier`` command line."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from frontier.services._settings import get_settings

app = typer.Typer(
    name="frontier",
    help="Search neural architectures and compression configs for the accuracy-latency Pareto set.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


class TrialFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


class ParetoFormat(StrEnum):
    table = "table"
    json = "json"


RunDir = Annotated[
    Path | None,
    typer.Option(
        "--run-dir", help="Default home of storage and MLflow store [env FRONTIER_RUN_DIR, default ./runs]."
    ),
]
Storage = Annotated[
    str | None, typer.Option("--storage", help="Optuna storage URL [default: RUN_DIR/frontier.db].")
]
TrackingUri = Annotated[
    str | None, typer.Option("--tracking-uri", help="MLflow tracking URI [default: RUN_DIR/mlflow.db].")
]


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _locations(run_dir: Path | None, storage: str | None, tracking_uri: str | None) -> tuple[Path, str, str]:
    """Where a writing command (``run``) keeps its study: created on demand."""
    from frontier.search import default_storage, default_tracking_uri

    settings = get_settings()
    rd = run_dir or settings.run_dir
    return (
        rd,
        storage or settings.storage or default_storage(rd),
        tracking_uri or settings.tracking_uri or default_tracking_uri(rd),
    )


STORE_FILE = "frontier.db"
_POINT_ELSEWHERE = "pass --run-dir DIR (or --storage URL, or set FRONTIER_RUN_DIR) to read another one"


def _sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL (None for other databases and in-memory SQLite)."""
    if not url.startswith("sqlite:///") or url in ("sqlite:///", "sqlite:///:memory:"):
        return None
    return Path(url.removeprefix("sqlite:///").split("?", 1)[0])


def _read_locations(run_dir: Path | None, storage: str | None, tracking_uri: str | None) -> tuple[str, str]:
    """Where a read-only command (``studies``, ``trials``, ``pareto``, ``export``, ``ui``) finds a study.

    One rule for every command: ``--storage``/``FRONTIER_STORAGE``, else ``--run-dir``/``FRONTIER_RUN_DIR``,
    else ``./runs``; when ``./runs`` has no store of its own but exactly one of its subdirectories has (an
    older ``make demo`` wrote ``runs/demo/``), that one. Nothing is created: a store that is not there is
    an error naming where it looked, so a typo never leaves an empty database behind.
    """
    settings = get_settings()
    tracking = tracking_uri or settings.tracking_uri
    url = storage or settings.storage
    if url is not None:
        origin = "--storage" if storage else "FRONTIER_STORAGE"
        path = _sqlite_path(url)
        if path is not None and not path.is_file():
            raise _fail(
                f"{origin}: no study store at {path} (the file does not exist); run a study first "
                f"(frontier run SPEC --storage {url}) or pass the URL of an existing store"
            )
        rd = path.parent if path is not None else Path(settings.run_dir)
        return url, tracking or _tracking_beside(rd)
    explicit = (
        run_dir
        if run_dir is not None
        else (settings.run_dir if "run_dir" in settings.model_fields_set else None)
    )
    if explicit is not None:
        store = Path(explicit).expanduser() / STORE_FILE
        if not store.is_file():
            origin = "--run-dir" if run_dir is not None else "FRONTIER_RUN_DIR"
            raise _fail(
                f"{origin}: no study store in {explicit} (looked for {store}); run a study there first "
                f"(frontier run SPEC --run-dir {explicit}) or {_POINT_ELSEWHERE}"
            )
        return _sqlite_url(store), tracking or _tracking_beside(store.parent)
    default = Path(settings.run_dir)
    store = default / STORE_FILE
    if store.is_file():
        return _sqlite_url(store), tracking or _tracking_beside(default)
    found = sorted(default.glob(f"*/{STORE_FILE}"))
    if len(found) == 1:
        err.print(f"[dim]reading {found[0]} (the only study store under {default}/)[/]", highlight=False)
        return _sqlite_url(found[0]), tracking or _tracking_beside(found[0].parent)
    if found:
        dirs = ", ".join(str(f.parent) for f in found)
        raise _fail(f"{default}/ has several study stores ({dirs}); pass --run-dir with one of them")
    raise _fail(
        f"no study store in {default.resolve()} (looked for {store} and {default}/*/{STORE_FILE}); "
        f"run a study first (frontier run SPEC) or {_POINT_ELSEWHERE}"
    )


def _sqlite_url(path: Path) -> str:
    return f"sqlite:///{path.expanduser().resolve()}"


def _tracking_beside(run_dir: Path) -> str:
    """The MLflow store a study run in ``run_dir`` wrote (its path only: nothing is created)."""
    return _sqlite_url(Path(run_dir) / "mlflow.db")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


@app.command()
def run(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC", help="Study spec (YAML or JSON).")],
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a spec field: key.path=value (repeatable).")
    ] = None,
    address: Annotated[
        str | None, typer.Option("--address", help="Existing Ray cluster address [env FRONTIER_RAY_ADDRESS].")
    ] = None,
    run_dir: RunDir = None,
    storage: Storage = None,
    tracking_uri: TrackingUri = None,
    no_track: Annotated[bool, typer.Option("--no-track", help="Do not log to MLflow.")] = False,
) -> None:
    """Run a study (or resume it: same name and storage) and print its Pareto set.

    Exits 1 when no trial completed, with the commonest trial error in the last line.
    """
    from frontier.search import run_study
    from frontier.spaces import SpecError

    spec = _load_spec(spec_path, set_)
    rd, storage_url, tracking = _locations(
        run_dir, storage or spec.storage, tracking_uri or spec.tracking.uri
    )
    spec = spec.model_copy(
        update={"storage": storage_url, "tracking": spec.tracking.model_copy(update={"uri": tracking})}
    )
    console.print(f"[bold]study[/] {spec.name}  [dim]storage[/] {storage_url}", highlight=False)
    with _store_errors(storage_url, "pass a --storage URL whose directory exists and is writable"):
        from frontier.search._optuna import make_storage

        make_storage(storage_url)  # an unopenable --storage fails here in one line, before Ray starts
    reporter = _ProgressReporter(spec.search.n_trials, [o.name for o in spec.objectives])
    try:
        with reporter:
            outcome = run_study(
                spec,
                run_dir=rd,
                address=address or get_settings().ray_address,
                on_progress=reporter.update,
                on_message=reporter.message,
                track=not no_track,
            )
    except (SpecError, ValueError) as exc:
        raise _fail(str(exc)) from None
    done = sum(1 for r in outcome.trials if r.state in ("complete", "fail", "pruned"))
    console.print(
        f"[bold]{outcome.state}[/]: {done}/{spec.search.n_trials} trials "
        f"({outcome.count('complete')} complete, {outcome.count('fail')} failed, "
        f"{outcome.count('pruned')} pruned) "
        f"· sampler {outcome.sampler}"
    )
    if outcome.ray_address:
        console.print(f"[dim]Ray cluster: {outcome.ray_address}[/]")
    if outcome.count("complete") == 0:
        raise _fail(_no_trial_completed(outcome.trials, spec.search.n_trials), code=1)
    _pareto_table(outcome.pareto, [o.name for o in spec.objectives], title=f"Pareto set of {spec.name}")
    # The read commands find this study without flags when it is in the default place (same rule).
    if storage_url != _sqlite_url(Path(rd) / STORE_FILE):
        where = f" --storage {storage_url}"
    elif Path(rd).resolve() == Path(get_settings().run_dir).resolve():
        where = ""
    else:
        where = f" --run-dir {rd}"
    if outcome.tracking_uri:
        ui_where = where if outcome.tracking_uri == _tracking_beside(rd) else f" --tracking-uri {tracking}"
        console.print(
            f"MLflow: parent run {outcome.parent_run_id}. Open the UI with:\n"
            f"  frontier ui {spec.name}{ui_where}",
            highlight=False,
        )
    console.print(
        f"Export a point with:\n  frontier export {spec.name}{where} --select "
        f"'{_best_select(spec.objectives[0])}' -o {spec.name}.yaml",
        highlight=False,
    )


def _no_trial_completed(rows: list[Any], budget: int) -> str:
    """The last line of a study in which no trial completed: how many ran and the commonest error."""
    from collections import Counter

    errors = Counter((r.error or "").strip().splitlines()[-1] for r in rows if r.state == "fail" and r.error)
    ran = sum(1 for r in rows if r.state in ("complete", "fail", "pruned"))
    head = f"no trial completed ({ran} of {budget} ran: {sum(r.state == 'fail' for r in rows)} failed"
    head += f", {sum(r.state == 'pruned' for r in rows)} pruned)"
    if not errors:
        return head
    message, count = errors.most_common(1)[0]
    return f"{head}; commonest error ({count} of {ran} trials): {message[:300]}"


def _load_spec(spec_path: Path, set_: list[str] | None) -> Any:
    """Read SPEC with its --set overrides; every way it can be wrong is a one-line error (exit 2)."""
    from frontier.spaces import SpecError, load_spec, parse_overrides

    if spec_path.is_dir():
        raise _fail(f"SPEC: {spec_path} is a directory; pass a study spec file (YAML or JSON)")
    try:
        return load_spec(spec_path, parse_overrides(set_ or []))
    except SpecError as exc:
        raise _fail(str(exc)) from None
    except OSError as exc:
        raise _fail(f"SPEC: cannot read {spec_path}: {exc.strerror or exc}") from None
    except RecursionError:
        raise _fail(
            f"SPEC: {spec_path} is nested too deeply to read; a study spec is a few levels deep"
        ) from None


class _ProgressReporter:
    """Trial progress: a live bar on a terminal; elsewhere (CI, ``nohup``, a service's log) one plain line
    per finished trial, since a bar that redraws in place prints nothing until the study ends."""

    def __init__(self, total: int, objectives: list[str]) -> None:
        self.total = total
        self.objectives = objectives
        self.live = console.is_terminal
        self._bar: Any = None
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                TextColumn("[bold blue]trials"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[info]}"),
                console=console,
                transient=False,
            )
            self._task = self._bar.add_task("trials", total=total, info="starting Ray workers...")
        else:
            console.print("starting Ray workers...", highlight=False)

    def __enter__(self) -> _ProgressReporter:
        if self._bar is not None:
            self._bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def message(self, line: str) -> None:
        """A line of work done before the trials start (building a model), above the bar if there is one."""
        console.print(line, highlight=False, soft_wrap=True)
        console.file.flush()

    def update(self, p: Any) -> None:
        counts = f"failed {p.failed}  pruned {p.pruned}  pareto {p.pareto}"
        if self._bar is not None:
            best = "  ".join(f"{k}={_fmt(v)}" for k, v in p.best.items())
            self._bar.update(self._task, completed=p.done, info=f"{counts}  best: {best}")
            return
        line = f"[{p.done}/{p.total}]"
        t = p.last
        if t is not None:
            state = t.state.name.lower()
            line += f" trial {t.number} {state}"
            if t.values:
                line += " " + " ".join(
                    f"{n}={_fmt(v)}" for n, v in zip(self.objectives, t.values, strict=False)
                )
            elif state == "fail":
                from frontier.search._pareto import ERROR_ATTR

                error = str(t.user_attrs.get(ERROR_ATTR) or "").strip().splitlines()
                line += f": {error[-1][:160]}" if error else ""
        console.print(f"{line}  ({counts})", highlight=False, soft_wrap=True)
        console.file.flush()


def _pareto_table(
    rows: list[Any], objectives: list[str], title: str, evaluations: dict[int, int] | None = None
) -> None:
    table = Table(title=title, title_justify="left")
    table.add_column("trial", justify="right")
    for name in objectives:
        table.add_column(name, justify="right")
    repeated = evaluations is not None and any(n > 1 for n in evaluations.values())
    if repeated:
        table.add_column("evaluations", justify="right")
    table.add_column("params")
    for r in sorted(rows, key=lambda r: r.number):
        table.add_row(
            str(r.number),
            *(_fmt(r.values.get(n)) for n in objectives),
            *([str(evaluations.get(r.number, 1))] if evaluations is not None and repeated else []),
            ", ".join(f"{k}={_fmt(v)}" for k, v in r.params.items()),
        )
    console.print(table)
    if repeated:
        console.print("Values of configurations evaluated more than once are means over their evaluations.")


@app.command()
def studies(run_dir: RunDir = None, storage: Storage = None, tracking_uri: TrackingUri = None) -> None:
    """List the studies in a storage with their state and trial counts."""
    from frontier.search import list_studies

    storage_url, tracking = _read_locations(run_dir, storage, tracking_uri)
    with _store_errors(storage_url):
        found = list_studies(storage_url)
    table = Table(title=f"studies in {storage_url}", title_justify="left")
    for col in (
        "name",
        "state",
        "done/budget",
        "complete",
        "failed",
        "pruned",
        "running",
        "pareto",
        "started",
    ):
        table.add_column(col)
    for s in found:
        done = s.complete + s.failed + s.pruned
        table.add_row(
            s.name,
            s.state,
            f"{done}/{s.n_trials or '?'}",
            str(s.complete),
            str(s.failed),
            str(s.pruned),
            str(s.running),
            str(s.pareto),
            s.started or "-",
        )
    console.print(table)
    console.print(f"[dim]MLflow tracking store: {tracking}[/]")


def _rows(study: str, storage_url: str) -> tuple[Any, list[Any]]:
    from frontier.search import load_study, stored_spec, trial_rows

    with _store_errors(storage_url):
        st = load_study(study, storage_url)
        spec = stored_spec(st)
        return spec, trial_rows(st, spec)


@contextlib.contextmanager
def _store_errors(
    storage_url: str, fix: str = "pass the --storage URL or --run-dir of a store `frontier run` wrote"
) -> Iterator[None]:
    """A study store that cannot be read is a one-line error, never a traceback."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except ValueError as exc:
        raise _fail(str(exc)) from None
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise _fail(f"cannot open the study store {storage_url}: {reason}; {fix}") from None


@app.command()
def trials(
    study: Annotated[str, typer.Argument(help="Study name.")],
    format: Annotated[TrialFormat, typer.Option("--format", "-f")] = TrialFormat.table,
    run_dir: RunDir = None,
    storage: Storage = None,
    tracking_uri: TrackingUri = None,
) -> None:
    """Every trial in order: number, state, params, metrics, constraints, Pareto flag."""
    storage_url, tracking = _read_locations(run_dir, storage, tracking_uri)
    spec, rows = _rows(study, storage_url)
    if format is TrialFormat.json:
        sys.stdout.write(json.dumps([r.to_dict() for r in rows], indent=2, default=str) + "\n")
        return
    if format is TrialFormat.csv:
        params = sorted({k for r in rows for k in r.params})
        metrics = sorted({k for r in rows for k in r.metrics})
        constraints = sorted({k for r in rows for k in r.constraints})
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(
            [
                "number",
                "state",
                "feasible",
                "pareto",
                *params,
                *metrics,
                *(f"constraint:{c}" for c in constraints),
                "error",
            ]
        )
        for r in rows:
            w.writerow(
                [
                    r.number,
                    r.state,
                    r.feasible,
                    r.pareto,
                    *(r.params.get(p, "") for p in params),
                    *(r.metrics.get(m, "") for m in metrics),
                    *(r.constraints.get(c, "") for c in constraints),
                    (r.error or "").splitlines()[0] if r.error else "",
                ]
            )
        sys.stdout.write(buf.getvalue())
        return
    objectives = [o.name for o in spec.objectives]
    table = Table(title=f"trials of {study}", title_justify="left")
    for col in ("#", "state", *objectives, "feasible", "pareto", "params / error"):
        table.add_column(col)
    for r in rows:
        detail = ", ".join(f"{k}={_fmt(v)}" for k, v in r.params.items())
        if r.error:
            detail = f"[red]{r.error.splitlines()[0][:100]}[/]"
        table.add_row(
            str(r.number),
            r.state,
            *(_fmt(r.values.get(n, r.metrics.get(n, "-"))) for n in objectives),
            "yes" if r.feasible else "[yellow]no[/]",
            "[bold green]*[/]" if r.pareto else "",
            detail,
        )
    console.print(table)
    _mlflow_hint(study, storage_url, tracking)


@app.command()
def pareto(
    study: Annotated[str, typer.Argument(help="Study name.")],
    format: Annotated[ParetoFormat, typer.Option("--format", "-f")] = ParetoFormat.table,
    run_dir: RunDir = None,
    storage: Storage = None,
    tracking_uri: TrackingUri = None,
) -> None:
    """The Pareto set: complete, feasible, non-dominated trials."""
    storage_url, tracking = _read_locations(run_dir, storage, tracking_uri)
    spec, rows = _rows(study, storage_url)
    from frontier.search._results import pareto_means

    front = pareto_means(rows)
    counts = {r.number: r.evaluations for r in front}
    if format is ParetoFormat.json:
        sys.stdout.write(json.dumps([r.to_dict() for r in front], indent=2, default=str) + "\n")
        return
    _pareto_table(
        front,
        [o.name for o in spec.objectives],
        title=f"Pareto set of {study} ({len(front)} trials)",
        evaluations=counts,
    )
    _mlflow_hint(study, storage_url, tracking)


def _mlflow_hint(study: str, storage_url: str, tracking: str) -> None:
    """Name the study's MLflow parent run and how to open it, when the tracking store has it."""
    found = _parent_run(study, storage_url, tracking)
    if found is not None:
        experiment_id, run_id = found
        ui = (
            "frontier ui"
            if tracking == _tracking_beside(_store_dir(storage_url))
            else (f"frontier ui --tracking-uri {tracking}")
        )
        console.print(
            f"[dim]MLflow: parent run {run_id} (experiment {experiment_id}) in {tracking}; open it with: "
            f"{ui} {study}[/]",
            highlight=False,
        )


def _store_dir(storage_url: str) -> Path:
    path = _sqlite_path(storage_url)
    return path.parent if path is not None else Path(get_settings().run_dir)


def _parent_run(study: str, storage_url: str, tracking: str) -> tuple[str, str] | None:
    """(experiment id, run id) of the study's MLflow parent run, or None.

    A local SQLite tracking store is read with the standard library, read-only: importing MLflow costs
    more than a second, twice what the rest of ``frontier trials`` does. Other stores go through MLflow.
    """
    from frontier.search._mlflow import STORAGE_TAG, STUDY_TAG

    path = _sqlite_path(tracking)
    if path is None:
        from frontier.search import find_parent_run

        try:
            from mlflow.tracking import MlflowClient

            run_id = find_parent_run(study, storage_url, tracking)
            return (MlflowClient(tracking).get_run(run_id).info.experiment_id, run_id) if run_id else None
        except Exception:  # the hint is optional: an unreachable tracking server must not fail `trials`
            return None
    if not path.is_file():
        return None
    import sqlite3

    query = (
        "SELECT r.experiment_id, r.run_uuid FROM runs r "
        "JOIN tags a ON a.run_uuid = r.run_uuid AND a.key = ? AND a.value = ? "
        "JOIN tags b ON b.run_uuid = r.run_uuid AND b.key = ? AND b.value = ? "
        "WHERE r.lifecycle_stage = 'active' ORDER BY r.start_time LIMIT 1"
    )
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            row = db.execute(query, (STUDY_TAG, study, STORAGE_TAG, storage_url)).fetchone()
    except sqlite3.Error:
        return None
    return (str(row[0]), str(row[1])) if row else None


ModelDir = Annotated[
    Path | None,
    typer.Option(
        "--model-dir",
        help="The point's applied model directory (`frontier apply` output) [default: apply it now].",
    ),
]


@app.command()
def export(
    study: Annotated[str, typer.Argument(help="Study name.")],
    select: Annotated[
        str | None,
        typer.Option(
            "--select", help="Pick a Pareto point, e.g. 'latency_ms<=2, max(accuracy)' or 'trial=12'."
        ),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write the YAML here (default stdout).")
    ] = None,
    run_dir: RunDir = None,
    storage: Storage = None,
    tracking_uri: TrackingUri = None,
    register: Annotated[
        str | None,
        typer.Option(
            "--register",
            help="Also log the applied model in the trial's MLflow run and register it under NAME.",
        ),
    ] = None,
    alias: Annotated[
        str | None, typer.Option("--alias", help="With --register: point this registry alias at it.")
    ] = None,
    model_dir: ModelDir = None,
) -> None:
    """Export one Pareto point as YAML: its params, metrics and provenance."""
    from frontier.search import export_point

    if register is None and (alias is not None or model_dir is not None):
        given = "--alias" if alias is not None else "--model-dir"
        raise _fail(f"{given} is for registering: pass --register NAME with it")
    storage_url, tracking = _read_locations(run_dir, storage, tracking_uri)
    try:
        doc = export_point(study, storage_url, select, tracking)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    text = yaml.safe_dump(doc, sort_keys=False)
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)
        console.print(f"wrote trial {doc['trial']} of {study} to {output}")
    if register:
        _register(
            doc, name=register, alias=alias, model_dir=model_dir, storage_url=storage_url, tracking=tracking
        )


def _register(
    doc: dict[str, Any],
    *,
    name: str,
    alias: str | None,
    model_dir: Path | None,
    storage_url: str,
    tracking: str,
    out: Console = err,
) -> None:
    """Log the point's applied model in its trial's MLflow run and register a version (``--register``,
    ``promote``); without ``model_dir`` the point is applied into a temporary directory first."""
    import tempfile

    from mlflow.exceptions import MlflowException

    from frontier.search import register_export

    with tempfile.TemporaryDirectory(prefix="frontier-register-") as tmp:
        if model_dir is None:
            model_dir = _apply_point(doc, Path(tmp) / "model")
            out.print(f"applied trial {doc['trial']} of {doc['study']} into a temporary directory")
        try:
            version = register_export(
                doc,
                name=name,
                alias=alias,
                model_dir=model_dir,
                storage_url=storage_url,
                tracking_uri=tracking,
            )
        except (ValueError, MlflowException) as exc:
            raise _fail(str(exc).splitlines()[0] if str(exc) else repr(exc)) from None
    out.print(f"registered '{name}' version {version} in the MLflow Model Registry of {tracking}")
    uri = f"models:/{name}@{alias}" if alias else f"models:/{name}/{version}"
    if alias:
        out.print(f"alias '{alias}' -> version {version}")
    out.print(f"load it: mlflow.pyfunc.load_model({uri!r})  (tracking URI {tracking})", highlight=False)


def _apply_point(doc: dict[str, Any], out_dir: Path) -> Path:
    """Re-create an export's model in ``out_dir`` (the production hand-off), for registering it."""
    what = f"trial {doc['trial']} of study '{doc['study']}'"
    if doc.get("recipe") is None and not doc.get("checkpoint") and doc.get("experts") is None:
        raise _fail(
            f"{what} has no recipe (its study searched no compression) and no kept weights (checkpoint), "
            "so there is no model to apply and register; pass --model-dir DIR with the model directory to "
            "register"
        )
    try:
        from frontier.services._handoff import apply_document
    except ImportError as exc:
        raise _fail(
            f"cannot apply {what} here ({exc}); apply it with `frontier apply` and pass --model-dir DIR"
        ) from None
    try:
        apply_document(doc, out_dir)
    except (TypeError, ValueError, OSError) as exc:
        raise _fail(
            f"cannot apply {what} to register it: {exc}. Pass --model-dir DIR with the model directory "
            "to register"
        ) from None
    return out_dir


@app.command()
def promote(
    study: Annotated[str, typer.Argument(help="Study name.")],
    select: Annotated[
        str,
        typer.Option("--select", help="The Pareto point, e.g. 'latency_ms<=2, max(accuracy)' or 'trial=12'."),
    ],
    name: Annotated[str, typer.Option("--name", help="Registered model name (created if new).")],
    alias: Annotated[str, typer.Option("--alias", help="Registry alias to point at it.")] = "production",
    model_dir: ModelDir = None,
    run_dir: RunDir = None,
    storage: Storage = None,
    tracking_uri: TrackingUri = None,
) -> None:
    """Register a Pareto point's applied model in the MLflow Model Registry and point an alias at it."""
    from frontier.search import export_point

    storage_url, tracking = _read_locations(run_dir, storage, tracking_uri)
    try:
        doc = export_point(study, storage_url, select, tracking)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    _register(
        doc,
        name=name,
        alias=alias,
        model_dir=model_dir,
        storage_url=storage_url,
        tracking=tracking,
        out=console,
    )


_LATENCY_DETAIL = ("latency_ci_ms", "latency_cv")
_TRIAL_FIGURES = ("perplexity", "fidelity", "latency_ms", "latency_norm_ms", "total_params", "size_mb")


def _print_trial_figures(doc: Any) -> None:
    """The figures the study measured for an exported trial, to read beside what ``apply`` wrote."""
    measured = (doc.get("metrics") or {}) if isinstance(doc, dict) else {}
    figures = {k: measured[k] for k in _TRIAL_FIGURES if k in measured}
    if figures:
        trial = f"trial {doc.get('trial')}" if doc.get("trial") is not None else "the trial"
        console.print(f"  {trial} measured: " + ", ".join(f"{k} {_fmt(v)}" for k, v in figures.items()))


def _print_remeasured(doc: Any, output: Path, model: Path | None, recipe_path: Path) -> None:
    """The directory ``apply`` wrote, scored and timed by the export's study evaluator (next to the trial's
    figures); nothing for a bare recipe."""
    from frontier.services._handoff import remeasure

    try:
        now = remeasure(doc, output, model=model)
    except (TypeError, ValueError) as exc:
        raise _fail(f"{recipe_path}: wrote {output}, but cannot measure it as its study did: {exc}") from None
    if now is not None:
        shown = {k: v for k, v in now.items() if k not in _LATENCY_DETAIL}
        console.print(
            "  the directory, measured as the study did: "
            + ", ".join(f"{k} {_fmt(v)}" for k, v in shown.items())
        )


def _print_pruned_moe(
    summary: dict[str, Any], doc: Any, output: Path, model: Path | None, recipe_path: Path, *, measure: bool
) -> None:
    """What ``apply`` wrote for an expert-pruning export, and how to load it (stock or not)."""
    before, after = summary["experts_before"], summary["experts_after"]
    counts = ", ".join(f"{i}: {before[i]} -> {after.get(i, before[i])}" for i in sorted(before))
    ks = sorted(set(summary["top_k_after"].values()))
    top_k = f"top-k {summary['top_k_before']} -> {ks[0] if len(ks) == 1 else summary['top_k_after']}"
    p0, p1 = summary["total_params_before"], summary["total_params_after"]
    disk, base = summary["disk_bytes"], summary["base_disk_bytes"]
    console.print(f"wrote {output}: experts per MoE layer {counts}; {top_k}", soft_wrap=True, highlight=False)
    # quantized weights count as weights (count_moe_params), as in the trial's total_params
    counted = " (quantized weights included)" if summary["compressed"] else ""
    console.print(
        f"  total params {p1:,}{counted} vs the base model's {p0:,} ({p1 / p0:.2f}x); {disk / 1e6:.2f} MB on "
        f"disk vs the base model's {base / 1e6:.2f} MB (MB = 10**6 bytes)"
    )
    if summary["compressed"]:
        console.print(
            f"  compressed with the trial's recipe: avg bits {summary['avg_bits']:.2f}, sparsity "
            f"{summary['sparsity']:.3f} over its modules"
        )
    console.print(
        f"  reloaded from the directory: logits differ from the trial's model by at most "
        f"{summary['reload_max_abs_diff']:.3g}"
    )
    _print_trial_figures(doc)
    if measure:
        _print_remeasured(doc, output, model, recipe_path)
    console.print(f"  files: {', '.join(summary['files'])}", soft_wrap=True)
    needs = " (pip install compressed-tensors)" if summary["compressed"] else ""
    if summary["stock"]:
        console.print(
            f"  a stock transformers checkpoint (every MoE layer keeps the same experts, so the config's "
            f"expert count changed); load it with plain transformers{needs}:"
        )
        console.print(f"    {summary['load']}", soft_wrap=True, highlight=False)
        console.print(f"  in Frontier: {summary['frontier_load']}", soft_wrap=True, highlight=False)
        return
    console.print(
        "  NOT a stock checkpoint: its MoE layers keep different numbers of experts (or top-k), which a "
        "transformers config cannot express. It needs Frontier's loader, or stock transformers running the "
        f"frontier_moe.py module the directory ships (trust_remote_code=True){needs}:",
        soft_wrap=True,
    )
    console.print(f"    {summary['frontier_load']}", soft_wrap=True, highlight=False)
    console.print(f"    {summary['load']}", soft_wrap=True, highlight=False)


def _print_joint(
    summary: dict[str, Any], doc: Any, output: Path, model: Path | None, recipe_path: Path, *, measure: bool
) -> None:
    """What ``apply`` wrote for an ``lm-train`` trial of a joint study (trained, then compressed)."""
    facts = [str(summary["architecture"])] if summary.get("architecture") else []
    if "num_parameters" in summary:
        facts.append(f"{summary['num_parameters']:,} parameters")
    facts.append(f"{summary['disk_bytes'] / 1e6:.2f} MB on disk (MB = 10**6 bytes)")
    for key, label in (("avg_bits", "avg bits"), ("sparsity", "sparsity")):
        if key in summary:
            facts.append(f"{label} {_fmt(summary[key])}")
    console.print(f"wrote {output}: " + ", ".join(facts), soft_wrap=True)
    diff = summary.get("max_abs_logit_diff", summary.get("reload_max_abs_diff"))
    if diff is not None:
        console.print(f"  its logits differ from the trial's compressed model by at most {diff:.3g}")
    _print_trial_figures(doc)
    if measure:
        _print_remeasured(doc, output, model, recipe_path)
    compressed = (output / "config.json").is_file() and "quantization_config" in (
        output / "config.json"
    ).read_text()
    console.print(
        "  load it with plain transformers" + (" (pip install compressed-tensors):" if compressed else ":")
    )
    console.print(f"    transformers.AutoModelForCausalLM.from_pretrained({str(output)!r})", soft_wrap=True)
    if compressed:
        console.print(
            f"  in Frontier: frontier.kernels.load_pretrained_compressed({str(output)!r})", soft_wrap=True
        )


def _best_select(objective: Any) -> str:
    """The ``--select`` preference for the best value of ``objective`` (``min(...)`` when minimised)."""
    return f"{'max' if objective.direction == 'maximize' else 'min'}({objective.name})"


@app.command("apply")
def apply_recipe(
    recipe_path: Annotated[Path, typer.Argument(metavar="RECIPE", help="Recipe YAML/JSON (or an export).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Directory to write.")],
    model: Annotated[
        Path | None,
        typer.Option(
            "--model",
            help="Local transformers model directory [default: an export's model, else the packaged MiniLM].",
        ),
    ] = None,
    calibration_texts: Annotated[
        int, typer.Option("--calibration-texts", help="Prose chunks for activation-aware configs.")
    ] = 64,
    measure: Annotated[
        bool,
        typer.Option(
            "--measure/--no-measure",
            help="Score and time the directory written, as the export's study measured its trials.",
        ),
    ] = True,
) -> None:
    """Compress a model with a recipe and write a Hugging Face model directory in the compressed-tensors
    format, which stock transformers loads (production hand-off)."""
    from frontier.services._handoff import apply_document

    try:
        doc = yaml.safe_load(recipe_path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise _fail(f"cannot read the recipe {recipe_path}: {exc}") from None
    try:
        summary = apply_document(doc, output, model=model, calibration_texts=calibration_texts)
    except ValueError as exc:
        raise _fail(f"{recipe_path}: {exc}") from None
    if summary.get("moe"):  # an expert-pruning study's trial
        _print_pruned_moe(summary, doc, output, model, recipe_path, measure=measure)
        return
    if summary.get("joint"):  # an lm-train trial of a joint study, compressed with its recipe
        _print_joint(summary, doc, output, model, recipe_path, measure=measure)
        return
    if "architecture" in summary:  # an lm-train trial's kept weights
        console.print(
            f"wrote {output}: {summary['architecture']} ({summary['num_parameters']:,} parameters), "
            f"{summary['disk_bytes'] / 1e6:.2f} MB on disk (MB = 10**6 bytes); its logits differ from the "
            f"trial's model by at most {summary['max_abs_logit_diff']:.3g}"
        )
        _print_trial_figures(doc)
        if measure:
            _print_remeasured(doc, output, model, recipe_path)
        console.print("  load it with plain transformers:")
        console.print(
            f"    transformers.AutoModelForCausalLM.from_pretrained({str(output)!r})", soft_wrap=True
        )
        return
    if summary["calibration"] == "study":
        n = summary["calibration_batches"]
        err.print(f"calibrated on the study's {n} calibration batch{'es' * (n != 1)}, as its trials did")
    after, base = summary["disk_bytes"], summary["base_disk_bytes"]
    console.print(
        f"wrote {output}: {after / 1e6:.2f} MB on disk vs the base model's {base / 1e6:.2f} MB "
        f"(MB = 10**6 bytes; {base / after:.2f}x smaller), avg bits {summary['avg_bits']:.2f}, "
        f"sparsity {summary['sparsity']:.3f}"
    )
    console.print(
        f"  reloaded from the directory: outputs differ by at most {summary['reload_max_abs_diff']:.3g}"
    )
    _print_trial_figures(doc)
    if measure:
        _print_remeasured(doc, output, model, recipe_path)
    console.print(f"  files: {', '.join(summary['files'])}")
    auto = "AutoModelForCausalLM" if summary.get("causal_lm") else "AutoModel"
    console.print("  load it with plain transformers (pip install compressed-tensors):")
    console.print(f"    transformers.{auto}.from_pretrained({str(output)!r})", soft_wrap=True)
    console.print(
        f"  in Frontier: frontier.kernels.load_pretrained_compressed({str(output)!r})", soft_wrap=True
    )


@app.command()
def validate(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC")],
    set_: Annotated[list[str] | None, typer.Option("--set")] = None,
) -> None:
    """Check a spec without running it."""
    from frontier.search import auto_choice, check_spec
    from frontier.spaces import SpecError

    spec = _load_spec(spec_path, set_)
    try:
        check_spec(spec)
    except SpecError as exc:
        raise _fail(str(exc)) from None
    extra = f" (auto -> {auto_choice(spec).sampler})" if spec.search.sampler == "auto" else ""
    console.print(
        f"[green]ok[/]: {spec.name}: {len(spec.params)} parameters, sampler {spec.search.sampler}{extra}"
    )


@app.command()
def ui(
    study: Annotated[
        str | None,
        typer.Argument(help="Open this study's runs [default: the only study in the tracking store]."),
    ] = None,
    run_dir: RunDir = None,
    storage: Storage = None,
    tracking_uri: TrackingUri = None,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 5000,
    detach: Annotated[bool, typer.Option("--detach", help="Start the server and return.")] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for the server to answer.")
    ] = 180.0,
) -> None:
    """Start the MLflow UI on the study's tracking store; print the URL of its runs once it answers.

    The server runs in its own process group; SIGTERM or Ctrl-C stops the whole group, so nothing is left
    holding the port.
    """
    import signal
    import socket

    if tracking_uri is not None and storage is None and run_dir is None:
        storage_url: str | None = None
        tracking = tracking_uri
    else:
        storage_url, tracking = _read_locations(run_dir, storage, tracking_uri)
    db = _sqlite_path(tracking)
    if db is not None and not db.is_file():
        raise _fail(
            f"no MLflow tracking store at {db}: the study was run with --no-track or elsewhere; pass the "
            "--tracking-uri `frontier run` printed"
        )
    view = _runs_view(study, storage_url, tracking)
    mlflow_bin = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or shutil.which("mlflow")
    if mlflow_bin is None:
        raise _fail("the mlflow command is not installed in this environment (pip install mlflow)")
    with socket.socket() as probe:
        # As uvicorn binds: connections of a server just stopped (TIME_WAIT) do not hold the port.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise _fail(
                f"--port {port}: cannot listen on {host}:{port} ({exc.strerror}); pass another --port"
            ) from None
    # One worker and no job runner: MLflow's defaults (4 workers, a Huey job consumer) each import MLflow
    # afresh, which took the UI 90 s to answer on two busy cores; a single user needs neither.
    cmd = [mlflow_bin, "server", "--backend-store-uri", tracking, "--host", host, "--port", str(port)]
    cmd += ["--workers", "1"]
    if db is not None and (db.parent / "mlartifacts").is_dir():
        cmd += ["--default-artifact-root", (db.parent / "mlartifacts").resolve().as_uri()]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    stopping: list[int] = []

    def stop(signum: int, _frame: Any) -> None:
        stopping.append(signum)
        raise KeyboardInterrupt

    # Installed before the server starts, so a signal at any moment stops it rather than orphaning it.
    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    proc: subprocess.Popen[bytes] | None = None
    # The server's own log goes to a file, quoted when it fails: its start-up chatter would bury the URL.
    log = Path(tempfile.mkstemp(prefix="frontier-mlflow-ui-", suffix=".log")[1])
    try:
        with log.open("wb") as out:
            proc = subprocess.Popen(
                cmd, start_new_session=True, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )
        base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
        _wait_until_answering(proc, base, timeout, log)
        console.print(f"MLflow UI for {tracking}", highlight=False)
        for what, fragment in view:
            console.print(f"  {what}: {base}/{fragment}", highlight=False, soft_wrap=True)
        console.file.flush()
        if detach:
            console.print(
                f"  server pid {proc.pid}; log {log}; stop it with: kill -- -{proc.pid}", highlight=False
            )
            proc = None  # left running on purpose, with its log
            return
        console.print("  (Ctrl-C or SIGTERM stops the server)", highlight=False)
        proc.wait()
        raise _fail(f"the MLflow server exited with status {proc.returncode}", code=1)
    except KeyboardInterrupt:
        return
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if proc is not None:
            _stop_group(proc)
            log.unlink(missing_ok=True)


def _wait_until_answering(proc: subprocess.Popen[bytes], base: str, timeout: float, log: Path) -> None:
    """Poll the server's /health until it answers 200; a server that exits or stays silent is an error."""
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
            last = f": {lines[-1].strip()}" if lines else ""
            raise _fail(
                f"the MLflow server exited with status {proc.returncode} before answering{last}", code=1
            )
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise _fail(
                f"the MLflow server at {base} did not answer within {timeout:g} s (--timeout)", code=1
            )
        time.sleep(0.25)


def _stop_group(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM the server's process group (mlflow and its uvicorn worker), SIGKILL what outlives ``grace``."""
    import signal
    import time

    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            proc.poll()  # reap the leader, or the group never empties
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
    proc.poll()


def _runs_view(study: str | None, storage_url: str | None, tracking: str) -> list[tuple[str, str]]:
    """UI fragments to print: the study's runs (parent and trials) and its Pareto trials; the experiment's
    runs when the study cannot be found (a non-SQLite tracking store, or several studies and no name)."""
    from frontier.search._mlflow import view_key

    found = _study_parents(tracking)
    if study is not None:
        matches = [f for f in found if f[2] == study and (storage_url is None or f[3] == storage_url)]
        if not matches and _sqlite_path(tracking) is not None:
            names = sorted({f[2] for f in found})
            raise _fail(f"study '{study}' has no MLflow run in {tracking}. Studies tracked there: {names}")
    else:
        matches = found if len({f[2] for f in found}) == 1 else []
    if not matches:
        return [("runs", "#/experiments")]
    exp, _, name, _ = matches[-1]
    # the views the tracker stored on the experiment: objectives and the Pareto flag as columns
    return [
        (f"runs of study '{name}'", f"#/experiments/{exp}/runs?viewStateShareKey={view_key(name, 'runs')}"),
        ("its Pareto set", f"#/experiments/{exp}/runs?viewStateShareKey={view_key(name, 'pareto')}"),
    ]


def _study_parents(tracking: str) -> list[tuple[str, str, str, str]]:
    """(experiment id, run id, study, storage) of every study's parent run in a local SQLite store."""
    import sqlite3

    from frontier.search._mlflow import STORAGE_TAG, STUDY_TAG

    path = _sqlite_path(tracking)
    if path is None or not path.is_file():
        return []
    query = (
        "SELECT r.experiment_id, r.run_uuid, a.value, b.value FROM runs r "
        "JOIN tags a ON a.run_uuid = r.run_uuid AND a.key = ? "
        "JOIN tags b ON b.run_uuid = r.run_uuid AND b.key = ? "
        "JOIN tags k ON k.run_uuid = r.run_uuid AND k.key = 'frontier.kind' AND k.value = 'study' "
        "WHERE r.lifecycle_stage = 'active' ORDER BY r.start_time"
    )
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            rows = db.execute(query, (STUDY_TAG, STORAGE_TAG)).fetchall()
    except sqlite3.Error:
        return []
    return [(str(e), str(r), str(s), str(u)) for e, r, s, u in rows]


# The study service and its client ------------------------------------------------------------------------

Server = Annotated[
    str | None,
    typer.Option("--server", help="Service URL [env FRONTIER_SERVER, default http://127.0.0.1:8765]."),
]
Token = Annotated[str | None, typer.Option("--token", help="Bearer token [env FRONTIER_TOKEN].")]
DEFAULT_SERVER = "http://127.0.0.1:8765"


@app.command()
def serve(
    host: Annotated[str | None, typer.Option("--host", help="[env FRONTIER_HOST, default 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option("--port", help="[env FRONTIER_PORT, default 8765]")] = None,
    ray_address: Annotated[
        str | None, typer.Option("--ray-address", help="Existing Ray cluster [env FRONTIER_RAY_ADDRESS].")
    ] = None,
    run_dir: RunDir = None,
) -> None:
    """Run the study service (HTTP API; OpenAPI at /docs) until interrupted."""
    import uvicorn

    from frontier.services._api import create_app

    settings = get_settings()
    update: dict[str, Any] = {}
    if ray_address:
        update["ray_address"] = ray_address
    if run_dir:
        update["run_dir"] = run_dir
    settings = settings.model_copy(update=update)
    if not settings.tokens and not settings.admin_tokens:
        raise _fail(
            'no tokens configured: set FRONTIER_TOKENS=\'{"TOKEN": "OWNER"}\' and/or '
            "FRONTIER_ADMIN_TOKENS='[\"TOKEN\"]' (every request needs a bearer token)"
        )
    h, p = host or settings.host, port or settings.port
    err.print(
        f"frontier service on http://{h}:{p}  registry {settings.database()}  "
        f"storage {settings.storage_url()}"
    )
    uvicorn.run(create_app(settings), host=h, port=p, log_level="warning")


def _client(server: str | None, token: str | None) -> Any:
    import httpx

    url = server or os.environ.get("FRONTIER_SERVER") or DEFAULT_SERVER
    tok = token or os.environ.get("FRONTIER_TOKEN")
    if not tok:
        raise _fail("no token: pass --token or set FRONTIER_TOKEN")
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {tok}"}, timeout=30)


def _call(client: Any, method: str, path: str, **kwargs: Any) -> Any:
    import httpx

    try:
        r = client.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        raise _fail(f"cannot reach {client.base_url}: {exc}") from None
    if r.status_code >= 400:
        try:
            detail = r.json().get("detail", r.text)
        except ValueError:
            detail = r.text
        raise _fail(f"{r.status_code}: {detail}")
    return r


_STUDY_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _study_id(value: str) -> str:
    """A study id as the service issues them (32 hex digits); anything else could change the request's
    path (``../health`` reaches another endpoint), so it is refused before a request is made."""
    if not _STUDY_ID.fullmatch(value):
        raise _fail(
            f"ID: a study id is letters, digits, '-' or '_' (the service issues 32 hex digits; "
            f"`frontier status` lists them), but got {value!r}"
        )
    return value


def _study_line(s: dict[str, Any]) -> str:
    t = s["trials"]
    hv = f"  hv {s['hypervolume']:.4g}" if s.get("hypervolume") is not None else ""
    return (
        f"{s['id']}  {s['owner']}/{s['name']}  {s['state']}  {t['done']}/{t['budget']} trials "
        f"({t['failed']} failed, {t['pruned']} pruned){hv}"
    )


@app.command()
def submit(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC", help="Study spec (YAML or JSON).")],
    server: Server = None,
    token: Token = None,
) -> None:
    """Submit a spec to the service and print the study id."""
    if not spec_path.exists():
        raise _fail(f"spec file not found: {spec_path}")
    body = spec_path.read_bytes()
    ctype = "application/json" if spec_path.suffix.lower() == ".json" else "application/yaml"
    with _client(server, token) as c:
        r = _call(c, "POST", "/studies", content=body, headers={"Content-Type": ctype})
    s = r.json()
    verb = "submitted" if r.status_code == 201 else "already submitted"
    console.print(f"{verb}: {_study_line(s)}", highlight=False)
    sys.stdout.write(s["id"] + "\n")


@app.command()
def status(
    study_id: Annotated[
        str | None, typer.Argument(metavar="ID", help="A study id; all when omitted.")
    ] = None,
    server: Server = None,
    token: Token = None,
) -> None:
    """Show one study, or list the studies you can see."""
    if study_id is not None:
        _study_id(study_id)
    with _client(server, token) as c:
        if study_id:
            s = _call(c, "GET", f"/studies/{study_id}").json()
            console.print(_study_line(s), highlight=False)
            for key in ("created_at", "started_at", "finished_at", "elapsed_s", "mlflow_run_url", "error"):
                if s.get(key) is not None:
                    console.print(f"  {key}: {s[key]}", highlight=False)
            return
        found = _call(c, "GET", "/studies").json()["studies"]
    table = Table(title=f"{len(found)} studies", title_justify="left")
    for col in ("id", "owner", "name", "state", "done/budget", "failed", "pruned", "hypervolume"):
        table.add_column(col)
    for s in found:
        t = s["trials"]
        hv = s.get("hypervolume")
        table.add_row(
            s["id"], s["owner"], s["name"], s["state"], f"{t['done']}/{t['budget']}",
            str(t["failed"]), str(t["pruned"]), "-" if hv is None else f"{hv:.4g}",
        )  # fmt: skip
    console.print(table)


@app.command()
def cancel(
    study_id: Annotated[str, typer.Argument(metavar="ID")],
    server: Server = None,
    token: Token = None,
) -> None:
    """Cancel a queued or running study."""
    _study_action(study_id, "cancel", server, token)


@app.command()
def resume(
    study_id: Annotated[str, typer.Argument(metavar="ID")],
    server: Server = None,
    token: Token = None,
) -> None:
    """Queue a failed or cancelled study of the service again; it resumes from its stored trials."""
    _study_action(study_id, "resume", server, token)


def _study_action(study_id: str, action: str, server: str | None, token: str | None) -> None:
    """``POST /studies/{id}/{action}`` and print the study's new state."""
    _study_id(study_id)
    with _client(server, token) as c:
        s = _call(c, "POST", f"/studies/{study_id}/{action}").json()
    console.print(_study_line(s), highlight=False)


@app.command()
def watch(
    study_id: Annotated[str, typer.Argument(metavar="ID")],
    server: Server = None,
    token: Token = None,
    interval: Annotated[float, typer.Option("--interval", help="Seconds between polls.")] = 1.0,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Give up (exit 3) after this many seconds.")
    ] = None,
) -> None:
    """Follow a study's progress until it succeeds, fails or is cancelled."""
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    _study_id(study_id)
    final = ("succeeded", "failed", "cancelled")
    deadline = None if timeout is None else time.monotonic() + timeout
    with _client(server, token) as c:
        s = _call(c, "GET", f"/studies/{study_id}").json()
        bar = Progress(
            TextColumn("[bold blue]{task.fields[state]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
            console=console,
        )
        with bar:
            task = bar.add_task("trials", total=s["trials"]["budget"], state=s["state"], info="")
            while True:
                t = s["trials"]
                hv = f"  hv {s['hypervolume']:.4g}" if s.get("hypervolume") is not None else ""
                bar.update(
                    task,
                    completed=t["done"],
                    state=s["state"],
                    info=f"failed {t['failed']}  pruned {t['pruned']}{hv}",
                )
                if s["state"] in final:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    raise _fail(f"study {study_id} is still {s['state']} after {timeout:g} s", code=3)
                time.sleep(interval)
                s = _call(c, "GET", f"/studies/{study_id}").json()
    console.print(_study_line(s), highlight=False)
    if s.get("mlflow_run_url"):
        console.print(f"MLflow: {s['mlflow_run_url']}", highlight=False)
    if s["state"] != "succeeded":
        raise _fail(f"study {study_id} {s['state']}: {s.get('error') or ''}", code=1)


latency_app = typer.Typer(
    help="Latency: calibrate a device for predicted and hybrid studies.", no_args_is_help=True
)
app.add_typer(latency_app, name="latency")


@latency_app.command("calibrate")
def latency_calibrate(
    device: Annotated[str, typer.Option("--device", help="Name of the device profile to write.")],
    space: Annotated[
        Path, typer.Option("--space", help="Study spec whose space and evaluator to calibrate.")
    ],
    k: Annotated[int, typer.Option("-k", help="Candidates to measure on this machine.")] = 20,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the candidate draw.")] = 0,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a spec field: key.path=value.")
    ] = None,
    run_dir: RunDir = None,
) -> None:
    """Measure K chosen candidates on this machine and store the device profile later studies use
    (``latency: {mode: predicted | hybrid, device: NAME}``)."""
    from frontier.search._latency import calibrate, profile_path
    from frontier.spaces import SpecError

    rd = run_dir or get_settings().run_dir
    spec = _load_spec(space, set_)
    try:
        console.print(f"[bold]calibrating[/] {device}: {k} candidates of {spec.name} ({spec.evaluator.kind})")

        def on_row(row: dict[str, Any]) -> None:
            params = " ".join(f"{n}={_fmt(v)}" for n, v in row["signature"].items())
            note = " (cache)" if row["cached"] else ""
            console.print(f"  {row['latency_ms']:.4g} ms  {params}{note}", highlight=False)

        profile = calibrate(spec, device=device, k=k, run_dir=rd, seed=seed, on_row=on_row)
    except (SpecError, ValueError) as exc:
        raise _fail(str(exc)) from None
    console.print(
        f"[green]wrote[/] {profile_path(Path(rd).expanduser().resolve(), device)} "
        f"({len(profile['rows'])} rows, {profile['fingerprint']['hardware']})"
    )


def main() -> None:
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
    app()


if __name__ == "__main__":
    main()
