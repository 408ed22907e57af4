"""Few-shot latency transfer to unseen devices: the HELP protocol on NAS-Bench-201, FBNet and OFA.

For each target device a predictor sees the measured latency of K=10 architectures and ranks 1000 others
(Spearman). Compared, in one run: ``device-transfer`` (ours), the non-negative least-squares ``source-mix``
of the source devices, and a FLOPs proxy (no measurement). See docs/latency.md for the protocol.

    .venv/bin/python benchmarks/bench_latency_transfer.py            # ~10-20 s on 2 cores
    .venv/bin/python benchmarks/bench_latency_transfer.py --quick    # 3 random draws instead of 20
    .venv/bin/python benchmarks/bench_latency_transfer.py --targets validation   # tune here, not on test

Data: the HELP tables converted to CSV (``--data``, default /work/shared/data/help; see its README.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

sys.path.append(str(Path(__file__).resolve().parents[1]))  # after site-packages: see frontier/__init__

from frontier.evaluators.latency import (
    DeviceTransferPredictor,
    SourceMixPredictor,
    fbnet_flops,
    nasbench201_flops,
    ofa_flops,
)

K = 10
SUPPORT_POOL = range(0, 900)  # where the K measured architectures may come from
QUERY_POOL = range(900, 1900)  # what is ranked
TRIM = (0.10, 0.90)  # HELP keeps both pools' 10-90 % latency quantiles on the target device


@dataclass(frozen=True)
class Space:
    """One latency table and its device split."""

    key: str
    title: str
    sources: list[str]
    validation: list[str]
    test: list[str]
    reference: list[int] | None  # HELP's 10 reference architectures (the hardware embedding)
    load: Callable[[Path], tuple[pd.DataFrame, pd.DataFrame, np.ndarray]] = field(repr=False)


def _load_nb201(data: Path) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    table = pd.read_csv(data / "help_latency_nasbench201.csv")
    ops = [[e.split("~")[0] for e in s.strip("|").replace("|+|", "|").split("|")] for s in table["arch_str"]]
    configs = pd.DataFrame(ops, columns=[f"edge{i}" for i in range(6)])
    flops = np.array([nasbench201_flops(s) for s in table["arch_str"]])
    return configs, table.drop(columns=["idx", "arch_str"]), flops


def _load_fbnet(data: Path) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    lat = pd.read_csv(data / "help_latency_fbnet.csv")
    archs = pd.read_csv(data / "fbnet_archs.csv")
    ops = [json.loads(s) for s in archs["arch_str"]]
    configs = pd.DataFrame(ops, columns=[f"layer{i}" for i in range(22)])
    return configs, lat.drop(columns=["idx"]), np.array([fbnet_flops(o) for o in ops])


def _load_ofa(data: Path) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    lat = pd.read_csv(data / "help_latency_ofa.csv")
    archs = pd.read_csv(data / "ofa_archs.csv")
    rows, flops = [], []
    for ks_s, e_s, d_s, r in zip(archs["ks"], archs["e"], archs["d"], archs["r"], strict=True):
        ks, e, d = json.loads(ks_s), json.loads(e_s), json.loads(d_s)
        # One categorical choice per block slot: its kernel and expand ratio, or "none" past the stage depth.
        row: dict[str, Any] = {
            f"block{4 * s + b}": f"k{ks[4 * s + b]}_e{e[4 * s + b]}" if b < d[s] else "none"
            for s in range(5)
            for b in range(4)
        }
        row["resolution"] = int(r)
        rows.append(row)
        flops.append(ofa_flops(ks, e, d, int(r)))
    return pd.DataFrame(rows), lat.drop(columns=["idx"]), np.array(flops)


SPACES = {
    "nasbench201": Space(
        key="nasbench201",
        title="NAS-Bench-201",
        sources=[
            "1080ti_1", "1080ti_32", "1080ti_256", "silver_4114", "silver_4210r",
            "samsung_a50", "pixel3", "essential_ph_1", "samsung_s7",
        ],
        validation=["titanx_1", "titanx_32", "titanx_256", "gold_6240"],
        test=["titan_rtx_256", "gold_6226", "fpga", "pixel2", "raspi4", "eyeriss"],
        reference=[11982, 431, 55, 9, 14451, 8636, 9881, 13479, 6196, 1462],
        load=_load_nb201,
    ),
    # Same devices as NAS-Bench-201; the FBNet table has batch sizes 1/32/64, so 64 stands in for 256.
    "fbnet": Space(
        key="fbnet",
        title="FBNet",
        sources=[
            "1080ti_1", "1080ti_32", "1080ti_64", "silver_4114", "silver_4210r",
            "samsung_a50", "pixel3", "essential_ph_1", "samsung_s7",
        ],
        validation=["titanx_1", "titanx_32", "titanx_64", "gold_6240"],
        test=["titan_rtx_64", "gold_6226", "fpga", "pixel2", "raspi4", "eyeriss"],
        reference=[3328, 3790, 3313, 890, 3052, 2538, 1640, 2514, 457, 2100],
        load=_load_fbnet,
    ),
    # Only 12 GPU settings: two GPUs are sources, one validates, one (V100) is the unseen target.
    "ofa": Space(
        key="ofa",
        title="OFA (MobileNetV3)",
        sources=["2080ti_1", "2080ti_32", "2080ti_64", "titan_xp_1", "titan_xp_32", "titan_xp_64"],
        validation=["titan_rtx_1", "titan_rtx_32", "titan_rtx_64"],
        test=["v100_1", "v100_32", "v100_64"],
        reference=None,
        load=_load_ofa,
    ),
}  # fmt: skip

METHODS = ("flops", "source-mix", "denoised-mix", "device-transfer")
LABELS = {
    "flops": "FLOPs",
    "source-mix": "LSQ mix",
    "denoised-mix": "denoised mix",
    "device-transfer": "ours",
}


def trimmed(pool: range, y: np.ndarray) -> np.ndarray:
    idx = np.asarray(pool)
    lo, hi = np.quantile(y[idx], TRIM)
    return idx[(y[idx] >= lo) & (y[idx] <= hi)]


def spearman(pred: np.ndarray, truth: np.ndarray) -> float:
    """Spearman's rho; a constant prediction ranks nothing and scores 0."""
    if np.ptp(pred) == 0:
        return 0.0
    return float(spearmanr(pred, truth).statistic)


