"""The benchmark loop: problems x samplers x seeds, scored against each table's true front."""

from __future__ import annotations

import json
import logging
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.search_quality._metrics import TableScorer
from benchmarks.search_quality._peers import OPTUNA_PEERS, PEERS, SYNE_TUNE, optuna_peer, run_syne_tune
from benchmarks.search_quality._problems import Problem
from benchmarks.search_quality._runner import Trace, _Lookup, run_engine, run_inprocess, table_path

BASELINES = ("random", "tpe", "nsga2")
# Samplers whose behaviour does not depend on n_trials: one run at the largest budget gives the smaller
# budgets as prefixes. ``auto`` reads the budget, so it runs once per budget.
PREFIX_SAMPLERS = frozenset((*BASELINES, *PEERS))


def scorer_for(problem: Problem, frame: pd.DataFrame) -> TableScorer:
    return TableScorer(
        frame,
        problem.params,
        [(o["name"], o["direction"]) for o in problem.objectives],
        [(c["metric"], c["op"], float(c["value"])) for c in problem.constraints],
    )


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("optuna", "syne-tune", "botorch", "analog-nasbench", "numpy", "torch"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def syne_tune_scale(scorer: TableScorer) -> Callable[[np.ndarray], np.ndarray]:
    """Losses min-max normalised over the table, minus 3.

    Syne Tune's EHVI negates the losses and fixes BoTorch's reference point at 2 in every objective, which
    suits only losses <= -2; shifted this way every candidate dominates the reference, which then sits one
    table-range beyond the worst candidate. (It tells the peer the table's ranges, which ``auto`` does not
    get: a favour to the peer.) Rank-based MOREA is unaffected.
    """
    return lambda loss: (loss - scorer.low) / scorer.span - 3.0


def start_local_ray() -> None:
    """A Ray of this process's own, then the engine's ``init_ray`` (which reuses it for every study).

    ``ray.init(address=None)`` joins a cluster that someone started with ``ray start`` on this machine;
    a benchmark must not share CPUs (or a shutdown) with it, hence ``address="local"``.
    """
    import ray

    from frontier.search._engine import init_ray

    if not ray.is_initialized():
        os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
        ray.init(
            address="local",
            include_dashboard=False,
            configure_logging=True,
            logging_level=logging.WARNING,
            log_to_driver=False,
        )
    init_ray(None)


def checkpoints(n: int, every: int = 10) -> list[int]:
    return sorted({*range(every, n + 1, every), n})


@dataclass
class Config:
    """What one harness run covers."""

    problems: Sequence[Problem]
    seeds: Sequence[int]
    budgets: Sequence[int] = (50, 100, 200)
    baselines: Sequence[str] = BASELINES
    auto_budgets: Sequence[int] | None = None  # default: ``budgets``
    engine: bool = True
    workdir: Path = Path("/tmp/frontier-search-quality")
    goal_budget: int = 100  # auto's budget in the goal ...
    goal_reference: int = 200  # ... against the best baseline at this budget
    overhead_trials: int = 200
    peer_time_limit: float | None = None  # seconds per peer run (GP, EHVI); None: no limit
    # Peers whose suggestion costs seconds (GP, EHVI: 4-25 s per ask by trial 60 on a 6-categorical cell
    # space): run on the noisy problems only, on these seeds, under ``peer_time_limit``.
    slow_peers: Sequence[str] = ("gp", "ehvi")
    slow_peer_seeds: Sequence[int] = (0, 1)
    skip: set[tuple[str, str]] = field(default_factory=set)  # (problem, sampler) pairs not to run


@dataclass
class Results:
    config: dict[str, Any]
    runs: list[dict[str, Any]] = field(default_factory=list)
    overhead: dict[str, dict[str, float]] = field(default_factory=dict)
    problems: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "seconds": self.seconds,
            "problems": self.problems,
            "overhead": self.overhead,
            "summary": summarise(self),
            "runs": self.runs,
        }


