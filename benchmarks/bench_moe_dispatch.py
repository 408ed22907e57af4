"""Tokens/s of MoELayer's sort-based dispatch against the naive per-expert masked loop, in one run.

Both paths use the same layer (same parameters); the naive loop is ``kernels.moe.moe_reference``. The two
are timed alternately, call by call, so load from other processes on a shared machine hits both alike; each
figure is a median over repeats with its order-statistics 95 % CI (``evaluators.latency.median_ci``), and the
speedup is given as the ratio of medians and as the median of paired per-round ratios. torch is pinned to
``--threads`` intra-op threads (default 1).

    .venv/bin/python benchmarks/bench_moe_dispatch.py             # forward only, ~30-60 s
    .venv/bin/python benchmarks/bench_moe_dispatch.py --backward  # also forward+backward, ~2 min

Writes ``benchmarks/results/moe_dispatch.json``.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # after site-packages: see frontier/__init__

import torch  # noqa: E402

from frontier.evaluators.latency import device_fingerprint, fixed_threads, median_ci  # noqa: E402
from frontier.kernels.moe import MoELayer, moe_reference  # noqa: E402

SHAPES = [(e, k) for e in (4, 8, 16) for k in (1, 2)]


def _time_pair(
    fast: Callable[[], Any], naive: Callable[[], Any], *, repeats: int, time_cap_s: float
) -> tuple[list[float], list[float]]:
    """Alternate the two calls so load from other processes hits both alike; milliseconds per call."""
    for _ in range(2):
        fast()
        naive()
    fast_ms: list[float] = []
    naive_ms: list[float] = []
    start = time.perf_counter()
    while len(fast_ms) < repeats or (time.perf_counter() - start < time_cap_s and len(fast_ms) < 4 * repeats):
        for fn, out in ((fast, fast_ms), (naive, naive_ms)):
            t0 = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t0) * 1e3)
    return fast_ms, naive_ms


def _stats(samples: list[float]) -> dict[str, Any]:
    med, lo, hi = median_ci(samples)
    return {"median_ms": med, "ci_low_ms": lo, "ci_high_ms": hi, "repeats": len(samples)}


def run(
    *,
    d_model: int,
    expert_ffn: int,
    tokens: int,
    threads: int,
    backward: bool,
    repeats: int,
    time_cap_s: float,
) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    with fixed_threads(threads):
        for num_experts, top_k in SHAPES:
            torch.manual_seed(0)
            layer = MoELayer(d_model, expert_ffn, num_experts, top_k=top_k)
            x = torch.randn(tokens, d_model)
            # Sanity: both paths compute the same function before we time them.
            with torch.no_grad():
                err = ((layer(x) - moe_reference(layer, x)).norm() / moe_reference(layer, x).norm()).item()
            row: dict[str, Any] = {"num_experts": num_experts, "top_k": top_k, "rel_err": err}
            naive_fn = functools.partial(moe_reference, layer)
            for mode in ("forward", "train") if backward else ("forward",):
                fast_ms, naive_ms = _time_pair(
                    _step(mode, layer, layer, x),
                    _step(mode, layer, naive_fn, x),
                    repeats=repeats,
                    time_cap_s=time_cap_s,
                )
                fast, naive = _stats(fast_ms), _stats(naive_ms)
                row[mode] = {
                    "dispatch": fast,
                    "naive": naive,
                    "dispatch_tokens_per_s": tokens / (fast["median_ms"] / 1e3),
                    "naive_tokens_per_s": tokens / (naive["median_ms"] / 1e3),
                    "speedup": naive["median_ms"] / fast["median_ms"],
                    # Per-round ratios are paired, so their median is robust to load drifting between rounds.
                    "speedup_paired_median": statistics.median(
                        n / f for f, n in zip(fast_ms, naive_ms, strict=True)
                    ),
                }
            rows.append(row)
            _print_row(row)
    return {
        "benchmark": "moe_dispatch",
        "config": {
            "d_model": d_model,
            "expert_ffn": expert_ffn,
            "tokens": tokens,
            "activation": "swiglu",
            "dtype": "float32",
            "repeats": repeats,
            "time_cap_s": time_cap_s,
        },
        "fingerprint": device_fingerprint(threads=threads),
        "created_unix": time.time(),
        "rows": rows,
    }


def _step(
    mode: str, layer: MoELayer, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor
) -> Callable[[], None]:
    def forward() -> None:
        with torch.inference_mode():
            fn(x)

    def train() -> None:
        layer.zero_grad(set_to_none=True)
        fn(x).square().mean().backward()

    return forward if mode == "forward" else train


def _print_row(row: dict[str, Any]) -> None:
    for mode in ("forward", "train"):
        if mode in row:
            r = row[mode]
            print(
                f"E={row['num_experts']:>2} k={row['top_k']} {mode:<7} "
                f"dispatch {r['dispatch_tokens_per_s']:>10,.0f} tok/s  "
                f"naive {r['naive_tokens_per_s']:>10,.0f} tok/s  speedup x{r['speedup']:.2f} "
                f"(paired x{r['speedup_paired_median']:.2f})",
                flush=True,
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--expert-ffn", type=int, default=512)
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--backward", action="store_true", help="also time forward+backward")
    parser.add_argument("--repeats", type=int, default=7, help="minimum timed calls of each path")
    parser.add_argument("--time-cap-s", type=float, default=2.0, help="keep repeating (up to 4x) until this")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "moe_dispatch.json")
    args = parser.parse_args(argv)
    result = run(
        d_model=args.d_model,
        expert_ffn=args.expert_ffn,
        tokens=args.tokens,
        threads=args.threads,
        backward=args.backward,
        repeats=args.repeats,
        time_cap_s=args.time_cap_s,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
