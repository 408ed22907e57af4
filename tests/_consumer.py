"""A "consumer" Python: a venv with only stock torch, transformers and compressed-tensors (no Frontier, no
numba), for tests that check a directory Frontier wrote loads with nothing of Frontier's installed.

Public API (keep it small; tests written by others import it):

* :data:`PINS` - the exact requirements the venv holds.
* :func:`consumer_python` - build the venv once (cached under ``<repo>/.cache/consumer-venv-<hash of the
  pins>``, guarded by a lock file so that two processes never build it at once) and return its python.
  Skips the calling test, with pip's own message, only if pip cannot install the pins.
* :func:`run_consumer` - run a Python snippet in that venv, isolated (``-I``) and from a working directory
  outside the repository, so nothing of the checkout can leak onto its ``sys.path``.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import venv
from collections.abc import Sequence
from pathlib import Path

import pytest

PINS: tuple[str, ...] = ("torch==2.13.0", "transformers==5.25.0", "compressed-tensors==0.20.0")
REPO = Path(__file__).resolve().parents[1]
_DONE = ".frontier-consumer-complete"  # written last: a venv without it is a half-built one


def consumer_python(pins: Sequence[str] = PINS, *, timeout: float = 1800.0) -> Path:
    """The python of a cached venv holding exactly ``pins`` (and their dependencies).

    The first call builds it (a few minutes: the pins resolve from the machine's local wheel store and
    PyPI); later calls, in this or any other process, return the cached one at once.
    """
    key = hashlib.sha256("\n".join(sorted(pins)).encode()).hexdigest()[:12]
    cache = REPO / ".cache"
    cache.mkdir(exist_ok=True)
    home = cache / f"consumer-venv-{key}"
    python = home / "bin" / "python"
    if (home / _DONE).is_file():
        return python
    with open(cache / f"consumer-venv-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
        if (home / _DONE).is_file():  # another process built it while this one waited
            return python
        shutil.rmtree(home, ignore_errors=True)
        # from the base interpreter, not this venv's, so nothing installed here is visible there
        builder = venv.EnvBuilder(with_pip=True, clear=True, symlinks=True)
        builder.create(home)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        proc = subprocess.run(
            [str(python), "-m", "pip", "install", "--no-input", *pins],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=tempfile.gettempdir(),
        )
        if proc.returncode != 0:
            shutil.rmtree(home, ignore_errors=True)
            pytest.skip(f"pip could not install the consumer venv's pins {list(pins)}: {proc.stderr[-2000:]}")
        (home / _DONE).write_text("\n".join(pins) + "\n")
    return python


def run_consumer(
    code: str, *args: str, timeout: float = 600.0, pins: Sequence[str] = PINS
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` (``python -I -c code *args``) in the consumer venv from a temporary directory.

    Returns the completed process (stdout/stderr as text); the caller checks ``returncode``.
    """
    python = consumer_python(pins)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["HF_HUB_OFFLINE"] = "1"  # the directory under test is local; never reach for the hub
    with tempfile.TemporaryDirectory() as cwd:
        return subprocess.run(
            [str(python), "-I", "-c", code, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=cwd,
        )


if __name__ == "__main__":  # `python -m tests._consumer`: build the venv ahead of a test run
    sys.stdout.write(f"{consumer_python()}\n")