def _one(
    cfg: Config,
    problem: Problem,
    table: Path,
    lookup: _Lookup,
    frame: pd.DataFrame,
    sampler: str,
    n: int,
    seed: int,
    scorer: TableScorer,
) -> Trace:
    if sampler in SYNE_TUNE:
        keys, seconds, asks = run_syne_tune(
            problem,
            lookup,
            method=sampler,
            n_trials=n,
            seed=seed,
            time_limit=cfg.peer_time_limit,
            normalise=syne_tune_scale(scorer),
        )
        return Trace(keys, seconds, asks, finished=len(keys) == n)
    if sampler in OPTUNA_PEERS:  # always in process: the peers are not registered with the engine
        return run_inprocess(
            problem,
            frame,
            sampler="random",  # a registered name for the spec; the peer's factory replaces the sampler
            n_trials=n,
            seed=seed,
            lookup=lookup,
            factory=optuna_peer(sampler),
            time_limit=cfg.peer_time_limit,
        )
    if cfg.engine:
        return run_engine(problem, table, cfg.workdir, sampler=sampler, n_trials=n, seed=seed)
    return run_inprocess(problem, frame, sampler=sampler, n_trials=n, seed=seed, lookup=lookup)


def run_benchmark(
    cfg: Config,
    *,
    log: Callable[[str], None] = print,
    checkpoint: Callable[[Results], None] | None = None,
) -> Results:
    """Run every (problem, sampler, budget, seed) and score it; ``checkpoint`` is called after each phase.

    Phase 1 runs what the goal needs (baselines at the largest budget, ``auto`` at ``goal_budget``) for
    every problem; phase 2 adds ``auto`` at the other budgets. Results are complete after each phase, so a
    run cut short still reports the goal.
    """
    start = time.perf_counter()
    top = max(cfg.budgets)
    auto_budgets = list(cfg.auto_budgets or cfg.budgets)
    results = Results(
        config={
            "problems": [p.name for p in cfg.problems],
            "seeds": list(cfg.seeds),
            "budgets": list(cfg.budgets),
            "auto_budgets": auto_budgets,
            "baselines": list(cfg.baselines),
            "engine": "search.run_study (Ray Tune, SQLite, track=False)"
            if cfg.engine
            else "in-process ask/tell",
            "overhead_trials": cfg.overhead_trials,
            "peer_time_limit_s": cfg.peer_time_limit,
            "versions": _versions(),
            "slow_peers": [p for p in cfg.slow_peers if p in cfg.baselines],
            "slow_peer_seeds": list(cfg.slow_peer_seeds),
            "goal": f"auto@{cfg.goal_budget} median HV ratio >= best baseline@{cfg.goal_reference} median",
        }
    )
    if cfg.engine:
        start_local_ray()
    prepared = {}
    for problem in cfg.problems:
        frame = problem.build()
        scorer = scorer_for(problem, frame)
        prepared[problem.name] = (frame, scorer, table_path(problem, cfg.workdir), _Lookup(frame, problem))
        results.problems[problem.name] = {
            "heldout": problem.heldout,
            "objectives": [f"{o['direction']} {o['name']}" for o in problem.objectives],
            "constraints": [f"{c['metric']} {c['op']} {c['value']}" for c in problem.constraints],
            "n_candidates": len(scorer.loss),
            "n_feasible": int(scorer.feasible.sum()),
            "front_in_box": len(scorer.front),
            "noisy": problem.noisy,
            "note": problem.note,
        }

    phases = [
        [(s, top) for s in cfg.baselines]
        + ([("auto", cfg.goal_budget)] if cfg.goal_budget in auto_budgets else []),
        [("auto", n) for n in auto_budgets if n != cfg.goal_budget],
    ]
    for phase, jobs in enumerate(phases, start=1):
        if not jobs:
            continue
        for problem in cfg.problems:
            frame, scorer, table, lookup = prepared[problem.name]
            for sampler, n in jobs:
                if (problem.name, sampler) in cfg.skip:
                    continue
                seeds = cfg.seeds
                if sampler in cfg.slow_peers:
                    if not problem.noisy:
                        continue
                    seeds = [s for s in cfg.seeds if s in cfg.slow_peer_seeds]
                t0 = time.perf_counter()
                for seed in seeds:
                    trace = _one(cfg, problem, table, lookup, frame, sampler, n, seed, scorer)
                    points = checkpoints(n)
                    curve = scorer.curve(trace.keys, points)
                    results.runs.append(
                        {
                            "problem": problem.name,
                            "sampler": sampler,
                            "n_trials": n,
                            "seed": seed,
                            "points": points,
                            "hv_ratio": curve["hv_ratio"],
                            "igd_plus": curve["igd_plus"],
                            "failed": sum(k is None for k in trace.keys),
                            "unique": len({k for k in trace.keys if k is not None}),
                            "seconds": trace.seconds,
                            "n_done": len(trace.keys),
                            "last_ask_s": trace.ask_seconds[-1] if trace.ask_seconds else None,
                            "finished": trace.finished,
                            "rows": [scorer.row(k) for k in trace.keys],  # for rescoring without rerunning
                        }
                    )
                last = results.runs[-len(seeds) :]
                hv = [r["hv_ratio"][-1] for r in last]
                unfinished = sum(not r["finished"] for r in last)
                log(
                    f"[phase {phase}] {problem.name:38s} {sampler:11s} N={n:<4d} median HV ratio "
                    f"{statistics.median(hv):.3f}  ({time.perf_counter() - t0:.0f} s)"
                    + (f"  {unfinished} runs hit the time limit" if unfinished else "")
                )
                if checkpoint is not None:
                    results.seconds = time.perf_counter() - start
                    checkpoint(results)
        results.seconds = time.perf_counter() - start
        if checkpoint is not None:
            checkpoint(results)

    if cfg.overhead_trials:
        for problem in cfg.problems:
            frame, _, _, lookup = prepared[problem.name]
            trace = run_inprocess(
                problem,
                frame,
                sampler="auto",
                n_trials=cfg.overhead_trials,
                seed=0,
                lookup=lookup,
                sqlite_dir=cfg.workdir,
            )
            asks = trace.ask_seconds
            results.overhead[problem.name] = {
                "ask_s_at_last_trial": asks[-1],
                "ask_s_max_last_10": max(asks[-10:]),
                "ask_s_mean": float(np.mean(asks)),
            }
            log(
                f"[overhead] {problem.name:32s} auto ask at trial {cfg.overhead_trials}: "
                f"{asks[-1] * 1000:.0f} ms "
                f"(max of last 10: {max(asks[-10:]) * 1000:.0f} ms)"
            )
    results.seconds = time.perf_counter() - start
    if checkpoint is not None:
        checkpoint(results)
    return results


