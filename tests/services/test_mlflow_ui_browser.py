"""The MLflow UI of a real study, opened in headless Chromium (Debian's package) and driven by Selenium.

Skips without ``/usr/bin/chromium`` and ``/usr/bin/chromedriver`` (``.ci/run`` installs both) or without
the ``selenium`` package. Screenshots go to the test's ``tmp_path`` and are copied to
``$FRONTIER_SCREENSHOT_DIR`` (default ``<tmp>/frontier-mlflow-ui``); run with ``-s`` to see the paths.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import struct
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from frontier.services._cli import app

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# The machine's network is closed: without the background-networking flags Chromium stalls on
# component updates and sync; a fresh profile keeps runs independent.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1600,1000",
)
STUDY = "ui-toy"
N_TRIALS = 4
# Two CPU cores shared with the rest of the suite: the UI server alone can take a minute to answer.
SERVER_TIMEOUT_S = 120
PAGE_TIMEOUT_S = 60

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(
        not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
        reason=f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER})",
    ),
    # Checked before the study and the server start, which cost a minute.
    pytest.mark.skipif(importlib.util.find_spec("selenium") is None, reason="needs selenium (the dev extra)"),
]
runner = CliRunner()


@dataclass(frozen=True)
class Study:
    run_dir: Path
    experiment_id: str
    parent_id: str
    trials: dict[str, str]  # run id -> run name
    pareto: dict[str, str]  # run id -> run name, the Pareto trials


@pytest.fixture(scope="module")
def study(tmp_path_factory, ray_session, make_table, make_spec) -> Study:
    from mlflow.tracking import MlflowClient

    tmp = tmp_path_factory.mktemp("ui-browser")
    spec = make_spec(make_table(tmp / "t.csv"), name=STUDY, **{"search.n_trials": N_TRIALS})
    (tmp / "spec.yaml").write_text(yaml.safe_dump(spec))
    run_dir = tmp / "run"
    result = runner.invoke(app, ["run", str(tmp / "spec.yaml"), "--run-dir", str(run_dir)])
    assert result.exit_code == 0, result.output

    client = MlflowClient(f"sqlite:///{(run_dir / 'mlflow.db').resolve()}")
    experiment = client.get_experiment_by_name("frontier")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.info.run_name == STUDY]
    trials = {
        r.info.run_id: r.info.run_name
        for r in runs
        if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    }
    assert len(trials) == N_TRIALS
    pareto = {r.info.run_id: r.info.run_name for r in runs if r.data.tags.get("pareto") == "true"}
    assert pareto
    return Study(run_dir, experiment.experiment_id, parent.info.run_id, trials, pareto)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop_group(pid: int) -> None:
    """SIGTERM the server's process group (mlflow and its uvicorn workers), SIGKILL what outlives 20 s."""
    for sig, grace in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # reap the leader: `ui` started it from this process
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


@pytest.fixture(scope="module")
def ui_printed(study: Study) -> Iterator[dict[str, str]]:
    """`frontier ui STUDY --detach`: the views it printed (what -> URL), once the server answers."""
    port = _free_port()
    res = runner.invoke(app, ["ui", STUDY, "--run-dir", str(study.run_dir), "--port", str(port), "--detach"])
    assert res.exit_code == 0, res.output
    pid = int(res.output.split("server pid ")[1].split(";")[0])
    try:
        views = dict(line.strip().split(": ", 1) for line in res.output.splitlines() if ": http://" in line)
        yield views
    finally:
        _stop_group(pid)


@pytest.fixture(scope="module")
def ui_url(ui_printed: dict[str, str]) -> str:
    """The server's base URL; `frontier ui` printed it only once /health answered, so it answers now."""
    url = ui_printed[f"runs of study '{STUDY}'"].split("/#/")[0]
    with urllib.request.urlopen(f"{url}/health", timeout=30) as r:
        assert r.status == 200
    return url


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver: Any, condition: Any, what: str) -> Any:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # MLflow's grid re-renders rows and headers while runs load: an element found a moment ago may be gone
    wait = WebDriverWait(driver, PAGE_TIMEOUT_S, ignored_exceptions=(StaleElementReferenceException,))
    return wait.until(condition, message=f"timed out waiting for {what}")


