"""The README's first-hour command sequence, run as written in a fresh directory with the real ``frontier``.

The block after ``<!-- readme-sequence -->`` in README.md is the contract: ``make demo`` (its recipe read from
the Makefile, with the demo spec cut to 4 trials), then ``studies``, ``trials``, ``pareto`` and ``export``
with no location flags. Each output is checked, and no database may appear outside ``runs/`` nor be added
by the read commands. ``frontier ui`` is exercised by test_ui_signals.py and the browser test.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
N_TRIALS = 4

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def readme_commands() -> list[str]:
    """The commands of the README's sequence block, comments stripped."""
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- readme-sequence", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("  #", 1)[0].strip() for line in block.splitlines() if line.strip()]


def demo_recipe() -> list[str]:
    """What `make demo` runs, from the Makefile, with its variables' defaults filled in."""
    text = (ROOT / "Makefile").read_text()
    recipe = text.split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    (line,) = [ln.strip() for ln in recipe.splitlines() if "frontier run" in ln]
    run_dir = re.search(r"^RUN_DIR \?= (\S+)$", text, re.M)
    assert run_dir is not None
    return shlex.split(line.replace("$(BIN)/", "").replace("$(RUN_DIR)", run_dir[1]))


def _db_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*.db")}


def test_the_readme_sequence_in_a_fresh_directory(tmp_path: Path) -> None:
    commands = readme_commands()
    # the README opens with make demo and make test; make test is this suite, so it is not run here
    assert commands[:3] == ["make demo", "make test", "source .venv/bin/activate"]
    commands.remove("make test")
    assert [c.split()[:2] for c in commands[2:]] == [
        ["frontier", "studies"],
        ["frontier", "trials"],
        ["frontier", "pareto"],
        ["frontier", "export"],
        ["frontier", "ui"],
    ]
    (tmp_path / "configs").mkdir()
    shutil.copy(ROOT / "configs" / "quickstart.yaml", tmp_path / "configs")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRONTIER_")}
    env |= {"PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}", "HF_HUB_OFFLINE": "1"}
    env |= {"RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(ROOT)}

    def sh(argv: list[str], timeout: float = 120) -> str:
        proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
        assert proc.returncode == 0, f"{argv}\n{proc.stdout}\n{proc.stderr}"
        return proc.stdout + proc.stderr

    demo = demo_recipe()
    assert demo[:3] == ["frontier", "run", "configs/quickstart.yaml"]
    out = sh([*demo, "--set", f"search.n_trials={N_TRIALS}"], timeout=600)
    assert f"finished: {N_TRIALS}/{N_TRIALS} trials ({N_TRIALS} complete" in out
    assert [int(n) for n in re.findall(rf"^\[(\d+)/{N_TRIALS}\] trial \d+ complete", out, re.M)] == list(
        range(1, N_TRIALS + 1)
    )
    assert "Pareto set of quickstart" in out
    # What the run suggests next needs no location flags: the read commands look where it wrote.
    assert "frontier ui quickstart\n" in out
    assert "frontier export quickstart --select 'max(accuracy)' -o quickstart.yaml" in out
    stores = _db_files(tmp_path)
    assert {"runs/frontier.db", "runs/mlflow.db"} <= stores and all(s.startswith("runs/") for s in stores)

    out = sh(shlex.split(commands[2]))
    row = re.search(r"│ quickstart +│ finished +│ (\d+)/(\d+) +│ (\d+) +│ 0 +│", out)
    assert row is not None, out
    assert row.groups() == (str(N_TRIALS), str(N_TRIALS), str(N_TRIALS))

    out = sh(shlex.split(commands[3]))
    assert "trials of quickstart" in out
    assert [int(n) for n in re.findall(r"^│ (\d+) +│ complete", out, re.M)] == list(range(N_TRIALS))
    assert re.search(r"MLflow: parent run [0-9a-f]{32} \(experiment \d+\)", out)

    out = sh(shlex.split(commands[4]))
    front = re.search(r"Pareto set of quickstart \((\d+) trials\)", out)
    assert front is not None and 1 <= int(front[1]) <= N_TRIALS

    out = sh(shlex.split(commands[5]))
    doc = yaml.safe_load((tmp_path / "point.yaml").read_text())
    assert f"wrote trial {doc['trial']} of quickstart to point.yaml" in out
    objectives = {
        o["name"] for o in yaml.safe_load((ROOT / "configs" / "quickstart.yaml").read_text())["objectives"]
    }
    assert doc["study"] == "quickstart" and set(doc["objectives"]) == objectives

    assert _db_files(tmp_path) == stores, "a read command created a database"
