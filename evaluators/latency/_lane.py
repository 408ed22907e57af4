"""The exclusive measurement lane: a node-local reader/writer lock between training and latency measurement.

Trials of a study run in separate Ray worker processes on the same node. A latency measurement taken while
another trial trains measures the contention, not the model. The lane is a reader/writer lock on lock files
in the node's temporary directory (``fcntl.flock``, so it works across unrelated processes, threads and
Ray workers on one node, and a process that dies releases its locks):

* ``lane.training()`` — held *shared* around training work (a step, an epoch, a validation pass). Any
  number of trials train at once.
* ``lane.measuring()`` — held *exclusive* around a timed section. It waits until every training section
  in progress has ended and keeps new ones (and other measurements) from starting until it is done.

A measurement waiting for the lane blocks new training sections from starting (writer preference through a
second "gate" lock), so a measurement waits at most for the training sections already running, never for a
stream of new ones.

What is guaranteed: no ``measuring()`` section overlaps a ``training()`` or ``measuring()`` section of any
process on the node using a lane of the same name and directory. Work outside those sections (data
loading, other users' processes) is not excluded.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

_POLL_S = 0.002


@dataclass
class LaneWait:
    """How long a section waited for the lane (filled in when the section is entered)."""

    waited_s: float = 0.0


class LaneTimeout(TimeoutError):
    """The lane could not be acquired within the timeout."""


_held = threading.local()


class MeasurementLane:
    """A node-local reader/writer lock: training shared, latency measurement exclusive.

    Args:
        name: lanes with different names do not exclude each other (e.g. one lane per GPU).
        directory: where the lock files live; default ``$FRONTIER_LANE_DIR`` or the system temp directory,
            which is node-local, so every Ray worker on the node shares the lane.

    Example:
        >>> lane = MeasurementLane()
        >>> with lane.training():
        ...     pass  # one training step
        >>> with lane.measuring():
        ...     pass  # the timed section
    """

    def __init__(self, name: str = "default", *, directory: str | Path | None = None) -> None:
        if not name or "/" in name:
            raise ValueError(
                f"The 'name' parameter of MeasurementLane must be a non-empty file name. Got {name!r}."
            )
        self.name = name
        self.directory = Path(directory or os.environ.get("FRONTIER_LANE_DIR") or tempfile.gettempdir())

    def __repr__(self) -> str:
        return f"MeasurementLane(name={self.name!r}, directory={str(self.directory)!r})"

    @property
    def lock_path(self) -> Path:
        return self.directory / f"frontier-lane-{self.name}.lock"

    @property
    def gate_path(self) -> Path:
        return self.directory / f"frontier-lane-{self.name}.gate"

    def _open(self, path: Path) -> IO[bytes]:
        self.directory.mkdir(parents=True, exist_ok=True)
        fh = open(path, "a+b")  # noqa: SIM115 - closed by the caller
        with contextlib.suppress(OSError):
            os.chmod(path, 0o666)  # shared by every user's workers on the node
        return fh

    @contextmanager
    def training(self, *, timeout_s: float | None = None) -> Iterator[LaneWait]:
        """Hold the lane shared around training work; waits while a measurement runs or waits.

        Raises:
            RuntimeError: called inside this thread's own ``measuring()`` section.
            LaneTimeout: the lane was not free within ``timeout_s``.
        """
        if _depth(self, "measuring"):
            raise RuntimeError(
                "MeasurementLane.training() was called inside a measuring() section of the same thread; "
                "it would wait for itself. Train before or after the timed section."
            )
        with self._section(exclusive=False, timeout_s=timeout_s) as wait:
            yield wait

    @contextmanager
    def measuring(self, *, timeout_s: float | None = None) -> Iterator[LaneWait]:
        """Hold the lane exclusive around a timed section.

        Raises:
            RuntimeError: called inside this thread's own ``training()`` section (it would wait for itself).
            LaneTimeout: the lane was not free within ``timeout_s``.
        """
        if _depth(self, "training"):
            raise RuntimeError(
                "MeasurementLane.measuring() was called inside a training() section of the same thread; "
                "it would wait for itself. End the training section before measuring."
            )
        with self._section(exclusive=True, timeout_s=timeout_s) as wait:
            yield wait

    @contextmanager
    def _section(self, *, exclusive: bool, timeout_s: float | None) -> Iterator[LaneWait]:
        start = time.monotonic()
        deadline = None if timeout_s is None else start + timeout_s
        wait = LaneWait()
        gate = self._open(self.gate_path)
        lock = self._open(self.lock_path)
        try:
            # The gate is taken by everyone on the way in; a measurement keeps it while it waits for the
            # lock, so training sections that arrive after it queue behind it (writer preference).
            _acquire(gate, fcntl.LOCK_EX, deadline, self)
            try:
                _acquire(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH, deadline, self)
            finally:
                fcntl.flock(gate, fcntl.LOCK_UN)
            wait.waited_s = time.monotonic() - start
            key = (str(self.lock_path), "measuring" if exclusive else "training")
            held = _held_sections()
            held[key] = held.get(key, 0) + 1
            try:
                yield wait
            finally:
                held[key] -= 1
                fcntl.flock(lock, fcntl.LOCK_UN)
        finally:
            gate.close()
            lock.close()


def _held_sections() -> dict[tuple[str, str], int]:
    if not hasattr(_held, "sections"):
        _held.sections = {}
    sections: dict[tuple[str, str], int] = _held.sections
    return sections


def _depth(lane: MeasurementLane, kind: str) -> int:
    return _held_sections().get((str(lane.lock_path), kind), 0)


def _acquire(fh: IO[bytes], mode: int, deadline: float | None, lane: MeasurementLane) -> None:
    if deadline is None:
        fcntl.flock(fh, mode)
        return
    while True:
        try:
            fcntl.flock(fh, mode | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise LaneTimeout(f"{lane!r} was not free within the timeout") from None
            time.sleep(_POLL_S)
