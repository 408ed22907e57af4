from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_kernels_is_free_of_orchestration_and_jit_libraries() -> None:
    code = (
        "import sys, frontier.kernels; "
        "heavy = ('ray', 'mlflow', 'optuna', 'numba', 'triton', 'transformers'); "
        "bad = [m for m in heavy if m in sys.modules]; "
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_api_is_exactly_all() -> None:
    from frontier import kernels

    public = {n for n in dir(kernels) if not n.startswith("_")}
    assert set(kernels.__all__) <= public
    assert all(getattr(kernels, n) is not None for n in kernels.__all__)
    assert len(set(kernels.__all__)) == len(kernels.__all__)  # its order: ruff's RUF022 (constants first)
