"""Does the searched Pareto set beat the uniform baselines? (MiniLM compression, issue 4)

Runs a compression study spec through the real engine (default ``configs/minilm-bits-channels.yaml``: bits
per block and FFN channels per layer of the packaged all-MiniLM-L6-v2, Ray workers, SQLite storage; pass
``--spec configs/minilm-mixed-precision.yaml`` for bits alone). The study itself evaluates the uniform
baselines first (uniform 8/4/3 bits, tagged ``baseline``), in the same run and on the same machine as the
searched candidates. For each baseline the benchmark then asks: is there a trial the *search* found (not a
baseline) on the Pareto set that strictly dominates it: the same or a smaller size and latency, and a
higher fidelity? A baseline that is itself an extreme point of the feasible set (the best of all feasible
trials in some objective) or infeasible under the study's budget cannot be dominated by a feasible point,
so it is reported as such, not counted.

Latency is measured (median of repeats, see the evaluator), so two candidates with the same kernels can
differ by noise; the report gives the dominance verdict at the strict rule and at a tolerance of
``--latency-tol`` (relative) on latency, and the latencies themselves. Then each judged baseline (strictly
dominated or not) is timed again *paired* with its challengers (the searched Pareto points of no larger size
and higher fidelity): both compressed models built side by side, ``--rounds`` rounds alternating A B B A,
each a median of a few calls, so the machine's drift hits both alike. The report gives the
challenger/baseline latency ratio (median over rounds, 95 % bootstrap CI) and whether it is *faster* (CI
below 1), *slower* (CI above 1) or *the same* (not slower by more than ``--equal-margin``: the CI's upper
end at most 1 + margin).

    .venv/bin/python benchmarks/bench_compression_pareto.py                 # ~5 min on 2 cores
    .venv/bin/python benchmarks/bench_compression_pareto.py --run-dir runs/minilm   # resumable

Writes ``benchmarks/results/compression_pareto.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))  # after site-packages: see frontier/__init__

QUALITY, LATENCY, SIZE = "fidelity", "latency_norm_ms", "size_mb"  # the study's objectives


def dominates(p: dict[str, float], b: dict[str, float], latency_tol: float = 0.0) -> bool:
    """``p`` strictly dominates ``b``: size and latency no larger (latency within ``latency_tol``), fidelity
    higher."""
    return p[SIZE] <= b[SIZE] and p[LATENCY] <= b[LATENCY] * (1.0 + latency_tol) and p[QUALITY] > b[QUALITY]


def extreme_objectives(row: dict[str, float], feasible: list[dict[str, float]]) -> list[str]:
    """The objectives in which ``row`` is the best of the feasible trials."""
    out = []
    if row[QUALITY] >= max(r[QUALITY] for r in feasible):
        out.append(QUALITY)
    for name in (LATENCY, SIZE):
        if row[name] <= min(r[name] for r in feasible):
            out.append(name)
    return out


def analyse(trials: list[Any], latency_tol: float) -> dict[str, Any]:
    complete = [
        t for t in trials if t.state == "complete" and all(k in t.values for k in (QUALITY, LATENCY, SIZE))
    ]
    feasible = [t for t in complete if t.feasible]
    found_front = [t for t in feasible if t.pareto and "baseline" not in t.tags]
    rows = []
    for b in (t for t in trials if "baseline" in t.tags):
        entry: dict[str, Any] = {
            "baseline": b.tags["baseline"],
            "trial": b.number,
            "state": b.state,
            "values": b.values,
            "avg_bits": b.metrics.get("avg_bits"),
            "feasible": b.feasible,
        }
        if b.state != "complete" or not b.values:
            entry["verdict"] = f"not evaluated ({b.state}: {b.error})"
        elif not b.feasible:
            entry["verdict"] = "infeasible under the study's budget (cannot be dominated by a feasible point)"
        else:
            extreme = extreme_objectives(b.values, [t.values for t in feasible])
            strict = [t for t in found_front if dominates(t.values, b.values)]
            tol = [t for t in found_front if dominates(t.values, b.values, latency_tol)]
            entry["extreme_in"] = extreme
            entry["dominated_by"] = [{"trial": t.number, "values": t.values} for t in strict]
            entry["dominated_within_tol_by"] = [{"trial": t.number, "values": t.values} for t in tol]
            if extreme:
                entry["verdict"] = f"extreme point (best {', '.join(extreme)})"
            elif strict:
                entry["verdict"] = "strictly dominated"
            elif tol:
                entry["verdict"] = f"dominated within {latency_tol:.0%} latency"
            else:
                entry["verdict"] = "NOT dominated"
        rows.append(entry)
    judged = [r for r in rows if r.get("extreme_in") == []]
    return {
        "trials": len(trials),
        "complete": len(complete),
        "feasible": len(feasible),
        "found_pareto": [{"trial": t.number, "values": t.values, "tags": t.tags} for t in found_front],
        "baselines": rows,
        "judged_baselines": len(judged),
        "strictly_dominated": sum(1 for r in judged if r["dominated_by"]),
        "dominated_within_tol": sum(1 for r in judged if r["dominated_within_tol_by"]),
        "latency_tol": latency_tol,
    }


def _point(trial: int, v: dict[str, float]) -> str:
    return f"#{trial} ({v[QUALITY]:.4f}, {v[LATENCY]:.3f} ms, {v[SIZE]:.2f} MB)"


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Compression search vs uniform baselines",
        "",
        f"Spec `{result['spec']}`; {result['complete']} complete trials of {result['trials']} "
        f"({result['feasible']} feasible), {result['wall_s']:.0f} s on {result['cpus']} cores "
        f"(1-min load average {result['loadavg'][0]:.1f} before, {result['loadavg'][1]:.1f} after).",
        "",
        f"| baseline | trial | {QUALITY} | {LATENCY} | {SIZE} | avg_bits | verdict | dominated by (strict) |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in result["baselines"]:
        v = r["values"] or {}
        by = ", ".join(_point(d["trial"], d["values"]) for d in r.get("dominated_by", [])[:3])
        lines.append(
            f"| {r['baseline']} | {r['trial']} | {v.get(QUALITY, float('nan')):.4f} | "
            f"{v.get(LATENCY, float('nan')):.3f} | {v.get(SIZE, float('nan')):.2f} | "
            f"{(r['avg_bits'] or float('nan')):.2f} | {r['verdict']} | {by or '-'} |"
        )
    lines += [
        "",
        f"Baselines that are neither extreme points nor infeasible: {result['judged_baselines']}; strictly "
        f"dominated by a searched Pareto point: {result['strictly_dominated']}; dominated within "
        f"{result['latency_tol']:.0%} latency: {result['dominated_within_tol']}.",
        "",
        "Searched Pareto set (baselines excluded):",
        "",
        f"| trial | {QUALITY} | {LATENCY} | {SIZE} |",
        "|---:|---:|---:|---:|",
    ]
    for p in sorted(result["found_pareto"], key=lambda p: -p["values"][QUALITY]):
        v = p["values"]
        lines.append(f"| {p['trial']} | {v[QUALITY]:.4f} | {v[LATENCY]:.3f} | {v[SIZE]:.2f} |")
    paired = [(r, p) for r in result["baselines"] for p in r.get("paired", [])]
    if paired:
        lines += [
            "",
            "Paired re-timing of the judged baselines against their challengers (searched Pareto points of "
            "no larger size and higher fidelity), interleaved in one process, 1 thread:",
            "",
            "| baseline | challenger | latency ratio challenger/baseline | 95 % CI | verdict |",
            "|---|---:|---:|---:|---|",
        ]
        for r, p in paired:
            lo, hi = p["ratio_ci95"]
            lines.append(
                f"| {r['baseline']} | {p['trial']} | {p['ratio_median']:.4f} | {lo:.4f}-{hi:.4f} | "
                f"{p['verdict']} |"
            )
        lines += [
            "",
            "Judged baselines with a challenger that is faster in paired timing (95 % CI below 1), so "
            f"strictly dominated with a measured latency margin: {result['paired_faster']} of "
            f"{result['judged_baselines']}; with one at least not slower by more than "
            f"{result['equal_margin']:.0%}: {result['paired_not_slower']}.",
        ]
    return "\n".join(lines) + "\n"


def paired_latency(
    ev: Any, spec: Any, baseline: Any, challengers: list[Any], rounds: int, calls: int
) -> list[dict]:
    """Challenger/baseline latency ratios from interleaved timing of the compressed models (1 thread);
    ``ev``: the study's evaluator, loaded."""
    import numpy as np
    import torch

    from frontier.evaluators import EvalContext
    from frontier.evaluators.latency import fixed_threads
    from frontier.spaces import Candidate

    ctx = EvalContext(threads=int(spec.resources.cpu))
    batch = ev.latency_input(ctx)
    out = []
    with fixed_threads(ctx.threads), torch.inference_mode():
        base = ev.compress(ev.decode(Candidate(baseline.params, number=baseline.number)))

        def median_ms(model: Any) -> float:
            times = []
            for _ in range(calls):
                t0 = time.perf_counter()
                model(**batch)
                times.append(time.perf_counter() - t0)
            return float(np.median(times) * 1e3)

        for c in challengers:
            model = ev.compress(ev.decode(Candidate(c.params, number=c.number)))
            for _ in range(3):  # warm-up, both
                median_ms(base), median_ms(model)
            ratios = []
            for r in range(rounds):
                if r % 2:  # A B, then B A: neither always runs first
                    b_ms, c_ms = median_ms(base), median_ms(model)
                else:
                    c_ms, b_ms = median_ms(model), median_ms(base)
                ratios.append(c_ms / b_ms)
            arr = np.array(ratios)
            boot = np.median(np.random.default_rng(0).choice(arr, (2000, arr.size)), axis=1)
            lo, hi = np.quantile(boot, [0.025, 0.975])
            out.append(
                {
                    "trial": c.number,
                    "ratio_median": round(float(np.median(arr)), 4),
                    "ratio_ci95": [round(float(lo), 4), round(float(hi), 4)],
                    "rounds": rounds,
                }
            )
            del model
    return out