def _screenshot(driver: Any, tmp_path: Path, name: str) -> Path:
    shot = tmp_path / name
    assert driver.save_screenshot(str(shot)), f"could not save {shot}"
    keep = Path(os.environ.get("FRONTIER_SCREENSHOT_DIR", Path(tempfile.gettempdir()) / "frontier-mlflow-ui"))
    keep.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, keep / name)
    print(f"screenshot: {keep / name}")
    return shot


def test_runs_table_shows_the_study_run_and_its_nested_trials(
    study: Study, ui_url: str, browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    browser.get(f"{ui_url}/#/experiments/{study.experiment_id}/runs")
    parent_row = f'[role="row"][row-id="{study.parent_id}"]'
    _wait(browser, ec.text_to_be_present_in_element((By.CSS_SELECTOR, parent_row), STUDY), "the parent run")
    # The table collapses nested runs under their parent; the expander is the button in the name cell.
    expander = (By.CSS_SELECTOR, f'{parent_row} button[data-component-id*="runnamecellrenderer"]')
    _wait(browser, ec.element_to_be_clickable(expander), "the parent row's expander").click()

    def trial_rows_shown(driver: Any) -> bool:
        shown = {e.get_attribute("row-id") for e in driver.find_elements(By.CSS_SELECTOR, '[role="row"]')}
        return set(study.trials) <= shown

    _wait(browser, trial_rows_shown, f"{N_TRIALS} nested trial rows")

    def row_text(run_id: str) -> str:
        # The grid renders a row in several column containers that share its row-id.
        return " ".join(
            e.text for e in browser.find_elements(By.CSS_SELECTOR, f'[role="row"][row-id="{run_id}"]')
        )

    assert STUDY in row_text(study.parent_id)
    for run_id, name in study.trials.items():
        assert name in row_text(run_id), (run_id, name, row_text(run_id))
    # The names say what the runs table cannot show without added columns: Pareto flag and objectives.
    assert sorted(n.split(" ")[0] for n in study.trials.values()) == [f"trial-{i}" for i in range(N_TRIALS)]
    for run_id, name in study.trials.items():
        assert ("★ pareto" in name) == (run_id in study.pareto), name
        assert re.search(r" · f1=[-0-9.e]+ f2=[-0-9.e]+$", name), name
    assert _screenshot(browser, tmp_path, "mlflow-ui-runs.png").stat().st_size > 0


def _cell_text(driver: Any, css: str) -> str:
    """The text of the first element matching ``css``, or "" while the grid re-renders it."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        cells = driver.find_elements(By.CSS_SELECTOR, css)
        return cells[0].text if cells else ""
    except StaleElementReferenceException:  # the grid replaced the row between the lookup and the read
        return ""


def test_the_printed_pareto_view_shows_the_pareto_trials_and_objectives(
    study: Study, ui_printed: dict[str, str], ui_url: str, browser: Any, tmp_path: Path
) -> None:
    """From the URL `frontier ui` prints, the Pareto trials and their objective values are in view without
    adding a column or a click: the URL names the view the tracker stored on the experiment (MLflow's shared
    view state), which filters to the Pareto trials, expands the study's row and shows the objectives."""
    from mlflow.tracking import MlflowClient
    from selenium.webdriver.common.by import By

    url = ui_printed["its Pareto set"]
    assert url.startswith(
        f"{ui_url}/#/experiments/{study.experiment_id}/runs?viewStateShareKey=frontier-pareto-"
    )
    browser.get(url)

    def objective_columns_shown(driver: Any) -> bool:
        headers = {e.text.strip() for e in driver.find_elements(By.CSS_SELECTOR, '[role="columnheader"]')}
        return {"f1", "f2", "pareto"} <= headers

    _wait(browser, objective_columns_shown, "the objective columns f1, f2 and pareto")

    def pareto_rows_shown(driver: Any) -> bool:
        shown = {e.get_attribute("row-id") for e in driver.find_elements(By.CSS_SELECTOR, '[role="row"]')}
        return set(study.pareto) <= shown

    _wait(browser, pareto_rows_shown, f"the {len(study.pareto)} Pareto trial rows")
    shown = {e.get_attribute("row-id") for e in browser.find_elements(By.CSS_SELECTOR, '[role="row"]')}
    assert not (shown & (set(study.trials) - set(study.pareto))), "a trial off the Pareto set is listed"
    client = MlflowClient(f"sqlite:///{(study.run_dir / 'mlflow.db').resolve()}")
    for run_id, name in study.pareto.items():
        text = " ".join(
            e.text for e in browser.find_elements(By.CSS_SELECTOR, f'[role="row"][row-id="{run_id}"]')
        )
        assert name in text and "★ pareto" in text, (name, text)
        metrics = client.get_run(run_id).data.metrics
        for objective in ("f1", "f2"):
            assert f"{objective}={metrics[objective]:.4g}" in text, (objective, metrics, text)
            cell = f'[role="row"][row-id="{run_id}"] [col-id="metrics.`{objective}`"]'
            _wait(browser, lambda d, c=cell: _cell_text(d, c), f"the {objective} cell of {name}")
            shown = float(_cell_text(browser, cell).rstrip("…"))
            assert shown == pytest.approx(metrics[objective], rel=1e-3)
    assert _screenshot(browser, tmp_path, "mlflow-ui-pareto-runs.png").stat().st_size > 0


def test_study_run_description_links_the_pareto_plot_and_table(
    study: Study, ui_url: str, browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    browser.get(f"{ui_url}/#/experiments/{study.experiment_id}/runs/{study.parent_id}")
    link = _wait(
        browser, ec.presence_of_element_located((By.LINK_TEXT, "Pareto plot")), "the Pareto plot link"
    )
    assert f"get-artifact?run_uuid={study.parent_id}&path=pareto.png" in link.get_attribute("href")
    table = browser.find_element(By.LINK_TEXT, "Pareto table (JSON)").get_attribute("href")
    with urllib.request.urlopen(table, timeout=30) as r:
        rows = json.loads(r.read())
    assert sorted(str(row["number"]) for row in rows) == sorted(
        n.split(" ")[0].removeprefix("trial-") for n in study.pareto.values()
    )
    assert _screenshot(browser, tmp_path, "mlflow-ui-study-run.png").stat().st_size > 0


def test_parent_run_artifacts_show_the_pareto_plot(
    study: Study, ui_url: str, browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    browser.get(f"{ui_url}/#/experiments/{study.experiment_id}/runs/{study.parent_id}/artifacts")
    node = '[data-testid="artifact-tree-node"][artifact-name="{}"]'
    plot = _wait(
        browser, ec.element_to_be_clickable((By.CSS_SELECTOR, node.format("pareto.png"))), "pareto.png"
    )
    for name in ("pareto.json", "spec.json"):
        assert browser.find_elements(By.CSS_SELECTOR, node.format(name)), f"{name} is not listed"
    plot.click()

    preview = (By.CSS_SELECTOR, 'img[alt="pareto.png"]')
    image = _wait(browser, ec.visibility_of_element_located(preview), "the pareto.png preview")
    _wait(
        browser,
        lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0;", image),
        "the pareto.png preview to load",
    )
    # The browser decoded the very file the study logged: same pixel size as the artifact on disk.
    png = study.run_dir / "mlartifacts" / study.parent_id / "artifacts" / "pareto.png"
    width, height = struct.unpack(">II", png.read_bytes()[16:24])
    shown = browser.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight];", image)
    assert shown == [width, height]
    assert _screenshot(browser, tmp_path, "mlflow-ui-pareto.png").stat().st_size > 0
