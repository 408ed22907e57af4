"""MO-ASHA against running every trial to its full budget, at the same wall-clock budget.

Both arms run the same study spec (default ``configs/tiny-moe.yaml``) through the real engine (Ray Tune
workers, SQLite storage), same sampler and seed, for ``--budget-s`` seconds each; the only difference is
``search.scheduler`` (``moasha`` vs ``fifo``). Reported per arm: trials finished (complete + pruned),
trials trained to the full budget, Pareto size, and the hypervolume of its front, computed with one
reference point for both arms (the nadir of all complete trials of both, pushed out by 10 %).

    python benchmarks/bench_moasha.py --budget-s 300
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))  # after site-packages: see frontier/__init__


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", type=Path, default=ROOT / "configs" / "tiny-moe.yaml")
    ap.add_argument("--budget-s", type=float, default=300.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "moasha.json")
    args = ap.parse_args()

    from frontier.search import run_study
    from frontier.search._engine import init_ray
    from frontier.search._pareto import default_reference, hypervolume, pareto_mask, to_loss
    from frontier.spaces import load_spec

    init_ray(None)
    arms: dict[str, dict] = {}
    fronts: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("moasha", "fifo"):
            spec = load_spec(
                args.spec,
                {
                    "name": f"bench-{kind}",
                    "search.scheduler.kind": kind,
                    "search.timeout_s": args.budget_s,
                    "search.n_trials": 10_000,
                    "search.seed": args.seed,
                },
            )
            t0 = time.perf_counter()
            out = run_study(spec, run_dir=Path(tmp) / kind, track=False)
            wall = time.perf_counter() - t0
            complete = [r for r in out.trials if r.state == "complete"]
            values = np.array([[r.values[o.name] for o in spec.objectives] for r in complete])
            fronts[kind] = to_loss(values, spec.directions) if len(values) else np.empty((0, 2))
            arms[kind] = {
                "wall_s": round(wall, 1),
                "finished": sum(r.state in ("complete", "pruned") for r in out.trials),
                "complete_full_budget": len(complete),
                "pruned": out.count("pruned"),
                "failed": out.count("fail"),
                "pareto": len(out.pareto),
                "pareto_moe_layers": [r.metrics.get("moe_layers") for r in out.pareto],
            }
            print(f"{kind}: {arms[kind]}", flush=True)
    both = np.vstack([f for f in fronts.values() if len(f)])
    ref = default_reference(both)
    for kind, loss in fronts.items():
        arms[kind]["hypervolume"] = round(hypervolume(loss, ref), 6) if len(loss) else 0.0
        arms[kind]["front_points"] = int(pareto_mask(loss).sum()) if len(loss) else 0
    result = {
        "spec": str(args.spec.relative_to(ROOT)),
        "budget_s": args.budget_s,
        "reference_point": ref.tolist(),
        "arms": arms,
        "hv_ratio_moasha_to_fifo": round(
            arms["moasha"]["hypervolume"] / max(arms["fifo"]["hypervolume"], 1e-12), 3
        ),
    }
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
