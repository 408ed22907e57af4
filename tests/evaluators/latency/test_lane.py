"""The measurement lane excludes training and other measurements across real processes."""

from __future__ import annotations

import multiprocessing as mp
import pickle
import threading
import time
from pathlib import Path

import pytest

from frontier.evaluators.latency import LaneTimeout, MeasurementLane


def _trainer(directory: str, log: str, stop_at: float, go: object = None) -> None:
    lane = MeasurementLane("t", directory=directory)
    if go is not None:
        go.wait()  # type: ignore[attr-defined]
        stop_at = time.time() + stop_at
    with open(log, "a") as fh:
        while time.time() < stop_at:
            with lane.training():
                t0 = time.time()
                time.sleep(0.015)  # a training step
                fh.write(f"train {t0} {time.time()}\n")
                fh.flush()


def _measurer(directory: str, log: str, n: int) -> None:
    lane = MeasurementLane("t", directory=directory)
    with open(log, "a") as fh:
        for _ in range(n):
            with lane.measuring() as wait:
                t0 = time.time()
                time.sleep(0.03)  # the timed section
                fh.write(f"measure {t0} {time.time()} {wait.waited_s}\n")
                fh.flush()
            time.sleep(0.01)


def _intervals(path: Path, kind: str) -> list[tuple[float, ...]]:
    rows = [line.split() for line in path.read_text().splitlines()]
    return [tuple(float(x) for x in r[1:]) for r in rows if r[0] == kind]


@pytest.mark.integration
def test_measurements_never_overlap_training_or_each_other(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    stop_at = time.time() + 60
    logs = [tmp_path / f"log{i}" for i in range(4)]
    trainers = [ctx.Process(target=_trainer, args=(str(tmp_path), str(logs[i]), stop_at)) for i in range(2)]
    measurers = [ctx.Process(target=_measurer, args=(str(tmp_path), str(logs[2 + i]), 8)) for i in range(2)]
    for p in trainers:
        p.start()
    time.sleep(0.5)  # trainers running: two overlapping streams of shared sections
    for p in measurers:
        p.start()
    for p in measurers:
        p.join(30)
        assert p.exitcode == 0
    for p in trainers:
        p.kill()
        p.join()
    train = [iv for log in logs[:2] for iv in _intervals(log, "train")]
    measure = [iv for log in logs[2:] for iv in _intervals(log, "measure")]
    assert len(measure) == 16 and len(train) > 20
    for m0, m1, _ in measure:
        assert not [t for t in train if t[0] < m1 and m0 < t[1]], "a training step overlapped a measurement"
        others = [m for m in measure if m[0] != m0 and m[0] < m1 and m0 < m[1]]
        assert not others, "two measurements overlapped"
    # Writer preference: a measurement waits for the steps in progress, not for the trainers to stop.
    assert max(w for *_, w in measure) < 2.0


@pytest.mark.integration
def test_training_sections_run_together(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    logs = [tmp_path / "a", tmp_path / "b"]
    go = ctx.Barrier(2)
    procs = [ctx.Process(target=_trainer, args=(str(tmp_path), str(log), 0.5, go)) for log in logs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    a, b = (_intervals(log, "train") for log in logs)
    assert any(x[0] < y[1] and y[0] < x[1] for x in a for y in b), "shared sections should overlap"


def test_a_held_lane_times_out_and_frees_when_released(tmp_path: Path) -> None:
    lane = MeasurementLane("x", directory=tmp_path)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with lane.measuring():
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(10)
    with pytest.raises(LaneTimeout, match="was not free within the timeout"), lane.training(timeout_s=0.05):
        pass
    # Lanes with other names do not exclude each other.
    with MeasurementLane("y", directory=tmp_path).measuring(timeout_s=0.05):
        pass
    release.set()
    holder.join()
    with lane.measuring(timeout_s=1.0) as wait:
        assert wait.waited_s < 1.0


def test_nesting_in_one_thread_is_a_lifecycle_error(tmp_path: Path) -> None:
    lane = MeasurementLane(directory=tmp_path)
    with (
        lane.training(),
        pytest.raises(RuntimeError, match="inside a training\\(\\) section"),
        lane.measuring(),
    ):
        pass
    with (
        lane.measuring(),
        pytest.raises(RuntimeError, match="inside a measuring\\(\\) section"),
        lane.training(),
    ):
        pass
    with lane.training(), lane.training():  # shared sections nest
        pass


def test_bad_name_and_pickling(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'name' parameter of MeasurementLane must be a non-empty file name"):
        MeasurementLane("a/b")
    lane = pickle.loads(pickle.dumps(MeasurementLane("z", directory=tmp_path)))
    assert lane.lock_path == tmp_path / "frontier-lane-z.lock"