def _stats(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=float)
    finite = arr[np.isfinite(arr)]
    return {
        "median": float(np.median(arr)),
        "mean": float(finite.mean()) if len(finite) else float("inf"),
        "q25": float(np.quantile(arr, 0.25)),
        "q75": float(np.quantile(arr, 0.75)),
        "n": len(arr),
    }


def at_budget(results: Results, problem: str, sampler: str, n: int, metric: str = "hv_ratio") -> list[float]:
    """Every seed's ``metric`` after ``n`` trials (from a run at ``n``, or a prefix for prefix samplers)."""
    out = []
    for r in results.runs:
        if r["problem"] != problem or r["sampler"] != sampler or n not in r["points"]:
            continue
        if r.get("n_done", r["n_trials"]) < n:  # cut by the time limit before n trials
            continue
        if r["n_trials"] != n and sampler not in PREFIX_SAMPLERS:
            continue
        if r["n_trials"] != n and any(q["n_trials"] == n for q in _same(results, r)):
            continue
        out.append(r[metric][r["points"].index(n)])
    return out


def _same(results: Results, run: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        q
        for q in results.runs
        if q["problem"] == run["problem"] and q["sampler"] == run["sampler"] and q["seed"] == run["seed"]
    ]


def summarise(results: Results) -> dict[str, Any]:
    """Per problem: median (IQR) HV ratio and IGD+ of every sampler at every budget, and the goal check."""
    cfg = results.config
    out: dict[str, Any] = {}
    for name in cfg["problems"]:
        per: dict[str, Any] = {}
        for sampler in [*cfg["baselines"], "auto"]:
            budgets = cfg["auto_budgets"] if sampler == "auto" else cfg["budgets"]
            for n in budgets:
                hv = at_budget(results, name, sampler, n)
                if hv:
                    per[f"{sampler}@{n}"] = {
                        "hv_ratio": _stats(hv),
                        "igd_plus": _stats(at_budget(results, name, sampler, n, "igd_plus")),
                    }
        top = max(cfg["budgets"])
        goal_n = int(cfg["goal"].split("@")[1].split()[0])
        # A peer that did not reach the budget on every seed within its time limit is reported, not ranked.
        n_seeds = len(cfg["seeds"])
        base = {
            s: per[f"{s}@{top}"]["hv_ratio"]["median"]
            for s in cfg["baselines"]
            if f"{s}@{top}" in per and per[f"{s}@{top}"]["hv_ratio"]["n"] == n_seeds
        }
        entry: dict[str, Any] = {"samplers": per}
        unfinished = {
            s: [
                r["n_done"]
                for r in results.runs
                if r["problem"] == name and r["sampler"] == s and not r.get("finished", True)
            ]
            for s in cfg["baselines"]
        }
        entry["unfinished"] = {s: v for s, v in unfinished.items() if v}
        if base and f"auto@{goal_n}" in per:
            best = max(base, key=lambda s: base[s])
            auto = per[f"auto@{goal_n}"]["hv_ratio"]["median"]
            entry["goal"] = {
                "best_baseline": best,
                "best_baseline_median": base[best],
                "auto_median": auto,
                "met": bool(auto >= base[best] - 1e-12),
            }
        out[name] = entry
    return out


