"""The ``frontier`` CLI on a real study (real Ray, Optuna storage and MLflow store)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from frontier.services._cli import app

pytestmark = pytest.mark.integration
runner = CliRunner()


def _write(tmp, make_table, make_spec, **over):
    table = make_table(tmp / "t.csv")
    spec_path = tmp / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(make_spec(table, **over)))
    return spec_path


@pytest.fixture(scope="module")
def ran(tmp_path_factory, ray_session, make_table, make_spec):
    tmp = tmp_path_factory.mktemp("cli")
    spec_path = _write(tmp, make_table, make_spec, **{"search.n_trials": 12, "search.sampler": "nsga2"})
    result = runner.invoke(
        app, ["run", str(spec_path), "--run-dir", str(tmp / "run"), "--set", "search.seed=1"]
    )
    assert result.exit_code == 0, result.output
    return tmp, result.output


def test_run_prints_progress_summary_and_pareto(ran):
    tmp, output = ran
    assert "finished: 12/12 trials" in output
    assert "Pareto set of toy" in output
    assert f"frontier ui toy --run-dir {tmp / 'run'}" in output
    assert f"frontier export toy --run-dir {tmp / 'run'} --select 'min(f1)'" in output


def test_run_prints_a_line_per_trial_when_stdout_is_not_a_terminal(ran):
    """CliRunner's stdout is not a TTY, as under CI, nohup or the service: one line per finished trial."""
    _, output = ran
    lines = [ln for ln in output.splitlines() if re.match(r"^\[\d+/12\] trial \d+ ", ln)]
    assert [int(ln.split("]")[0][1:].split("/")[0]) for ln in lines] == list(range(1, 13))
    complete = [ln for ln in lines if " complete " in ln]
    assert complete and all(re.search(r" f1=[-0-9.e]+ f2=[-0-9.e]+ ", ln) for ln in complete)
    assert all(re.search(r"\(failed \d+  pruned \d+  pareto \d+\)$", ln) for ln in lines)
    assert output.index("[12/12]") < output.index("finished: 12/12 trials")


def test_studies_lists_state_and_counts(ran):
    tmp, _ = ran
    out = runner.invoke(app, ["studies", "--run-dir", str(tmp / "run")])
    assert out.exit_code == 0, out.output
    assert "toy" in out.output and "finished" in out.output and "12/12" in out.output


def test_trials_in_three_formats(ran):
    tmp, _ = ran
    as_json = runner.invoke(app, ["trials", "toy", "--run-dir", str(tmp / "run"), "--format", "json"])
    rows = json.loads(as_json.output)
    assert [r["number"] for r in rows] == list(range(12))
    assert {"number", "state", "params", "metrics", "constraints", "pareto", "feasible"} <= set(rows[0])
    as_csv = runner.invoke(app, ["trials", "toy", "--run-dir", str(tmp / "run"), "--format", "csv"])
    parsed = list(csv.DictReader(io.StringIO(as_csv.output)))
    assert len(parsed) == 12 and {"x", "kind", "f1", "constraint:cost<=70", "pareto"} <= set(parsed[0])
    table = runner.invoke(app, ["trials", "toy", "--run-dir", str(tmp / "run")])
    assert table.exit_code == 0 and "trials of toy" in table.output


def test_pareto_json_matches_trials(ran):
    tmp, _ = ran
    rows = json.loads(
        runner.invoke(app, ["trials", "toy", "--run-dir", str(tmp / "run"), "-f", "json"]).output
    )
    front = json.loads(
        runner.invoke(app, ["pareto", "toy", "--run-dir", str(tmp / "run"), "-f", "json"]).output
    )
    assert [r["number"] for r in front] == [r["number"] for r in rows if r["pareto"]]
    assert all(r["feasible"] and r["state"] == "complete" for r in front)