def support_sets(space: Space, y: np.ndarray, seeds: int) -> list[tuple[str, np.ndarray]]:
    """HELP's reference set (if the table has one), then ``seeds`` random draws of K from the trimmed pool."""
    pool = trimmed(SUPPORT_POOL, y)
    out = [("reference", np.asarray(space.reference))] if space.reference else []
    for seed in range(seeds):
        out.append((f"seed{seed}", np.random.default_rng(seed).choice(pool, size=K, replace=False)))
    return out


def targets_of(space: Space, which: str) -> list[tuple[str, list[str]]]:
    """(target device, its source devices): test or validation devices from all sources, or each source
    device as a pseudo-target of the others (leave-one-source-out)."""
    if which == "loso":
        return [(d, [s for s in space.sources if s != d]) for d in space.sources]
    return [(d, space.sources) for d in (space.test if which == "test" else space.validation)]


def run_space(space: Space, data: Path, *, seeds: int, which: str) -> dict[str, Any]:
    configs, lat, flops = space.load(data)
    devices: dict[str, Any] = {}
    cache: dict[tuple[str, ...], dict[str, Any]] = {}
    for device, sources in targets_of(space, which):
        key = tuple(sources)
        if key not in cache:  # one predictor per source set: the denoised sources are computed once
            src = lat[sources]
            cache[key] = {
                "source-mix": SourceMixPredictor(configs, src),
                "denoised-mix": DeviceTransferPredictor(configs, src, residual=False),
                "device-transfer": DeviceTransferPredictor(configs, src),
            }
        predictors = cache[key]
        y = lat[device].to_numpy()
        query = trimmed(QUERY_POOL, y)
        row: dict[str, Any] = {"n_query": len(query), "flops": spearman(flops[query], y[query])}
        for method, predictor in predictors.items():
            scores = {}
            for name, support in support_sets(space, y, seeds):
                predictor.adapt(support, y[support])
                scores[name] = spearman(predictor.predict(query), y[query])
            random_scores = [v for k, v in scores.items() if k.startswith("seed")]
            row[method] = {
                "reference": scores.get("reference"),
                "random_mean": float(np.mean(random_scores)) if random_scores else None,
                "random_std": float(np.std(random_scores)) if random_scores else None,
                "per_draw": scores,
            }
        devices[device] = row
    summary: dict[str, Any] = {"flops": float(np.mean([r["flops"] for r in devices.values()]))}
    for method in METHODS[1:]:
        for part in ("reference", "random_mean"):
            vals = [r[method][part] for r in devices.values() if r[method][part] is not None]
            summary[f"{method}/{part}"] = float(np.mean(vals)) if vals else None
        # Spread of the device-mean over the random draws: how much the headline moves with the draw.
        draws = [k for k in next(iter(devices.values()))[method]["per_draw"] if k.startswith("seed")]
        per_draw = [np.mean([r[method]["per_draw"][k] for r in devices.values()]) for k in draws]
        summary[f"{method}/random_std"] = float(np.std(per_draw)) if per_draw else None
    return {
        "title": space.title,
        "sources": space.sources,
        "targets": [d for d, _ in targets_of(space, which)],
        "reference": space.reference,
        "devices": devices,
        "mean": summary,
    }


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}"