def load_json(path: Path) -> Results:
    data = json.loads(path.read_text())
    return Results(data["config"], data["runs"], data["overhead"], data["problems"], data["seconds"])


def merge(parts: Sequence[Results]) -> Results:
    """One report from runs made in separate processes (e.g. development and held-out side by side)."""
    first = parts[0]
    config = dict(first.config)
    config["problems"] = [n for p in parts for n in p.config["problems"]]
    config["wall_seconds_per_part"] = [p.seconds for p in parts]
    out = Results(config, seconds=max(p.seconds for p in parts))
    for p in parts:
        for key in ("budgets", "auto_budgets", "baselines", "seeds", "engine", "goal"):
            if p.config[key] != first.config[key]:
                raise ValueError(
                    f"cannot merge runs whose '{key}' differ: {first.config[key]} vs {p.config[key]}"
                )
        out.runs += p.runs
        out.overhead.update(p.overhead)
        out.problems.update(p.problems)
    return out


def reuse_runs(results: Results, earlier: Results, pairs: set[tuple[str, str]]) -> Results:
    """``results`` plus the runs of ``earlier`` for the (problem, sampler) ``pairs`` this run skipped.

    For samplers whose code did not change since ``earlier`` (same Optuna, same seeds: the trials are
    identical, so rerunning them only costs time). The reused runs are marked ``reused_from``.
    """
    out = Results(dict(results.config), list(results.runs), dict(results.overhead), dict(results.problems))
    out.seconds = results.seconds
    for r in earlier.runs:
        if (r["problem"], r["sampler"]) in pairs and r["problem"] in out.problems:
            out.runs.append({**r, "reused_from": earlier.config.get("engine", "an earlier run")})
    out.config["reused"] = sorted(f"{p}:{s}" for p, s in pairs)
    return out


def write_json(results: Results, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results.to_json(), indent=1, default=float))