def test_export_selects_and_writes_yaml(ran):
    tmp, _ = ran
    out_file = tmp / "point.yaml"
    res = runner.invoke(
        app,
        ["export", "toy", "--run-dir", str(tmp / "run"), "--select", "f2<=0.5, min(f1)", "-o", str(out_file)],
    )
    assert res.exit_code == 0, res.output
    doc = yaml.safe_load(out_file.read_text())
    assert doc["frontier_export"] == 1 and doc["study"] == "toy"
    assert doc["objectives"]["f2"] <= 0.5
    front = json.loads(
        runner.invoke(app, ["pareto", "toy", "--run-dir", str(tmp / "run"), "-f", "json"]).output
    )
    eligible = [r for r in front if r["values"]["f2"] <= 0.5]
    assert doc["objectives"]["f1"] == min(r["values"]["f1"] for r in eligible)
    assert set(doc["params"]) == {"x", "kind"} and doc["provenance"]["spec"]["name"] == "toy"


@pytest.mark.parametrize(
    ("select", "match"),
    [
        ("f1<=-5", "no Pareto point has f1 <= -5"),
        ("speed<=1", r"unknown metric 'speed'. Available"),
        ("f1 ~ 3", "cannot read 'f1 ~ 3'"),
        ("trial=999", "trial 999 is not on the Pareto set"),
    ],
)
def test_export_errors(ran, select, match):
    tmp, _ = ran
    res = runner.invoke(app, ["export", "toy", "--run-dir", str(tmp / "run"), "--select", select])
    assert res.exit_code == 2
    assert match.split("(")[0].replace("\\", "") in " ".join(res.output.split())


def test_unknown_study_and_bad_spec_errors(ran, tmp_path):
    tmp, _ = ran
    res = runner.invoke(app, ["trials", "nope", "--run-dir", str(tmp / "run")])
    assert res.exit_code == 2 and "Unknown study 'nope'" in res.output and "Available: ['toy']" in res.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nevaluator: {kind: tabular}\nspace: []\nobjectives: [{name: a, direction: up}]\n")
    res = runner.invoke(app, ["run", str(bad), "--run-dir", str(tmp_path)])
    assert res.exit_code == 2
    text = " ".join(res.output.split())
    assert "objectives[0].direction: Input should be 'minimize' or 'maximize' (got 'up')" in text
    assert not (tmp_path / "frontier.db").exists()


