"""The ``frontier`` command line."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
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
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def _locations(run_dir: Path | None, storage: str | None, tracking_uri: str | None) -> tuple[Path, str, str]:
    from frontier.search import default_storage, default_tracking_uri

    settings = get_settings()
    rd = run_dir or settings.run_dir
    return (
        rd,
        storage or settings.storage or default_storage(rd),
        tracking_uri or settings.tracking_uri or default_tracking_uri(rd),
    )


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
    """Run a study (or resume it: same name and storage) and print its Pareto set."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from frontier.search import run_study
    from frontier.spaces import SpecError, load_spec, parse_overrides

    try:
        spec = load_spec(spec_path, parse_overrides(set_ or []))
    except SpecError as exc:
        raise _fail(str(exc)) from None
    rd, storage_url, tracking = _locations(
        run_dir, storage or spec.storage, tracking_uri or spec.tracking.uri
    )
    spec = spec.model_copy(
        update={"storage": storage_url, "tracking": spec.tracking.model_copy(update={"uri": tracking})}
    )
    console.print(f"[bold]study[/] {spec.name}  [dim]storage[/] {storage_url}")
    bar = Progress(
        TextColumn("[bold blue]trials"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        transient=False,
    )
    task = bar.add_task("trials", total=spec.search.n_trials, info="starting Ray workers...")

    def on_progress(p: Any) -> None:
        best = "  ".join(f"{k}={_fmt(v)}" for k, v in p.best.items())
        info = f"failed {p.failed}  pruned {p.pruned}  pareto {p.pareto}  best: {best}"
        bar.update(task, completed=p.done, info=info)

    try:
        with bar:
            outcome = run_study(
                spec,
                run_dir=rd,
                address=address or get_settings().ray_address,
                on_progress=on_progress,
                track=not no_track,
            )
    except SpecError as exc:
        raise _fail(str(exc)) from None
    except ValueError as exc:
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
    _pareto_table(outcome.pareto, [o.name for o in spec.objectives], title=f"Pareto set of {spec.name}")
    if outcome.tracking_uri:
        console.print(
            f"MLflow: parent run {outcome.parent_run_id}. Open the UI with:\n"
            f"  frontier ui --tracking-uri {outcome.tracking_uri}"
        )
    console.print(
        f"Export a point with:\n  frontier export {spec.name} --storage {storage_url} --select "
        f"'max({spec.objectives[0].name})' -o {spec.name}.yaml"
    )


def _pareto_table(rows: list[Any], objectives: list[str], title: str) -> None:
    table = Table(title=title, title_justify="left")
    table.add_column("trial", justify="right")
    for name in objectives:
        table.add_column(name, justify="right")
    table.add_column("params")
    for r in sorted(rows, key=lambda r: r.number):
        table.add_row(
            str(r.number),
            *(_fmt(r.values.get(n)) for n in objectives),
            ", ".join(f"{k}={_fmt(v)}" for k, v in r.params.items()),
        )
    console.print(table)


@app.command()
def studies(run_dir: RunDir = None, storage: Storage = None, tracking_uri: TrackingUri = None) -> None:
    """List the studies in a storage with their state and trial counts."""
    from frontier.search import list_studies

    _, storage_url, tracking = _locations(run_dir, storage, tracking_uri)
    try:
        found = list_studies(storage_url)
    except ValueError as exc:
        raise _fail(str(exc)) from None
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

    try:
        st = load_study(study, storage_url)
        spec = stored_spec(st)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    return spec, trial_rows(st, spec)


@app.command()
def trials(
    study: Annotated[str, typer.Argument(help="Study name.")],
    format: Annotated[TrialFormat, typer.Option("--format", "-f")] = TrialFormat.table,
    run_dir: RunDir = None,
    storage: Storage = None,
    tracking_uri: TrackingUri = None,
) -> None:
    """Every trial in order: number, state, params, metrics, constraints, Pareto flag."""
    _, storage_url, tracking = _locations(run_dir, storage, tracking_uri)
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
    _, storage_url, tracking = _locations(run_dir, storage, tracking_uri)
    spec, rows = _rows(study, storage_url)
    front = [r for r in rows if r.pareto]
    if format is ParetoFormat.json:
        sys.stdout.write(json.dumps([r.to_dict() for r in front], indent=2, default=str) + "\n")
        return
    _pareto_table(
        front, [o.name for o in spec.objectives], title=f"Pareto set of {study} ({len(front)} trials)"
    )
    _mlflow_hint(study, storage_url, tracking)


def _mlflow_hint(study: str, storage_url: str, tracking: str) -> None:
    """Name the study's MLflow parent run, when the tracking store has it."""
    from frontier.search import find_parent_run

    run_id = find_parent_run(study, storage_url, tracking)
    if run_id:
        console.print(
            f"[dim]MLflow parent run {run_id} in {tracking} (frontier ui --tracking-uri {tracking})[/]"
        )


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
    _, storage_url, tracking = _locations(run_dir, storage, tracking_uri)
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
    if doc.get("recipe") is None and not doc.get("checkpoint"):
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

    _, storage_url, tracking = _locations(run_dir, storage, tracking_uri)
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


_TRIAL_FIGURES = ("perplexity", "fidelity", "latency_ms", "total_params", "size_mb")


def _print_trial_figures(doc: Any) -> None:
    """The figures the study measured for an exported trial, to read beside what ``apply`` wrote."""
    measured = (doc.get("metrics") or {}) if isinstance(doc, dict) else {}
    figures = {k: measured[k] for k in _TRIAL_FIGURES if k in measured}
    if figures:
        trial = f"trial {doc.get('trial')}" if doc.get("trial") is not None else "the trial"
        console.print(f"  {trial} measured: " + ", ".join(f"{k} {_fmt(v)}" for k, v in figures.items()))


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
    if "architecture" in summary:  # an lm-train trial's kept weights
        console.print(
            f"wrote {output}: {summary['architecture']} ({summary['num_parameters']:,} parameters), "
            f"{summary['disk_bytes'] / 1e6:.2f} MB on disk (MB = 10**6 bytes); its logits differ from the "
            f"trial's model by at most {summary['max_abs_logit_diff']:.3g}"
        )
        _print_trial_figures(doc)
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
    from frontier.spaces import SpecError, load_spec, parse_overrides

    try:
        spec = load_spec(spec_path, parse_overrides(set_ or []))
        check_spec(spec)
    except SpecError as exc:
        raise _fail(str(exc)) from None
    extra = f" (auto -> {auto_choice(spec).sampler})" if spec.search.sampler == "auto" else ""
    console.print(
        f"[green]ok[/]: {spec.name}: {len(spec.params)} parameters, sampler {spec.search.sampler}{extra}"
    )


@app.command()
def ui(
    run_dir: RunDir = None,
    tracking_uri: TrackingUri = None,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 5000,
    detach: Annotated[bool, typer.Option("--detach", help="Start the server and return.")] = False,
) -> None:
    """Start the MLflow UI on the study's tracking store and print its URL."""
    rd, _, tracking = _locations(run_dir, None, tracking_uri)
    mlflow_bin = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or shutil.which("mlflow")
    if mlflow_bin is None:
        raise _fail("the mlflow command is not installed in this environment")
    cmd = [mlflow_bin, "ui", "--backend-store-uri", tracking, "--host", host, "--port", str(port)]
    artifacts = Path(rd).resolve() / "mlartifacts"
    if tracking.startswith("sqlite") and artifacts.exists():
        cmd += ["--default-artifact-root", artifacts.as_uri()]
    proc = subprocess.Popen(cmd, start_new_session=detach)
    url = f"http://{host}:{port}"
    console.print(f"MLflow UI for {tracking}\n  {url}  (experiment 'frontier': one parent run per study)")
    if detach:
        console.print(f"  server pid {proc.pid}; stop it with: kill {proc.pid}")
        return
    try:
        proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait(10)


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
    with _client(server, token) as c:
        s = _call(c, "POST", f"/studies/{study_id}/cancel").json()
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
    from frontier.spaces import SpecError, load_spec, parse_overrides

    rd = run_dir or get_settings().run_dir
    try:
        spec = load_spec(space, parse_overrides(set_ or []))
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
