"""Benchmark Frontier's packed-weight CPU kernels against float32 ``nn.Linear`` (and torchao, if installed).

    .venv/bin/python benchmarks/bench_kernels.py --quick          # ~1 min on 2 cores
    .venv/bin/python benchmarks/bench_kernels.py                  # more repeats, batches 16 and 64, int4 g32
    .venv/bin/python benchmarks/bench_kernels.py --section widths --threads 1   # ~1 min: the width sweep

For each Linear shape and batch size every variant is timed round-robin (fp32, int8, int4, ...), ``--repeats``
rounds of ``--inner`` calls each, so background load hits all variants alike; the report gives the median per
call, the speedup over fp32 measured in the same rounds, and that speedup as a fraction of the bytes-bound
limit (4x for 8-bit and 8x for 4-bit weights: the ratio of weight bytes streamed).

The ``widths`` section sweeps the code width (3, 4, 5 and 8 bits, group size 32, symmetric: the formats a
mixed-precision allocation picks from) on MiniLM's shapes at 1 row and at 16 rows (a 16-token sequence,
batch 1), so the report shows whether latency depends on the width. Results go to
``benchmarks/results/kernels.json`` (``results`` and ``widths``; one ``--section`` alone writes
``kernels_<section>.json``).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))  # after site-packages: see frontier/__init__

from frontier import kernels  # noqa: E402

SHAPES: dict[str, tuple[int, int]] = {  # name -> (in_features, out_features)
    "square-4096": (4096, 4096),
    "minilm-qkvo-384x384": (384, 384),
    "minilm-ffn-up-384x1536": (384, 1536),
    "minilm-ffn-down-1536x384": (1536, 384),
}


@dataclass(frozen=True)
class Variant:
    name: str
    bits_limit: float  # bytes-bound speedup limit vs fp32 (32 / nominal bits); 1.0 for fp32
    build: Callable[[nn.Linear], nn.Module]


@dataclass
class Row:
    shape: str
    in_features: int
    out_features: int
    batch: int
    variant: str
    kernel: str
    median_us: float
    p10_us: float
    p90_us: float
    speedup_vs_fp32: float
    bytes_bound_limit: float
    fraction_of_limit: float
    max_rel_error: float


def _quantized(bits: int, group_size: int | None) -> Callable[[nn.Linear], nn.Module]:
    def build(linear: nn.Linear) -> nn.Module:
        layer = kernels.QuantizedLinear.from_linear(
            linear, kernels.WeightOnlyQuantConfig(bits, group_size=group_size, symmetric=True)
        )
        return layer

    return build


def _torchao_variants() -> list[Variant]:
    try:
        import torchao
        from torchao.quantization import Int8WeightOnlyConfig, quantize_
    except Exception as exc:  # ImportError, or a torchao build that does not match this torch
        print(f"torchao not installed — skipped ({type(exc).__name__}: {exc})")
        return []

    def build_with(config_factory: Callable[[], Any]) -> Callable[[nn.Linear], nn.Module]:
        def build(linear: nn.Linear) -> nn.Module:
            seq = nn.Sequential(linear)
            quantize_(seq, config_factory())
            return seq

        return build

    def int4_config() -> Any:
        try:  # torchao >= 0.15: the CPU (tinygemm) int4 path lives in the prototype namespace
            from torchao.prototype.quantization.int4.inference_workflow import PrototypeInt4WeightOnlyConfig

            return PrototypeInt4WeightOnlyConfig(group_size=128)
        except ImportError:  # older torchao: the layout argument selects the CPU kernel
            from torchao.dtypes import Int4CPULayout
            from torchao.quantization import Int4WeightOnlyConfig

            return Int4WeightOnlyConfig(group_size=128, layout=Int4CPULayout())

    print(f"torchao {torchao.__version__} found: adding its CPU int8 / int4-g128 weight-only configs")
    return [
        Variant("torchao-int8-wo", 4.0, build_with(Int8WeightOnlyConfig)),
        Variant("torchao-int4-g128", 8.0, build_with(int4_config)),
    ]


def _time_round_robin(
    fns: dict[str, Callable[[], Any]], *, repeats: int, inner: int
) -> dict[str, list[float]]:
    for fn in fns.values():  # warm-up: numba compile/cache load, allocator, caches
        for _ in range(3):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            samples[name].append((time.perf_counter() - t0) / inner * 1e6)
    return samples


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]


WIDTH_SHAPES = {name: shape for name, shape in SHAPES.items() if name.startswith("minilm")}
WIDTH_BATCHES = [1, 16]


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load_before = os.getloadavg()
    rows: list[Row] = []
    width_rows: list[Row] = []
    if args.section in ("all", "main"):
        variants = [
            Variant("fp32-linear", 1.0, lambda linear: linear),
            Variant("int8-per-channel", 4.0, _quantized(8, None)),
            Variant("int4-g128", 8.0, _quantized(4, 128)),
        ]
        if not args.quick:
            variants.append(Variant("int4-g32", 8.0, _quantized(4, 32)))
        variants += _torchao_variants()
        batches = [1, 8] if args.quick else [1, 8, 16, 64]
        rows = _measure(SHAPES, variants, batches, args)
    if args.section in ("all", "widths"):
        print("\n== code widths (group size 32, symmetric) ==")
        width_variants = [Variant("fp32-linear", 1.0, lambda linear: linear)] + [
            Variant(f"int{bits}-g32", 32 / bits, _quantized(bits, 32)) for bits in (3, 4, 5, 8)
        ]
        width_rows = _measure(WIDTH_SHAPES, width_variants, WIDTH_BATCHES, args)
    return {
        "meta": {
            "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "quick": args.quick,
            "section": args.section,
            "threads": args.threads,
            "repeats": args.repeats,
            "torch": torch.__version__,
            "numba": _version("numba"),
            "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
        },
        "results": [asdict(r) for r in rows],
        "widths": [asdict(r) for r in width_rows],
    }


def _measure(
    shapes: dict[str, tuple[int, int]], variants: list[Variant], batches: list[int], args: argparse.Namespace
) -> list[Row]:
    rows: list[Row] = []
    for shape_name, (in_f, out_f) in shapes.items():
        linear = nn.Linear(in_f, out_f).eval()
        modules: dict[str, nn.Module] = {}
        for v in variants:  # every variant starts from the same float weights
            try:
                modules[v.name] = v.build(_copy(linear))
            except Exception as exc:
                print(f"  {v.name}: could not build for {shape_name} ({type(exc).__name__}: {exc}) — skipped")
        for batch in batches:
            x = torch.randn(batch, in_f)
            with torch.inference_mode():
                ref = linear(x)
                fns: dict[str, Callable[[], Any]] = {
                    name: functools.partial(m, x) for name, m in modules.items()
                }
                small = in_f * out_f < 1_000_000
                inner = args.inner * (20 if small else 1)
                samples = _time_round_robin(fns, repeats=args.repeats, inner=inner)
                fp32 = statistics.median(samples["fp32-linear"])
                for v in variants:
                    if v.name not in modules:
                        continue
                    med = statistics.median(samples[v.name])
                    out = modules[v.name](x)
                    err = float(((out - ref).abs().max() / ref.abs().max()).item())
                    speedup = fp32 / med
                    rows.append(
                        Row(
                            shape=shape_name,
                            in_features=in_f,
                            out_features=out_f,
                            batch=batch,
                            variant=v.name,
                            kernel=getattr(modules[v.name], "kernel", "torch"),
                            median_us=round(med, 2),
                            p10_us=round(_pct(samples[v.name], 0.1), 2),
                            p90_us=round(_pct(samples[v.name], 0.9), 2),
                            speedup_vs_fp32=round(speedup, 3),
                            bytes_bound_limit=v.bits_limit,
                            fraction_of_limit=round(speedup / v.bits_limit, 3),
                            max_rel_error=err,
                        )
                    )
            _print_block(shape_name, batch, [r for r in rows if r.shape == shape_name and r.batch == batch])
    return rows


def _copy(linear: nn.Linear) -> nn.Linear:
    new = nn.Linear(linear.in_features, linear.out_features)
    new.load_state_dict(linear.state_dict())
    return new.eval().requires_grad_(False)


def _version(mod: str) -> str | None:
    try:
        return str(__import__(mod).__version__)
    except ImportError:
        return None


def _print_block(shape: str, batch: int, rows: list[Row]) -> None:
    print(f"\n{shape}  batch={batch}")
    print(
        f"  {'variant':<20} {'kernel':<15} {'median us':>10} {'p10-p90 us':>17} {'vs fp32':>8} "
        f"{'of limit':>9}"
    )
    for r in rows:
        limit = f"{r.fraction_of_limit:.0%} of {r.bytes_bound_limit:g}x" if r.bytes_bound_limit > 1 else ""
        spread = f"{r.p10_us:.1f}-{r.p90_us:.1f}"
        print(
            f"  {r.variant:<20} {r.kernel:<15} {r.median_us:>10.1f} {spread:>17} "
            f"{r.speedup_vs_fp32:>7.2f}x {limit:>9}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="batches 1 and 8, fewer repeats")
    parser.add_argument(
        "--section",
        choices=["all", "main", "widths"],
        default="all",
        help="main: fp32 vs int8/int4 (and torchao); widths: 3/4/5/8-bit g32, MiniLM shapes, 1 and 16 rows",
    )
    parser.add_argument(
        "--threads", type=int, default=min(2, os.cpu_count() or 1), help="torch/numba threads"
    )
    parser.add_argument("--repeats", type=int, default=None, help="timing rounds per variant (median taken)")
    parser.add_argument("--inner", type=int, default=5, help="calls per round (x20 for small shapes)")
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="default: results/kernels.json, kernels_<section>.json for one",
    )
    args = parser.parse_args(argv)
    if args.output is None:
        name = "kernels.json" if args.section == "all" else f"kernels_{args.section}.json"
        args.output = REPO / "benchmarks" / "results" / name
    if args.repeats is None:
        args.repeats = 15 if args.quick else 40
    result = run(args)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(args.output)
    load = result["meta"]["loadavg_before"][0], result["meta"]["loadavg_after"][0]
    print(f"\nwrote {args.output} (1-min load average {load[0]:.2f} before, {load[1]:.2f} after)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
