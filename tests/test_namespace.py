"""Frontier installs one top-level module, ``frontier``, and coexists with Hugging Face's ``kernels``.

The packages live in the repository's top-level folders (``search/``, ``spaces/``, ...) and install as
``frontier.search``, ``frontier.spaces``, ...; before, they installed as top-level ``kernels`` and
``spaces`` and overwrote Hugging Face's packages of those names.
"""

from __future__ import annotations

import csv
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HF_KERNELS = "kernels==0.17.2"

pytestmark = pytest.mark.integration


def _run(*args: str | Path, cwd: Path | None = None) -> str:
    out = subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd, timeout=600)
    assert out.returncode == 0, f"{args} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def test_wheel_installs_only_frontier_next_to_hf_kernels(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", wheels, ROOT)
    (wheel,) = wheels.glob("frontier-*.whl")

    env = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env)
    py = env / "bin" / "python"
    try:
        _run(py, "-m", "pip", "install", "-q", HF_KERNELS)
    except AssertionError as exc:  # no registry reachable: say so instead of failing on the network
        pytest.skip(f"could not install {HF_KERNELS}: {str(exc)[-300:]}")
    _run(py, "-m", "pip", "install", "-q", "--no-deps", wheel)
    # Frontier's own dependencies (torch, transformers, ...) come from this environment, after the venv's
    # own site-packages, so the venv's `kernels` is the one `import kernels` finds.
    site = Path(_run(py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip())
    (site / "zz_frontier_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    # the installed files: one top-level module
    (record,) = site.glob("frontier-*.dist-info/RECORD")
    with record.open() as fh:
        tops = {Path(row[0]).parts[0] for row in csv.reader(fh)}
    assert {t for t in tops if not t.endswith(".dist-info") and t != ".."} == {"frontier"}  # ..: bin/

    probe = (
        "import kernels, frontier, frontier.kernels, frontier.spaces; "
        "print(kernels.__file__); print(frontier.kernels.__file__); "
        "print(hasattr(kernels, 'get_kernel')); print(frontier.kernels.WeightOnlyQuantConfig(bits=4).bits); "
        "print(type(frontier.load_spec).__name__)"
    )
    lines = _run(py, "-c", probe, cwd=tmp_path).splitlines()
    assert lines[0].startswith(str(site / "kernels")), lines
    assert lines[1].startswith(str(site / "frontier" / "kernels")), lines
    assert lines[2:] == ["True", "4", "function"]
    # the console script resolves through the namespace too
    assert "Usage" in _run(env / "bin" / "frontier", "--help", cwd=tmp_path)
