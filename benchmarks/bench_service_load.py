"""Load on the study service: N tiny tabular studies submitted at once; none may be lost.

Starts ``frontier serve`` on a free port in a temp dir (SQLite registry and storage), submits ``--studies``
specs concurrently from ``--owners`` owners, and while they queue and run polls ``GET /studies/{id}`` from
``--pollers`` concurrent clients, timing every request. At the end every study must have succeeded with its
full budget of trials. Reports submit and GET latency percentiles and the wall time.

    .venv/bin/python benchmarks/bench_service_load.py                 # 50 studies x 2 trials, ~5-8 min
    .venv/bin/python benchmarks/bench_service_load.py --studies 10    # a quick look

Writes ``benchmarks/results/service_load.json``. The service and its workers are stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _table(path: Path) -> None:
    rows = ["x,kind,f1,f2,cost"]
    shift = {"a": 0.0, "b": 0.3, "c": 0.6}
    for x in range(10):
        for kind, s in shift.items():
            rows.append(f"{x},{kind},{x / 9 + s},{(1 - x / 9) ** 2 + s},{10 * x}")
    path.write_text("\n".join(rows) + "\n")


def _spec(name: str, table: Path, n_trials: int) -> dict[str, Any]:
    return {
        "name": name,
        "evaluator": {
            "kind": "tabular",
            "options": {"table": str(table), "metrics": {"f1": "f1", "f2": "f2", "cost": "cost"}},
        },
        "space": [
            {"name": "x", "kind": "int", "low": 0, "high": 9},
            {"name": "kind", "kind": "categorical", "choices": ["a", "b", "c"]},
        ],
        "objectives": [{"name": "f1", "direction": "minimize"}, {"name": "f2", "direction": "minimize"}],
        "search": {"sampler": "random", "n_trials": n_trials, "seed": 0, "concurrency": 1},
    }


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_ms": round(_pct(values, 0.50), 2),
        "p90_ms": round(_pct(values, 0.90), 2),
        "p99_ms": round(_pct(values, 0.99), 2),
        "max_ms": round(max(values) * 1000, 2) if values else float("nan"),
        "mean_ms": round(statistics.fmean(values) * 1000, 2) if values else float("nan"),
    }


async def _load(
    url: str, tokens: list[str], specs: list[dict[str, Any]], pollers: int, timeout: float
) -> dict:
    limits = httpx.Limits(max_connections=100)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def submit(i: int, spec: dict[str, Any]) -> tuple[str, float, int]:
            t = time.perf_counter()
            r = await client.post(
                "/studies", json=spec, headers={"Authorization": f"Bearer {tokens[i % len(tokens)]}"}
            )
            return (r.json().get("id", ""), time.perf_counter() - t, r.status_code)

        t0 = time.perf_counter()
        submitted = await asyncio.gather(*(submit(i, s) for i, s in enumerate(specs)))
        codes = [c for _, _, c in submitted]
        ids = [(sid, tokens[i % len(tokens)]) for i, (sid, _, _) in enumerate(submitted)]
        get_lat: list[float] = []
        states: dict[str, dict[str, Any]] = {}
        final = {"succeeded", "failed", "cancelled"}
        deadline = time.monotonic() + timeout

        async def poller(k: int) -> None:
            rng = random.Random(k)
            while time.monotonic() < deadline and len(states) < len(ids):
                sid, tok = rng.choice(ids)
                t = time.perf_counter()
                r = await client.get(f"/studies/{sid}", headers={"Authorization": f"Bearer {tok}"})
                get_lat.append(time.perf_counter() - t)
                body = r.json()
                if r.status_code != 200:
                    raise RuntimeError(f"GET /studies/{sid} -> {r.status_code}: {body}")
                if body["state"] in final:
                    states[sid] = body
                await asyncio.sleep(0.05)

        async def sweeper() -> None:  # make sure every study is seen in its final state
            while time.monotonic() < deadline and len(states) < len(ids):
                for sid, tok in ids:
                    if sid in states:
                        continue
                    r = await client.get(f"/studies/{sid}", headers={"Authorization": f"Bearer {tok}"})
                    if r.json()["state"] in final:
                        states[sid] = r.json()
                await asyncio.sleep(2)

        await asyncio.gather(sweeper(), *(poller(k) for k in range(pollers)))
        wall = time.perf_counter() - t0
    return {"codes": codes, "submit_lat": [s for _, s, _ in submitted], "get_lat": get_lat, "states": states,
            "ids": [i for i, _ in ids], "wall_s": wall}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=50)
    ap.add_argument("--trials", type=int, default=2)
    ap.add_argument("--owners", type=int, default=5)
    ap.add_argument("--pollers", type=int, default=8)
    ap.add_argument("--max-concurrent", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=1500)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "service_load.json")
    args = ap.parse_args()

    home = Path(tempfile.mkdtemp(prefix="frontier-load-"))
    data = home / "data"
    data.mkdir()
    _table(data / "toy.csv")
    tokens = {f"load-token-{i:03d}": f"owner{i}" for i in range(args.owners)}
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FRONTIER_")},
        "PYTHONPATH": str(ROOT),
        "RAY_USAGE_STATS_ENABLED": "0",
        "FRONTIER_RUN_DIR": str(home / "run"),
        "FRONTIER_TOKENS": json.dumps(tokens),
        "FRONTIER_ALLOWED_ROOTS": json.dumps([str(data)]),
        "FRONTIER_MAX_CONCURRENT_STUDIES": str(args.max_concurrent),
    }
    cmd = [
        sys.executable,
        "-c",
        "from frontier.services._cli import main; main()",
        "serve",
        "--port",
        str(port),
    ]
    log = (home / "serve.log").open("wb")
    proc = subprocess.Popen(
        cmd, cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        specs = [_spec(f"load{i:03d}", data / "toy.csv", args.trials) for i in range(args.studies)]
        res = asyncio.run(_load(url, list(tokens), specs, args.pollers, args.timeout))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    states = res["states"]
    ok = [s for s in states.values() if s["state"] == "succeeded" and s["trials"]["done"] == args.trials]
    lost = [sid for sid in res["ids"] if sid not in states]
    result = {
        "benchmark": "service_load",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "accepted": sum(1 for c in res["codes"] if c == 201),
        "succeeded_full_budget": len(ok),
        "not_finished_or_lost": lost,
        "failed": [
            s["id"] + ": " + (s.get("error") or "") for s in states.values() if s["state"] != "succeeded"
        ],
        "wall_s": round(res["wall_s"], 1),
        "submit_latency": _summary(res["submit_lat"]),
        "get_study_latency_under_load": _summary(res["get_lat"]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    shutil.rmtree(home, ignore_errors=True)
    if result["accepted"] != args.studies or len(ok) != args.studies:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