def test_validate(tmp_path):
    from pathlib import Path

    res = runner.invoke(
        app, ["validate", str(Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml")]
    )
    assert res.exit_code == 0 and "ok" in res.output and "auto ->" in res.output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ui_serves_the_tracking_store(ran):
    tmp, _ = ran
    port = _free_port()
    res = runner.invoke(app, ["ui", "--run-dir", str(tmp / "run"), "--port", str(port), "--detach"])
    assert res.exit_code == 0, res.output
    assert f"http://127.0.0.1:{port}" in res.output
    pid = int(res.output.split("server pid ")[1].split(";")[0])
    try:
        deadline = time.monotonic() + 90
        body = b""
        while time.monotonic() < deadline:
            try:
                req = urllib.request.Request(
                    f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/experiments/get-by-name?experiment_name=frontier"
                )
                body = urllib.request.urlopen(req, timeout=5).read()
                break
            except OSError:
                time.sleep(1)
        assert b'"name": "frontier"' in body or b'"name":"frontier"' in body
    finally:
        os.killpg(pid, signal.SIGTERM)


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    """A tiny seeded BertModel directory (the applied model a Pareto point would register)."""
    import torch
    import transformers

    path = tmp_path_factory.mktemp("bert")
    config = transformers.BertConfig(
        vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    torch.manual_seed(0)
    transformers.BertModel(config).eval().save_pretrained(path)
    return path


def _pareto_number(tmp) -> int:
    res = runner.invoke(app, ["pareto", "toy", "--run-dir", str(tmp / "run"), "-f", "json"])
    return int(json.loads(res.output)[0]["number"])


def _mlflow_outputs(tracking: str, uri: str, ids: list[list[int]]):
    import mlflow

    mlflow.set_tracking_uri(tracking)
    try:
        return mlflow.pyfunc.load_model(uri).predict(ids)
    finally:
        mlflow.set_tracking_uri(None)


def _transformers_outputs(path, ids):
    import torch
    import transformers

    model = transformers.AutoModel.from_pretrained(path).eval()
    with torch.inference_mode():
        return model(torch.tensor(ids)).last_hidden_state.numpy()


def test_export_register_creates_a_model_version(ran, bert_dir):
    from mlflow.tracking import MlflowClient

    tmp, _ = ran
    run_dir = str(tmp / "run")
    front = json.loads(runner.invoke(app, ["pareto", "toy", "--run-dir", run_dir, "-f", "json"]).output)
    number = front[0]["number"]
    res = runner.invoke(
        app,
        [
            "export", "toy", "--run-dir", run_dir, "--select", f"trial={number}",
            "--register", "toy-point", "--model-dir", str(bert_dir),
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "registered 'toy-point' version 1" in res.output
    assert "mlflow.pyfunc.load_model('models:/toy-point/1')" in " ".join(res.output.split())
    tracking = f"sqlite:///{(tmp / 'run' / 'mlflow.db').resolve()}"
    client = MlflowClient(tracking)
    (version,) = client.search_model_versions("name='toy-point'")
    assert version.tags["frontier.study"] == "toy" and version.tags["frontier.trial"] == str(number)
    assert float(version.tags["objective.f1"]) == pytest.approx(front[0]["values"]["f1"], rel=1e-5)
    assert float(version.tags["metric.cost"]) == pytest.approx(front[0]["metrics"]["cost"], rel=1e-5)
    local = client.download_artifacts(version.run_id, "export/point.yaml", str(tmp))
    assert yaml.safe_load(Path(local).read_text())["trial"] == number
    ids = [[1, 5, 9, 2]]
    np.testing.assert_allclose(
        _mlflow_outputs(tracking, "models:/toy-point/1", ids), _transformers_outputs(bert_dir, ids), atol=1e-5
    )


def test_promote_registers_the_model_dir_under_an_alias(ran, bert_dir):
    from mlflow.tracking import MlflowClient

    tmp, _ = ran
    number = _pareto_number(tmp)
    args = ["promote", "toy", "--run-dir", str(tmp / "run"), "--select", f"trial={number}"]
    res = runner.invoke(app, [*args, "--name", "toy-prod", "--model-dir", str(bert_dir)])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "registered 'toy-prod' version 1" in text and "alias 'production' -> version 1" in text
    assert "mlflow.pyfunc.load_model('models:/toy-prod@production')" in text
    tracking = f"sqlite:///{(tmp / 'run' / 'mlflow.db').resolve()}"
    version = MlflowClient(tracking).get_model_version_by_alias("toy-prod", "production")
    assert version.tags["frontier.selected_by"] == f"trial={number}"
    ids = [[3, 4, 5], [6, 7, 8]]
    np.testing.assert_allclose(
        _mlflow_outputs(tracking, "models:/toy-prod@production", ids),
        _transformers_outputs(bert_dir, ids),
        atol=1e-5,
    )
    # promoting again adds a version and moves the alias to it
    res = runner.invoke(app, [*args, "--name", "toy-prod", "--model-dir", str(bert_dir)])
    assert res.exit_code == 0, res.output
    assert str(MlflowClient(tracking).get_model_version_by_alias("toy-prod", "production").version) == "2"


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ([], "has no recipe (its study searched no compression) and no kept weights (checkpoint)"),
        (["--model-dir", "/nonexistent/model"], "the model directory must be an existing directory"),
        (["--model-dir", "BERT", "--alias", "latest"], "the alias must be letters, digits"),
    ],
)
def test_promote_errors(ran, bert_dir, extra, match):
    tmp, _ = ran
    extra = [str(bert_dir) if e == "BERT" else e for e in extra]
    args = ["promote", "toy", "--run-dir", str(tmp / "run"), "--select", f"trial={_pareto_number(tmp)}"]
    res = runner.invoke(app, [*args, "--name", "toy-bad", *extra])
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert "error:" in text and match in text


def test_export_alias_or_model_dir_without_register_is_an_error(ran, bert_dir):
    tmp, _ = ran
    base = ["export", "toy", "--run-dir", str(tmp / "run"), "--select", f"trial={_pareto_number(tmp)}"]
    res = runner.invoke(app, [*base, "--alias", "production"])
    assert res.exit_code == 2 and "--alias is for registering: pass --register NAME" in res.output
    res = runner.invoke(app, [*base, "--model-dir", str(bert_dir)])
    assert res.exit_code == 2 and "--model-dir is for registering: pass --register NAME" in res.output


# One run-directory rule; read-only commands never create a store ---------------------------------------


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """A fresh working directory with no FRONTIER_* settings, as a new user's shell."""
    from frontier.services._settings import get_settings

    for key in [k for k in os.environ if k.startswith("FRONTIER_")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["studies"], r"no study store in .* \(looked for runs/frontier.db and runs/\*/frontier.db\)"),
        (["trials", "quickstart"], r"run a study first \(frontier run SPEC\) or pass --run-dir DIR"),
        (["pareto", "quickstart", "--run-dir", "runs/demo"], r"--run-dir: no study store in runs/demo"),
        (["export", "quickstart", "--storage", "sqlite:///x/f.db"], r"--storage: no study store at x/f.db"),
    ],
)
def test_read_only_commands_never_create_a_store(elsewhere, args, match):
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert re.search(match, res.output), res.output
    assert res.output.count("\n") == 1 and res.output.startswith("error: ")
    assert _files(elsewhere) == set() and not (elsewhere / "runs").exists()


def test_read_commands_find_the_only_store_under_runs(ran, elsewhere):
    """An older `make demo` wrote runs/demo/: the read commands find it without flags, and touch nothing."""
    import shutil

    tmp, _ = ran
    shutil.copytree(tmp / "run", elsewhere / "runs" / "demo")
    before = _files(elsewhere)
    res = runner.invoke(app, ["trials", "toy"])
    assert res.exit_code == 0, res.output
    assert "reading runs/demo/frontier.db (the only study store under runs/)" in res.output
    assert "trials of toy" in res.output
    assert {f for f in _files(elsewhere) if f.endswith(".db")} == {f for f in before if f.endswith(".db")}
    shutil.copytree(tmp / "run", elsewhere / "runs" / "other")
    res = runner.invoke(app, ["pareto", "toy"])
    assert res.exit_code == 2
    assert "runs/ has several study stores (runs/demo, runs/other); pass --run-dir" in res.output


def test_trials_imports_neither_mlflow_ray_nor_torch(ran):
    """`frontier trials` answers in about a second: MLflow alone took 1.4 s of a 4.4 s answer to import."""
    tmp, _ = ran
    code = (
        "import sys, json\n"
        "from frontier.services._cli import app\n"
        "try:\n"
        f"    app(['trials', 'toy', '--run-dir', {str(tmp / 'run')!r}])\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "heavy = ('mlflow', 'ray', 'torch', 'transformers')\n"
        "print(json.dumps([m for m in heavy if m in sys.modules]), file=sys.stderr)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRONTIER_")}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    assert "trials of toy" in proc.stdout and "MLflow: parent run" in proc.stdout
    assert json.loads(proc.stderr.strip().splitlines()[-1]) == []
    print(f"frontier trials: {elapsed:.2f} s")


