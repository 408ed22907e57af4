"""Per-trial orchestration overhead of the full stack against a plain in-process Optuna loop.

Both search the same recorded table with the same sampler and seed. The full stack is
``search.run_study``: Optuna on an SQLite storage, candidates evaluated by Ray workers, MLflow tracking on
a SQLite store. It runs with each ``search.runner``: ``actors`` (``stack``, the default for a FIFO study
like this one: ``concurrency`` long-lived Ray actors, no Ray Tune per-trial machinery) and ``tune``
(``tune``: one Ray Tune trial per candidate on reused actors). The baseline is
``study.optimize`` on an in-memory study with the lookup as objective, and the same loop on an
SQLite storage set up as the stack's own (``search._optuna.make_storage``: WAL, synchronous=NORMAL), to
separate storage cost from orchestration cost.

    python benchmarks/bench_overhead.py            # 200 trials, concurrency 2, 3 repeats
    python benchmarks/bench_overhead.py --quick    # 60 trials, 1 repeat
    python benchmarks/bench_overhead.py --runners actors  # without the Ray Tune runner
    python benchmarks/bench_overhead.py --base /tmp/base    # this checkout's stack against another's

With ``--base DIR`` (another checkout of Frontier, e.g. a ``git worktree`` of the previous commit) it
instead times the full stack of both checkouts in the same run, each in its own process (``PYTHONPATH``
set to that checkout, Ray started before the clock), alternating which goes first in each repeat, and
records the medians and their difference per trial under ``vs_base`` in the results file.

Overhead per trial = (stack wall time - baseline wall time) / trials, both measured in this run, against
each baseline; "total" is the whole ``run_study`` call, "steady" excludes start-up (Ray workers, a new
MLflow store) and the final MLflow sync: from the first finished trial to the last. The machine's load
average is recorded with each repeat (the figures are only comparable at similar loads).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))  # after site-packages: see frontier/__init__


_KEYS = {"actors": "stack", "tune": "tune"}
"""``search.runner`` -> the prefix of its figures (``stack`` is the default runner of a FIFO study)."""


def make_table(path: Path) -> Path:
    rows = []
    for x, y, kind in itertools.product(range(20), range(20), "abc"):
        shift = {"a": 0.0, "b": 0.2, "c": 0.4}[kind]
        rows.append(
            {
                "x": x,
                "y": y,
                "kind": kind,
                "f1": x / 19 + shift + 0.01 * y,
                "f2": (1 - x / 19) ** 2 + shift + 0.01 * (19 - y),
            }
        )
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def spec_dict(table: Path, n: int, concurrency: int, name: str, runner: str = "auto") -> dict:
    return {
        "name": name,
        "evaluator": {
            "kind": "tabular",
            "options": {"table": str(table), "metrics": {"f1": "f1", "f2": "f2"}},
        },
        "space": [
            {"name": "x", "kind": "int", "low": 0, "high": 19},
            {"name": "y", "kind": "int", "low": 0, "high": 19},
            {"name": "kind", "kind": "categorical", "choices": ["a", "b", "c"]},
        ],
        "objectives": [{"name": "f1", "direction": "minimize"}, {"name": "f2", "direction": "minimize"}],
        "search": {
            "sampler": "tpe",
            "n_trials": n,
            "seed": 0,
            "concurrency": concurrency,
            "runner": runner,
        },
    }


def plain_loop(table: Path, n: int, storage: str | None) -> float:
    from frontier.search._optuna import make_storage

    frame = pd.read_csv(table)
    lookup = {(r.x, r.y, r.kind): (r.f1, r.f2) for r in frame.itertuples()}

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        key = (
            trial.suggest_int("x", 0, 19),
            trial.suggest_int("y", 0, 19),
            trial.suggest_categorical("kind", list("abc")),
        )
        return lookup[key]

    study = optuna.create_study(
        directions=["minimize", "minimize"],
        sampler=optuna.samplers.TPESampler(seed=0),
        storage=make_storage(storage) if storage else None,
    )
    t0 = time.perf_counter()
    study.optimize(objective, n_trials=n)
    return time.perf_counter() - t0


def full_stack(
    table: Path, n: int, concurrency: int, run_dir: Path, name: str, runner: str
) -> tuple[float, float]:
    from frontier.search import run_study
    from frontier.spaces import spec_from_dict

    stamps: list[float] = []
    spec = spec_from_dict(spec_dict(table, n, concurrency, name, runner))
    t0 = time.perf_counter()
    out = run_study(spec, run_dir=run_dir, on_progress=lambda p: stamps.append(time.perf_counter()))
    total = time.perf_counter() - t0
    errors = [r.error for r in out.trials if r.error][:3]
    assert len(out.trials) == n and out.count("complete") == n, (out.count("complete"), n, out.state, errors)
    steady = (stamps[-1] - stamps[0]) / (n - 1)
    return total / n, steady


def child(runner: str, trials: int, concurrency: int) -> None:
    """Time one full-stack study with whichever Frontier ``PYTHONPATH`` puts first; print the figures."""
    import frontier
    from frontier.search._engine import init_ray

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        table = make_table(tmp / "table.csv")
        init_ray(None)
        total, steady = full_stack(table, trials, concurrency, tmp / "run", f"overhead-{runner}", runner)
    import ray

    @ray.remote(num_cpus=0)
    def worker_frontier() -> str:
        import frontier

        return str(frontier.__file__)

    figures = {"total_s": total, "steady_s": steady, "frontier": frontier.__file__}
    print(json.dumps({**figures, "worker_frontier": ray.get(worker_frontier.remote())}))


def compare(args: argparse.Namespace, runners: list[str]) -> None:
    """This checkout's stack against ``args.base``'s, in the same run (see the module docstring)."""
    codes = {"new": ROOT, "old": args.base.resolve()}
    rows: list[dict[str, float]] = []
    for rep in range(args.repeats):
        order = ["new", "old"] if rep % 2 == 0 else ["old", "new"]
        row: dict[str, float] = {"load_before": os.getloadavg()[0]}
        for code, runner in itertools.product(order, runners):
            env = {**os.environ, "PYTHONPATH": str(codes[code])}
            cmd = [sys.executable, __file__, "--child", runner, "--trials", str(args.trials)]
            cmd += ["--concurrency", str(args.concurrency)]
            # run from that checkout: Ray's workers put the driver's working directory first on their path
            done = subprocess.run(cmd, env=env, cwd=codes[code], capture_output=True, text=True, timeout=1800)
            if done.returncode != 0:
                raise RuntimeError(f"the {code} {runner} run failed:\n{done.stderr[-3000:]}")
            figures = json.loads(done.stdout.strip().splitlines()[-1])
            for where in ("frontier", "worker_frontier"):
                if not figures[where].startswith(str(codes[code])):
                    raise RuntimeError(f"the {code} run's {where} is {figures[where]}, not {codes[code]}'s")
            key = f"{code}_{_KEYS[runner]}"
            row |= {f"{key}_total_s": figures["total_s"], f"{key}_steady_s": figures["steady_s"]}
            print(
                f"repeat {rep} {code:>3} {runner:>6}: per trial {figures['total_s'] * 1e3:6.1f} ms "
                f"(steady {figures['steady_s'] * 1e3:6.1f} ms)",
                flush=True,
            )
        rows.append(row | {"load_after": os.getloadavg()[0]})
    timed = [k for k in rows[0] if k.endswith("_s")]
    med = {k.removesuffix("_s"): round(statistics.median(r[k] for r in rows) * 1e3, 2) for k in timed}
    diff = {}
    for runner, part in itertools.product(runners, ("total", "steady")):
        key = f"{_KEYS[runner]}_{part}"
        diff[f"{key}_new_minus_old_ms"] = round(med[f"new_{key}"] - med[f"old_{key}"], 2)
    result = {
        "base": str(codes["old"]),
        "trials": args.trials,
        "concurrency": args.concurrency,
        "repeats": args.repeats,
        "median_per_trial_ms": med,
        **diff,
        "load_average": [
            round(min(r["load_before"] for r in rows), 2),
            round(max(r["load_after"] for r in rows), 2),
        ],
        "runs": rows,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))
    stored = json.loads(args.out.read_text()) if args.out.exists() else {}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({**stored, "vs_base": result}, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--runners", default="actors,tune", help="search.runner values to time, comma-separated")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "overhead.json")
    ap.add_argument("--base", type=Path, help="another Frontier checkout to compare this one's stack with")
    ap.add_argument("--child", choices=sorted(_KEYS), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        child(args.child, args.trials, args.concurrency)
        return
    runners = [r for r in args.runners.split(",") if r]
    if ("actors" not in runners and args.base is None) or any(r not in _KEYS for r in runners):
        ap.error(f"--runners: 'actors', optionally with 'tune', comma-separated; got {args.runners!r}")
    if args.quick:
        args.trials, args.repeats = 60, 1
    if args.base is not None:
        if not (args.base / "frontier" / "__init__.py").is_file():
            ap.error(f"--base: a Frontier checkout (with frontier/__init__.py); got {str(args.base)!r}")
        compare(args, runners)
        return
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from frontier.search._engine import init_ray

    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        table = make_table(tmp / "table.csv")
        init_ray(None)  # started once, outside the timings, as a long-running service would have it
        rows = []
        for rep in range(args.repeats):
            load = os.getloadavg()[0]
            mem = plain_loop(table, args.trials, None) / args.trials
            sql = plain_loop(table, args.trials, f"sqlite:///{tmp / f'plain{rep}.db'}") / args.trials
            row = {"plain_memory_s": mem, "plain_sqlite_s": sql}
            line = f"repeat {rep}: per trial  plain(in-memory) {mem * 1e3:6.1f} ms"
            line += f"  plain(sqlite) {sql * 1e3:6.1f} ms"
            for runner in runners:
                key = _KEYS[runner]
                total, steady = full_stack(
                    table, args.trials, args.concurrency, tmp / f"{key}{rep}", f"overhead-{key}-{rep}", runner
                )
                row |= {f"{key}_total_s": total, f"{key}_steady_s": steady}
                line += f"  {key} {total * 1e3:6.1f} ms (steady {steady * 1e3:6.1f} ms)"
            rows.append(row | {"load_before": load, "load_after": os.getloadavg()[0]})
            print(f"{line}  load {load:.2f} -> {os.getloadavg()[0]:.2f}", flush=True)
    timed = [k for k in rows[0] if k.endswith("_s")]
    med = {k: statistics.median(r[k] for r in rows) for k in timed}

    def over(stack: str, base: str, key: str = "stack") -> float:
        return round((med[f"{key}_{stack}_s"] - med[f"plain_{base}_s"]) * 1e3, 2)

    tune = (
        {
            "tune_overhead_vs_plain_memory_ms": over("total", "memory", "tune"),
            "tune_overhead_vs_plain_memory_steady_ms": over("steady", "memory", "tune"),
        }
        if "tune" in runners
        else {}
    )

    result = {
        "trials": args.trials,
        "concurrency": args.concurrency,
        "repeats": args.repeats,
        "median_per_trial_ms": {k.removesuffix("_s"): round(v * 1e3, 2) for k, v in med.items()},
        "overhead_vs_plain_memory_ms": over("total", "memory"),
        "overhead_vs_plain_memory_steady_ms": over("steady", "memory"),
        "overhead_vs_plain_sqlite_ms": over("total", "sqlite"),
        "overhead_vs_plain_sqlite_steady_ms": over("steady", "sqlite"),
        **tune,
        "ratio_stack_to_plain_memory": round(med["stack_total_s"] / med["plain_memory_s"], 2),
        "goal_ms": 25.0,
        "goal_met_steady_vs_plain_memory": over("steady", "memory") <= 25.0,
        "load_average": [
            round(min(r["load_before"] for r in rows), 2),
            round(max(r["load_after"] for r in rows), 2),
        ],
        "runs": rows,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
