"""Search quality of the ``auto`` sampler against random search, TPE, NSGA-II and the strongest peers
(Optuna's GPSampler, OptunaHub's AutoSampler rule, Syne Tune's MOREA and EHVI) on recorded tables.

Every figure comes from the real engine (``search.run_study`` with the ``tabular`` evaluator, one Ray for
the whole run, no MLflow); ``--inprocess`` runs the same ask/tell loop without Ray for development.

    .venv/bin/python benchmarks/bench_search_quality.py            # full run -> benchmarks/results/
    .venv/bin/python benchmarks/bench_search_quality.py --quick    # CI-sized: 3 seeds, small problems

Writes ``search_quality{,_quick}.json`` (every figure), ``.md`` (the table) and ``.png`` (HV ratio vs
evaluations) into ``--out``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # after site-packages: see frontier/__init__
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="3 seeds, small problems, budgets 20/40 (CI)")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (default 10; quick 3)")
    parser.add_argument("--problems", default=None, help="comma-separated problem names (default: all)")
    parser.add_argument("--budgets", default=None, help="budgets, e.g. 50,100,200 (quick: 20,40)")
    parser.add_argument("--auto-budgets", default=None, help="budgets auto runs at (default: --budgets)")
    parser.add_argument(
        "--goal-budget", type=int, default=None, help="auto's budget in the goal (default 100)"
    )
    parser.add_argument("--inprocess", action="store_true", help="in-process ask/tell instead of the engine")
    parser.add_argument("--no-overhead", action="store_true", help="skip timing auto's ask at the last trial")
    parser.add_argument(
        "--heldout", choices=["all", "only", "none"], default="all", help="which problem sets"
    )
    parser.add_argument(
        "--peers",
        default="autosampler,morea,gp,ehvi",
        help="peers run beside random/TPE/NSGA-II (gp, autosampler, morea, ehvi; '' for none)",
    )
    parser.add_argument(
        "--peer-time-limit", type=float, default=30.0, help="seconds per run of a slow peer (GP, EHVI)"
    )
    parser.add_argument(
        "--slow-peer-seeds", default="0,1", help="seeds the slow peers (GP, EHVI) run on (noisy problems)"
    )
    parser.add_argument(
        "--reuse",
        type=Path,
        default=None,
        help="a result JSON whose runs of (problem, sampler) pairs this run skips are merged in",
    )
    parser.add_argument(
        "--skip",
        default="",
        help="problem:sampler pairs not to run (e.g. taken from --reuse), comma-separated; "
        "'old:random' = every problem of --reuse",
    )
    parser.add_argument("--tag", default="", help="suffix of the output file names")
    parser.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        default=None,
        help="merge result JSONs of earlier runs into one report",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch dir (default: a temp dir)")
    args = parser.parse_args(argv)

    warnings.filterwarnings("ignore")
    from benchmarks.search_quality import Config, all_problems, get_problem, markdown, plot, run_benchmark
    from benchmarks.search_quality._harness import reuse_runs, write_json

    if args.merge:
        from benchmarks.search_quality._harness import load_json, merge

        merged = merge([load_json(p) for p in args.merge])
        stem = "search_quality" + args.tag
        write_json(merged, args.out / f"{stem}.json")
        (args.out / f"{stem}.md").write_text(markdown(merged))
        plot(merged, args.out / f"{stem}.png")
        print(markdown(merged))
        return 0
    if args.problems:
        problems = [get_problem(n.strip()) for n in args.problems.split(",") if n.strip()]
    elif args.quick:
        problems = [p for p in all_problems() if p.quick]
    else:
        problems = [p for p in all_problems() if not p.quick]
    if args.heldout != "all":
        problems = [p for p in problems if p.heldout == (args.heldout == "only")]
    budgets = _ints(args.budgets) if args.budgets else ([20, 40] if args.quick else [50, 100, 200])
    auto_budgets = _ints(args.auto_budgets) if args.auto_budgets else budgets
    goal = args.goal_budget or (budgets[-2] if len(budgets) > 1 else budgets[0])
    seeds = list(range(args.seeds if args.seeds is not None else (3 if args.quick else 10)))
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="frontier-sq-"))
    stem = "search_quality_quick" if args.quick else "search_quality"
    if args.inprocess:
        stem += "_inprocess"
    stem += args.tag
    from benchmarks.search_quality._harness import BASELINES
    from benchmarks.search_quality._peers import PEERS

    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = sorted(set(peers) - set(PEERS))
    if unknown:
        parser.error(f"unknown peers {unknown}; available: {list(PEERS)}")
    cfg = Config(
        problems=problems,
        seeds=seeds,
        budgets=budgets,
        baselines=[*BASELINES, *peers],
        peer_time_limit=args.peer_time_limit,
        slow_peer_seeds=_ints(args.slow_peer_seeds),
        auto_budgets=auto_budgets,
        engine=not args.inprocess,
        workdir=workdir,
        goal_budget=goal,
        goal_reference=max(budgets),
        overhead_trials=0 if args.no_overhead else max(budgets),
    )

    reused = None
    if args.reuse is not None:
        from benchmarks.search_quality._harness import load_json

        reused = load_json(args.reuse)
    skip: set[tuple[str, str]] = set()
    for pair in (x.strip() for x in args.skip.split(",") if x.strip()):
        prob, _, sampler = pair.partition(":")
        names = reused.config["problems"] if prob == "old" and reused is not None else [prob]
        skip |= {(n, sampler) for n in names}
    cfg.skip = skip

    def save(results) -> None:  # type: ignore[no-untyped-def]
        if reused is not None:
            results = reuse_runs(results, reused, skip)
        write_json(results, args.out / f"{stem}.json")
        (args.out / f"{stem}.md").write_text(markdown(results))
        plot(results, args.out / f"{stem}.png")

    print(
        f"{len(problems)} problems x {len(seeds)} seeds, budgets {budgets}, auto at {auto_budgets}, "
        f"{'in process' if args.inprocess else 'real engine'}; scratch {workdir}",
        flush=True,
    )
    start = time.perf_counter()
    try:
        results = run_benchmark(cfg, log=lambda s: print(s, flush=True), checkpoint=save)
    finally:
        if not args.inprocess:
            import ray

            ray.shutdown()
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    if reused is not None:
        results = reuse_runs(results, reused, skip)
    print(markdown(results))
    print(f"total {time.perf_counter() - start:.0f} s; wrote {args.out / stem}.{{json,md,png}}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