# One-line errors ---------------------------------------------------------------------------------------


def _one_line_error(res, code: int = 2) -> str:
    assert res.exit_code == code, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    # A spec's validation problems are listed one per line under their count; anything else is one line.
    problems = re.match(r"error: invalid study spec \((\d+) problems?\)", res.output)
    lines = 1 + (int(problems[1]) if problems else 0)
    assert res.output.startswith("error: ") and res.output.count("\n") == lines, res.output
    return res.output


QUICKSTART = Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml"


@pytest.mark.parametrize(
    ("setting", "match"),
    [
        ("space[0].choices=5", r"space\[0\]\.choices: Input should be a valid tuple \(got 5\)"),
        ("space[0].chices=[a]", r"space\[0\]\.chices: unknown field; allowed fields: \['choices', 'kind'"),
        ("space[9].choices=[a]", r"'9' is not an index of a list of 6 items"),
        ("space[0].choices=[1,", r"--set space\[0\]\.choices: the value '\[1,' is not valid YAML"),
        ("a..b=1", r"KEY.PATH must be field names joined by '.'.*the key 'a..b' has an empty part"),
        ("search.n_trials", r"--set expects KEY.PATH=VALUE .* but got 'search.n_trials'"),
    ],
)
def test_set_errors_name_the_field(setting, match):
    out = _one_line_error(runner.invoke(app, ["validate", str(QUICKSTART), "--set", setting]))
    assert re.search(match, " ".join(out.split())), out