def table(result: dict[str, Any], seeds: int) -> list[str]:
    """Markdown rows: per device, FLOPs proxy, then mix / ours on the reference set and over random draws."""
    head = (
        "| device | FLOPs | LSQ mix (ref) | denoised mix (ref) | **ours (ref)** "
        f"| LSQ mix ({seeds} draws) | denoised mix ({seeds} draws) | **ours ({seeds} draws)** |"
    )
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for device, r in result["devices"].items():
        cells = [_fmt(r["flops"])]
        cells += [_fmt(r[m]["reference"]) for m in METHODS[1:]]
        cells += [_fmt(r[m]["random_mean"]) for m in METHODS[1:]]
        cells[3] = f"**{cells[3]}**"
        cells[6] = f"**{cells[6]}**"
        lines.append(f"| {device} | " + " | ".join(cells) + " |")
    m = result["mean"]
    cells = [_fmt(m["flops"])]
    cells += [_fmt(m[f"{meth}/reference"]) for meth in METHODS[1:]]
    cells += [f"{_fmt(m[f'{meth}/random_mean'])} ± {_fmt(m[f'{meth}/random_std'])}" for meth in METHODS[1:]]
    lines.append("| **mean** | " + " | ".join(f"**{c}**" for c in cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("/work/shared/data/help"))
    parser.add_argument("--seeds", type=int, default=20, help="random K-draws besides the reference set")
    parser.add_argument("--quick", action="store_true", help="3 random draws")
    parser.add_argument("--spaces", nargs="+", choices=list(SPACES), default=list(SPACES))
    parser.add_argument(
        "--targets",
        choices=["test", "validation", "loso"],
        default="test",
        help="unseen test devices (report), validation devices or leave-one-source-out (for tuning)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="output stem (default benchmarks/results/latency_transfer)"
    )
    args = parser.parse_args(argv)
    if not (args.data / "help_latency_nasbench201.csv").exists():
        parser.error(f"--data must be the folder of the HELP CSV tables; {args.data} has none")
    seeds = 3 if args.quick else args.seeds
    default_stem = "latency_transfer" if args.targets == "test" else f"latency_transfer_{args.targets}"
    stem = args.out or Path(__file__).resolve().parent / "results" / default_stem

    start = time.perf_counter()
    results = {}
    md = [
        "# Few-shot latency transfer (HELP protocol)",
        "",
        f"K={K} measured architectures per target device, Spearman on idx 900-1899 trimmed to the 10-90 % "
        f"latency quantiles. 'ref' = HELP's 10 reference architectures; '{seeds} draws' = mean over random "
        f"draws of K from idx 0-899 (seeds 0-{seeds - 1}; ± is the standard deviation of the device mean "
        f"over the draws). Targets: {args.targets} devices.",
        "",
    ]
    for key in args.spaces:
        space = SPACES[key]
        t0 = time.perf_counter()
        res = run_space(space, args.data, seeds=seeds, which=args.targets)
        res["seconds"] = round(time.perf_counter() - t0, 1)
        results[key] = res
        lines = table(res, seeds)
        md += [f"## {space.title}", "", f"Sources: {', '.join(space.sources)}.", "", *lines, ""]
        print(f"\n{space.title} ({res['seconds']} s)")
        for line in lines:
            print(line.replace("**", ""))
    elapsed = time.perf_counter() - start
    md.append(
        f"Reproduce: `.venv/bin/python benchmarks/bench_latency_transfer.py{' --quick' if args.quick else ''}"
        f"{'' if args.targets == 'test' else ' --targets ' + args.targets}` ({elapsed:.0f} s here)."
    )
    payload = {
        "protocol": {
            "K": K,
            "support_pool": [SUPPORT_POOL.start, SUPPORT_POOL.stop - 1],
            "query_pool": [QUERY_POOL.start, QUERY_POOL.stop - 1],
            "trim_quantiles": list(TRIM),
            "seeds": list(range(seeds)),
            "targets": args.targets,
        },
        "spaces": results,
        "seconds": round(elapsed, 1),
    }
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(payload, indent=1) + "\n")
    stem.with_suffix(".md").write_text("\n".join(md) + "\n")
    print(f"\nwrote {stem.with_suffix('.json')} and .md ({elapsed:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
