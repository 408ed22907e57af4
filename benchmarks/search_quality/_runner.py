"""Running one search on a problem: through the real engine (``search.run_study``) or in process."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from benchmarks.search_quality._problems import SEED_COLUMN, Problem
from frontier.search import make_sampler
from frontier.search._optuna import tell_result
from frontier.search._workers import trial_seed
from frontier.spaces import StudySpec, spec_from_dict, suggest

Key = tuple[Any, ...]


@dataclass
class Trace:
    """The candidates one search evaluated, in trial order (``None`` for a failed trial)."""

    keys: list[Key | None]
    seconds: float
    ask_seconds: list[float] = field(default_factory=list)
    finished: bool = True  # False: the run hit its time limit before its budget


def table_path(problem: Problem, workdir: Path) -> Path:
    """Write the problem's table once per working directory (built deterministically) and return it."""
    path = workdir / "tables" / f"{problem.name}.parquet"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        problem.build().to_parquet(path, index=False)
    return path


def make_spec(
    problem: Problem, table: Path, *, sampler: str, n_trials: int, seed: int, storage: str | None = None
) -> StudySpec:
    options: dict[str, Any] = {"table": str(table), "metrics": {m: m for m in problem.metrics}}
    if problem.noisy:
        options["seed_column"] = SEED_COLUMN
    data: dict[str, Any] = {
        "name": f"{problem.name}-{sampler}-{n_trials}-s{seed}",
        "evaluator": {"kind": "tabular", "options": options},
        "space": list(problem.space),
        "objectives": list(problem.objectives),
        "constraints": list(problem.constraints),
        "search": {"sampler": sampler, "n_trials": n_trials, "seed": seed, "concurrency": 1},
    }
    if storage is not None:
        data["storage"] = storage
    return spec_from_dict(data)


def run_engine(
    problem: Problem, table: Path, workdir: Path, *, sampler: str, n_trials: int, seed: int
) -> Trace:
    """One study through ``search.run_study`` (Ray Tune workers, SQLite storage, no MLflow)."""
    from frontier.search import run_study

    run_dir = workdir / "runs"
    run_dir.mkdir(parents=True, exist_ok=True)
    db = run_dir / f"{problem.name}-{sampler}-{n_trials}-s{seed}.db"
    db.unlink(missing_ok=True)  # a fresh study, never a resumed one
    spec = make_spec(problem, table, sampler=sampler, n_trials=n_trials, seed=seed, storage=f"sqlite:///{db}")
    start = time.perf_counter()
    outcome = run_study(spec, run_dir=run_dir, track=False)
    seconds = time.perf_counter() - start
    rows = sorted(outcome.trials, key=lambda r: r.number)
    keys = [tuple(r.params[p] for p in problem.params) if r.state == "complete" else None for r in rows]
    db.unlink(missing_ok=True)
    return Trace(keys, seconds)


class _Lookup:
    """The ``tabular`` evaluator's lookup, in process (same row choice for seeded tables)."""

    def __init__(self, frame: pd.DataFrame, problem: Problem) -> None:
        self.frame = frame
        self.metrics = problem.metrics
        self.rows: dict[Key, list[int]] = {}
        for i, row in enumerate(frame[problem.params].itertuples(index=False)):
            self.rows.setdefault(tuple(v.item() if hasattr(v, "item") else v for v in row), []).append(i)
        self.values = frame[self.metrics].to_numpy(float)

    def __call__(self, key: Key, seed: int) -> dict[str, float]:
        rows = self.rows[key]
        row = rows[0] if len(rows) == 1 else random.Random(seed).choice(rows)
        return dict(zip(self.metrics, self.values[row].tolist(), strict=True))


def run_inprocess(
    problem: Problem,
    frame: pd.DataFrame,
    *,
    sampler: str,
    n_trials: int,
    seed: int,
    lookup: _Lookup | None = None,
    factory: Callable[[StudySpec], Any] | None = None,
    sqlite_dir: Path | None = None,
    time_limit: float | None = None,
) -> Trace:
    """The same ask/tell loop the engine runs, without Ray or storage (for development and timing)."""
    import optuna

    lookup = lookup or _Lookup(frame, problem)
    spec = make_spec(problem, Path("unused.parquet"), sampler=sampler, n_trials=n_trials, seed=seed)
    storage = None
    if sqlite_dir is not None:  # time the sampler on the storage the engine uses
        db = sqlite_dir / f"inprocess-{problem.name}-{sampler}-{seed}.db"
        db.parent.mkdir(parents=True, exist_ok=True)
        db.unlink(missing_ok=True)
        storage = f"sqlite:///{db}"
    study = optuna.create_study(
        directions=spec.directions, sampler=(factory or make_sampler)(spec), storage=storage
    )
    params = spec.params
    keys: list[Key | None] = []
    asks: list[float] = []
    start = time.perf_counter()
    for _ in range(n_trials):
        if time_limit is not None and time.perf_counter() - start > time_limit:
            break
        t0 = time.perf_counter()
        trial = study.ask()
        cand = suggest(trial, params)
        asks.append(time.perf_counter() - t0)
        key = tuple(cand.params[p] for p in problem.params)
        try:
            metrics = lookup(key, trial_seed(seed, trial.number))
        except KeyError:
            tell_result(study, trial, spec, None, error=f"candidate {key} is not in the table")
            keys.append(None)
            continue
        tell_result(study, trial, spec, metrics)
        keys.append(key)
    seconds = time.perf_counter() - start
    if sqlite_dir is not None:
        db.unlink(missing_ok=True)
    return Trace(keys, seconds, asks, finished=len(keys) == n_trials)