def test_set_reaches_a_list_element():
    res = runner.invoke(app, ["validate", str(QUICKSTART), "--set", "space[0].choices=[mlp]"])
    assert res.exit_code == 0, res.output


def test_spec_errors_are_one_line(tmp_path):
    out = _one_line_error(runner.invoke(app, ["validate", str(tmp_path)]))
    assert f"SPEC: {tmp_path} is a directory; pass a study spec file" in out
    deep = tmp_path / "deep.yaml"
    deep.write_text("[" * 100_000)
    out = _one_line_error(runner.invoke(app, ["validate", str(deep)]))
    assert "nested" in out
    deep.write_text("name: x\nspace: " + "[" * 300 + "]" * 300 + "\n")
    assert "nested" in _one_line_error(runner.invoke(app, ["validate", str(deep)]))


def test_unopenable_storage_is_one_line(tmp_path):
    res = runner.invoke(app, ["run", str(QUICKSTART), "--storage", "sqlite:////nonexistent-dir/x.db"])
    assert res.exit_code == 2
    last = res.output.strip().splitlines()[-1]
    assert last.startswith("error: cannot open the study store sqlite:////nonexistent-dir/x.db: unable to")
    not_a_db = tmp_path / "frontier.db"
    not_a_db.write_text("not a database")
    out = _one_line_error(runner.invoke(app, ["studies", "--run-dir", str(tmp_path)]))
    assert f"cannot open the study store sqlite:///{not_a_db}: file is not a database" in out
    out = _one_line_error(runner.invoke(app, ["studies", "--storage", "foo://x"]))
    assert "storage must be an SQLAlchemy URL starting with sqlite:, postgresql or mysql" in out


@pytest.mark.parametrize("command", ["status", "cancel", "watch"])
def test_study_ids_that_change_the_request_path_are_refused(command):
    res = runner.invoke(app, [command, "../health", "--token", "t0k3n-123"])
    out = _one_line_error(res)
    assert "ID: a study id is letters, digits, '-' or '_'" in out and "got '../health'" in out


def test_export_refuses_two_preferences(ran):
    tmp, _ = ran
    res = runner.invoke(app, ["export", "toy", "--run-dir", str(tmp / "run"), "--select", "max(f1), min(f2)"])
    out = _one_line_error(res)
    assert (
        "--select: at most one preference max(METRIC) or min(METRIC), but got 'max(f1)' and 'min(f2)'" in out
    )


def test_run_exits_1_when_no_trial_completed(tmp_path, make_spec, ray_session):
    """Every trial fails (its table has no value for f1): exit 1, the commonest error in the last line."""
    import pandas as pd

    table = tmp_path / "t.csv"
    pd.DataFrame(
        [{"x": x, "kind": k, "f1": float("nan"), "f2": 1.0, "cost": 1} for x in range(10) for k in "abc"]
    ).to_csv(table, index=False)
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(make_spec(table, **{"search.n_trials": 3})))
    res = runner.invoke(app, ["run", str(spec_path), "--run-dir", str(tmp_path / "run"), "--no-track"])
    assert res.exit_code == 1, res.output
    last = res.output.strip().splitlines()[-1]
    assert re.match(
        r"error: no trial completed \(3 of 3 ran: 3 failed, 0 pruned\); commonest error \(3 of 3", last
    )
    assert "f1" in last


def test_the_export_hint_selects_the_best_end_of_the_first_objective():
    from frontier.services._cli import _best_select
    from frontier.spaces import Objective

    assert _best_select(Objective(name="perplexity", direction="minimize")) == "min(perplexity)"
    assert _best_select(Objective(name="accuracy", direction="maximize")) == "max(accuracy)"
