"""Property-based fuzzing of the whole API from its OpenAPI document: no input may cause a 500.

Uses schemathesis (tested with 4.32.5). The queue is paused (max_concurrent_studies=0) so that a generated
spec that happens to be valid is accepted but never run.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.services.conftest import ALICE

pytestmark = pytest.mark.integration


def test_no_input_causes_a_server_error(service_factory) -> None:
    pytest.importorskip("schemathesis")
    st = shutil.which("st", path=str(Path(sys.executable).parent)) or shutil.which("st")
    if st is None:
        pytest.skip("the schemathesis command 'st' is not installed")
    svc = service_factory(max_concurrent=0).start()
    cmd = [
        st, "run", f"{svc.url}/openapi.json", "-H", f"Authorization: Bearer {ALICE}",
        "--checks", "not_a_server_error", "--max-examples", "20", "--generation-deterministic",
        "--workers", "1",
    ]  # fmt: skip
    result = subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, cwd=svc.home
    )  # its cache stays there
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "passed" in result.stdout