def paired_verdict(entry: dict, margin: float) -> str:
    """Faster (CI below 1), slower (CI above 1), or not slower by more than ``margin`` (CI upper end at
    most 1 + margin: a non-inferiority test, what "the same or a smaller latency" can mean for timings)."""
    lo, hi = entry["ratio_ci95"]
    if hi < 1.0:
        return "faster"
    if lo > 1.0:
        return "slower"
    if hi <= 1.0 + margin:
        return f"same (not slower by more than {margin:.0%})"
    return "inconclusive"


def add_paired(result: dict, outcome: Any, spec: Any, rounds: int, calls: int, margin: float) -> None:
    """Time each judged baseline paired with its challengers (see the module doc), strictly dominated on
    the study's figures or not: a single capped measurement per trial cannot settle a 1 % difference."""
    from frontier.evaluators import for_spec

    by_number = {t.number: t for t in outcome.trials}
    front = [by_number[p["trial"]] for p in result["found_pareto"]]
    ev: Any = None  # the base model, loaded once for every baseline
    for entry in result["baselines"]:
        if entry.get("extreme_in") != []:  # infeasible, not evaluated, or an extreme point
            continue
        b = entry["values"]
        challengers = [t for t in front if t.values[SIZE] <= b[SIZE] and t.values[QUALITY] > b[QUALITY]]
        challengers = sorted(challengers, key=lambda t: t.values[LATENCY])[:3]
        if not challengers:
            entry["paired"] = []
            continue
        if ev is None:
            ev = for_spec(spec)  # set up as a study's worker sets it up
            ev.load()
        entry["paired"] = paired_latency(ev, spec, by_number[entry["trial"]], challengers, rounds, calls)
        for p in entry["paired"]:
            p["verdict"] = paired_verdict(p, margin)
    result["equal_margin"] = margin
    judged = [e for e in result["baselines"] if e.get("extreme_in") == []]
    result["paired_faster"] = sum(any(p["verdict"] == "faster" for p in e["paired"]) for e in judged)
    result["paired_not_slower"] = sum(
        any(p["verdict"] == "faster" or p["verdict"].startswith("same") for p in e["paired"]) for e in judged
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", type=Path, default=ROOT / "configs" / "minilm-bits-channels.yaml")
    ap.add_argument("--run-dir", type=Path, default=None, help="keep the study here (default: a temp dir)")
    ap.add_argument("--latency-tol", type=float, default=0.03)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "compression_pareto")
    ap.add_argument("--rounds", type=int, default=200, help="paired timing rounds per challenger")
    ap.add_argument("--calls", type=int, default=5, help="calls per model and round (median taken)")
    ap.add_argument(
        "--equal-margin", type=float, default=0.02, help="'same' latency: ratio CI upper end <= 1 + this"
    )
    args = ap.parse_args()

    from frontier.search import run_study
    from frontier.spaces import load_spec

    spec = load_spec(args.spec)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.run_dir or Path(tmp)
        t0 = time.perf_counter()
        outcome = run_study(spec, run_dir=run_dir, track=False)
        wall = time.perf_counter() - t0
    result = {
        "spec": str(args.spec.relative_to(ROOT) if args.spec.is_relative_to(ROOT) else args.spec),
        "wall_s": round(wall, 1),
        "cpus": os.cpu_count(),
        "loadavg": [load_before, os.getloadavg()[0]],
        **analyse(outcome.trials, args.latency_tol),
    }
    add_paired(result, outcome, spec, args.rounds, args.calls, args.equal_margin)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    text = markdown(result)
    args.out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
