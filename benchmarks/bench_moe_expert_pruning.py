"""Per-layer (non-uniform) vs uniform expert pruning of a small pretrained MoE, at equal kept-expert budgets.

The model is ``evaluators._tiny_moe``'s Qwen2-MoE (4 MoE layers x 8 experts, top-2, trained on the training
side of the evaluators' content-hash split of ``pydoc_data.topics``), built once and cached under ``--cache``.
Everything goes through the study evaluator ``hf-moe-perplexity`` (a spec with one ``experts`` family): its
calibration windows (training side) give the router statistics, experts are kept by frequency x mean gate
weight, each allocation is the model ``build`` makes for a trial, and perplexity is ``mean_nll`` on its
held-out windows, cut in two halves (validation, test). For each budget B of kept experts (summed over layers)
three allocations are compared:

- ``uniform``: B / 4 experts in every layer;
- ``global-score``: the B highest-scoring experts over all layers (at least top-k per layer), no search;
- ``search``: per-layer counts chosen by an Optuna TPE search (seeded) minimising perplexity on the
  validation half of the held-out topics, with the counts constrained to sum to B.

All are scored on the *other* held-out half (test), which the search never saw. Decode latency (ms per
generated token, greedy, KV cache, batch 1, one thread) is timed for every allocation in the same run,
candidates alternated round by round so machine load hits all alike; medians with order-statistics 95 % CIs.
Resident memory of loading each checkpoint is measured in a fresh process (``measure_load_memory_mb``).

    .venv/bin/python benchmarks/bench_moe_expert_pruning.py  # 2.6 min, quiet 2 cores; +2.5 to train once

Test perplexities are compared paired over the same windows: the ratio exp(mean NLL difference) with a 95 %
bootstrap CI over windows; a win is claimed only when the CI excludes 1.

Writes ``benchmarks/results/moe_expert_pruning.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # after site-packages: see frontier/__init__

import optuna  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from frontier.evaluators import for_spec  # noqa: E402
from frontier.evaluators._hf_causal_lm import mean_nll  # noqa: E402
from frontier.evaluators._tiny_moe import build_tiny_moe  # noqa: E402
from frontier.evaluators.latency import device_fingerprint, fixed_threads, median_ci  # noqa: E402
from frontier.kernels.moe import (  # noqa: E402
    RouterStats,
    count_moe_params,
    export_pruned_moe,
    load_pruned_moe,
    measure_load_memory_mb,
    resident_bytes,
)
from frontier.spaces import Candidate, spec_from_dict  # noqa: E402

SEQ = 128


def _global_score_counts(
    stats: RouterStats, layers: list[int], budget: int, *, top_k: int, experts: int
) -> list[int]:
    """Counts from keeping the ``budget`` best experts over all layers, each layer keeping at least top-k."""
    counts = dict.fromkeys(layers, top_k)
    ranked = sorted(
        ((float(stats.scores(layer)[j]), layer, j) for layer in layers for j in range(experts)),
        key=lambda t: (-t[0], t[1], t[2]),
    )
    taken = {layer: set(stats.select({layer: top_k})[layer]) for layer in layers}
    for _score, layer, j in ranked:
        if sum(counts.values()) >= budget:
            break
        if j not in taken[layer]:
            taken[layer].add(j)
            counts[layer] += 1
    return [counts[layer] for layer in layers]


def _perplexity(model: Any, windows: torch.Tensor) -> float:
    return math.exp(mean_nll(model, windows))


def _window_nlls(model: Any, windows: torch.Tensor) -> list[float]:
    """Each window's mean NLL (``mean_nll`` of that window alone), for paired comparisons."""
    return [mean_nll(model, row[None]) for row in windows]


def _paired_ratio_ci(a: list[float], b: list[float], *, resamples: int = 4000) -> tuple[float, float, float]:
    """Perplexity ratio exp(mean(a - b)) of two models on the same windows, with a 95 % percentile bootstrap
    CI over windows (the windows are the unit of variation, so the pairing removes their difficulty)."""
    diff = torch.tensor(a, dtype=torch.float64) - torch.tensor(b, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    idx = torch.randint(0, len(diff), (resamples, len(diff)), generator=gen)
    means = diff[idx].mean(dim=1)
    lo, hi = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return math.exp(float(diff.mean())), math.exp(lo), math.exp(hi)


def _build(ev: Any, layers: list[int], counts: list[int]) -> Any:
    """The model a study trial of these per-layer counts evaluates (``hf-moe-perplexity``'s ``build``)."""
    return ev.build(Candidate({f"ex.layer_{layer}": n for layer, n in zip(layers, counts, strict=True)}))


def _search(
    ev: Any,
    val: torch.Tensor,
    layers: list[int],
    budget: int,
    *,
    trials: int,
    top_k: int,
) -> tuple[list[int], list[dict[str, Any]]]:
    """Optuna TPE over per-layer counts summing to ``budget``; objective: validation perplexity."""
    experts = int(ev.base.config.num_experts)

    def objective(trial: optuna.Trial) -> float:
        counts: list[int] = []
        for i, _layer in enumerate(layers):
            left, rest = budget - sum(counts), len(layers) - i - 1
            lo, hi = max(top_k, left - experts * rest), min(experts, left - top_k * rest)
            counts.append(lo if lo == hi else trial.suggest_int(f"experts_{i}", lo, hi))
        trial.set_user_attr("counts", counts)
        return _perplexity(_build(ev, layers, counts), val)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=10))
    study.enqueue_trial({f"experts_{i}": budget // len(layers) for i in range(len(layers) - 1)})  # uniform
    study.optimize(objective, n_trials=trials)
    history = [{"counts": t.user_attrs["counts"], "val_ppl": t.value} for t in study.trials]
    return list(study.best_trial.user_attrs["counts"]), history


def _decode_fn(model: Any, prompt: torch.Tensor, new_tokens: int) -> Any:
    def run() -> None:
        with torch.inference_mode():
            out = model(input_ids=prompt, use_cache=True)
            cache = out.cache
            token = out.logits[:, -1:].argmax(-1)
            for _ in range(new_tokens):
                out = model(input_ids=token, cache=cache, use_cache=True)
                cache = out.cache
                token = out.logits[:, -1:].argmax(-1)

    return run


def _paired_decode_ms(
    models: dict[str, Any], prompt: torch.Tensor, *, new_tokens: int, rounds: int
) -> dict[str, list[float]]:
    """ms per decode step (prefill included, amortised) of each model, alternated round by round."""
    fns = {name: _decode_fn(m, prompt, new_tokens) for name, m in models.items()}
    for fn in fns.values():
        fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:  # rotate who goes first
            t0 = time.perf_counter()
            fns[name]()
            samples[name].append((time.perf_counter() - t0) * 1e3 / new_tokens)
    return samples


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.time()
    path = build_tiny_moe(Path(args.cache))
    marker = json.loads((path / "frontier_tiny_moe.json").read_text())
    config = transformers.AutoConfig.from_pretrained(path)
    experts, n_layers = int(config.num_experts), int(config.num_hidden_layers)
    spec = spec_from_dict(
        {
            "name": "bench-moe-expert-pruning",
            "evaluator": {
                "kind": "hf-moe-perplexity",
                "options": {
                    "model": str(path),
                    "seq_len": SEQ,
                    "eval_windows": 2 * args.windows,
                    "calibration_windows": 64,
                    "warm_start": "off",
                },
            },
            "space": [
                {
                    "kind": "family",
                    "name": "ex",
                    "family": "experts",
                    "options": {
                        "num_experts": experts,
                        "num_layers": n_layers,
                        "choices": list(range(1, experts + 1)),
                    },
                }
            ],
            "objectives": [{"name": "perplexity", "direction": "minimize"}],
        }
    )

    with fixed_threads(args.threads):
        ev: Any = for_spec(spec)  # loads the model, its windows and the router statistics
        windows = ev._eval
        if len(windows) < 2 * args.windows:
            raise SystemExit(f"the held-out text gives {len(windows)} windows, fewer than 2 x --windows")
        val, test = windows[: args.windows], windows[args.windows :]
        full, stats = ev.base, ev._stats
        layers = sorted(stats.counts)
        top_k = int(full.config.num_experts_per_tok)
        rows: list[dict[str, Any]] = []
        models: dict[str, Any] = {"full": full}
        full_counts = count_moe_params(full)
        rows.append(
            {
                "budget": experts * len(layers),
                "allocation": "full",
                "counts": [experts] * len(layers),
                "val_ppl": _perplexity(full, val),
                "test_nll": _window_nlls(full, test),
                "total_params": full_counts.total,
                "active_params": full_counts.active,
                "resident_mb": resident_bytes(full) / 2**20,
            }
        )
        searches: dict[str, Any] = {}
        for budget in args.budgets:
            search_start = time.perf_counter()
            best, history = _search(ev, val, layers, budget, trials=args.trials, top_k=top_k)
            searches[str(budget)] = {"seconds": time.perf_counter() - search_start, "trials": history}
            allocations = {
                "uniform": [budget // len(layers)] * len(layers),
                "global-score": _global_score_counts(stats, layers, budget, top_k=top_k, experts=experts),
                "search": best,
            }
            for name, counts in allocations.items():
                model = _build(ev, layers, counts)
                kept = stats.select(dict(zip(layers, counts, strict=True)))
                pc = count_moe_params(model)
                key = f"{name}@{budget}"
                models[key] = model
                rows.append(
                    {
                        "budget": budget,
                        "allocation": name,
                        "counts": counts,
                        "kept": {str(k): v for k, v in kept.items()},
                        "val_ppl": _perplexity(model, val),
                        "test_nll": _window_nlls(model, test),
                        "total_params": pc.total,
                        "active_params": pc.active,
                        "resident_mb": resident_bytes(model) / 2**20,
                    }
                )
                rows[-1]["test_ppl"] = math.exp(statistics.fmean(rows[-1]["test_nll"]))
                print(
                    f"B={budget:>2} {name:<12} counts={counts} test ppl {rows[-1]['test_ppl']:.3f}",
                    flush=True,
                )

        prompt = test.flatten()[:32].view(1, -1)
        samples = _paired_decode_ms(models, prompt, new_tokens=args.new_tokens, rounds=args.rounds)
    rows[0]["test_ppl"] = math.exp(statistics.fmean(rows[0]["test_nll"]))
    uniform = {r["budget"]: r for r in rows if r["allocation"] == "uniform"}
    for row in rows:
        if row["allocation"] not in ("full", "uniform"):
            ratio, lo, hi = _paired_ratio_ci(row["test_nll"], uniform[row["budget"]]["test_nll"])
            row["test_ppl_ratio_vs_uniform"] = {"ratio": ratio, "ci_low": lo, "ci_high": hi}
    for row in rows:
        key = "full" if row["allocation"] == "full" else f"{row['allocation']}@{row['budget']}"
        med, lo, hi = median_ci(samples[key])
        row["decode_ms_per_token"] = {"median": med, "ci_low": lo, "ci_high": hi, "rounds": len(samples[key])}
        if key != "full":
            row["decode_ratio_vs_uniform_paired_median"] = statistics.median(
                a / b for a, b in zip(samples[key], samples[f"uniform@{row['budget']}"], strict=True)
            )

    # Export and reload each checkpoint, then measure its load in a fresh process.
    out_dir = Path(args.cache).parent / "exports"
    for row in rows:
        key = "full" if row["allocation"] == "full" else f"{row['allocation']}@{row['budget']}"
        target = out_dir / key.replace("@", "-")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # non-uniform exports warn by design; recorded below instead
            exported = export_pruned_moe(models[key], target)
        reloaded = load_pruned_moe(target).eval()
        with torch.no_grad():
            diff = (reloaded(input_ids=prompt).logits - models[key](input_ids=prompt).logits).abs().max()
        row["export"] = {"stock_transformers": exported["stock"], "reload_max_abs_diff": float(diff)}
        row["load_memory"] = measure_load_memory_mb(target)
    return {
        "benchmark": "moe_expert_pruning",
        "model": {
            "checkpoint": str(path),
            "recipe": marker["recipe"],
            "train_s": marker["train_s"],
            "heldout_ppl": marker["heldout_ppl"],
        },
        "config": {
            "criterion": "frequency x mean gate weight (SEER-MoE heavy-hitters, gate-weighted)",
            "calibration_tokens": stats.tokens,
            "val_windows": len(val),
            "test_windows": len(test),
            "seq_len": SEQ,
            "trials": args.trials,
            "threads": args.threads,
            "decode": {"prompt_tokens": 32, "new_tokens": args.new_tokens, "rounds": args.rounds, "batch": 1},
        },
        "router_scores": {str(layer): [round(float(x), 5) for x in stats.scores(layer)] for layer in layers},
        "rows": rows,
        "searches": searches,
        "fingerprint": device_fingerprint(threads=args.threads),
        "created_unix": time.time(),
        "wall_s": time.time() - started,
    }


def markdown(result: dict[str, Any]) -> str:
    rows = result["rows"]
    lines = [
        "# Expert pruning: per-layer (searched) vs uniform, equal kept-expert budget",
        "",
        f"Model: tiny Qwen2-MoE (4 MoE layers x 8 experts, top-2), trained {result['model']['train_s']} s on "
        f"the training side of `pydoc_data.topics`; held-out perplexity "
        f"{result['model']['heldout_ppl']:.3f} (bytes). "
        f"Criterion: {result['config']['criterion']}. Search: Optuna TPE, {result['config']['trials']} "
        f"trials on the validation half of `hf-moe-perplexity`'s held-out windows "
        f"({result['config']['val_windows']} x {result['config']['seq_len']} bytes); perplexities below "
        f"are on the test half ({result['config']['test_windows']} windows), which the search never saw. "
        f"Each model is the one a study trial builds (`hf-moe-perplexity`'s `build`). "
        f"Decode: ms per generated token (greedy, KV cache, batch 1, "
        f"{result['config']['threads']} thread), medians over {result['config']['decode']['rounds']} "
        f"alternated rounds with 95 % CIs. Load memory: RSS growth and peak of loading the exported "
        f"checkpoint in a fresh process.",
        "",
        "| budget | allocation | experts per layer | val ppl | test ppl | test ppl / uniform [95 % CI] "
        "| total params | active params | decode ms/token | decode / uniform (paired) | load RSS / peak MB "
        "| stock ckpt |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        d = r["decode_ms_per_token"]
        ratio = r.get("decode_ratio_vs_uniform_paired_median")
        q = r.get("test_ppl_ratio_vs_uniform")
        q_text = "" if q is None else f"{q['ratio']:.3f} [{q['ci_low']:.3f}, {q['ci_high']:.3f}]"
        lines.append(
            f"| {r['budget']} | {r['allocation']} | {r['counts']} | {r['val_ppl']:.3f} | {r['test_ppl']:.3f} "
            f"| {q_text} | {r['total_params']:,} | {r['active_params']:,} "
            f"| {d['median']:.2f} [{d['ci_low']:.2f}, {d['ci_high']:.2f}] "
            f"| {'' if ratio is None else f'{ratio:.3f}'} "
            f"| {r['load_memory']['rss_mb']:.1f} / {r['load_memory']['peak_mb']:.1f} "
            f"| {'yes' if r['export']['stock_transformers'] else 'no'} |"
        )
    lines.append("")
    for budget in sorted({r["budget"] for r in rows if r["allocation"] != "full"}):
        by = {r["allocation"]: r for r in rows if r["budget"] == budget}
        u, s, g = by["uniform"], by["search"], by["global-score"]
        lines.append(
            f"- B={budget}: searched per-layer counts {s['counts']} give test perplexity "
            f"{s['test_ppl']:.3f} vs uniform {u['test_ppl']:.3f} "
            f"({100 * (s['test_ppl'] / u['test_ppl'] - 1):+.1f} %); the unsearched global-score allocation "
            f"{g['counts']} gives {g['test_ppl']:.3f} "
            f"({100 * (g['test_ppl'] / u['test_ppl'] - 1):+.1f} %). Decode time, searched / uniform (paired "
            f"median): {s['decode_ratio_vs_uniform_paired_median']:.3f}."
        )
    lines += ["", _conclusion(rows), ""]
    return "\n".join(lines)


def _conclusion(rows: list[dict[str, Any]]) -> str:
    """Whether per-layer allocation wins, read off the rows: the paired test-perplexity ratio's CI, decode
    CIs overlapping."""
    parts: list[str] = []
    for budget in sorted({r["budget"] for r in rows if r["allocation"] != "full"}, reverse=True):
        by = {r["allocation"]: r for r in rows if r["budget"] == budget}
        u, s = by["uniform"], by["search"]
        ud, sd = u["decode_ms_per_token"], s["decode_ms_per_token"]
        overlap = sd["ci_low"] <= ud["ci_high"] and ud["ci_low"] <= sd["ci_high"]
        q = s["test_ppl_ratio_vs_uniform"]
        if q["ci_high"] < 1:
            quality = "better"
        elif q["ci_low"] > 1:
            quality = "worse"
        else:
            quality = "not distinguishable from uniform (the 95 % CI of the ratio holds 1)"
        parts.append(
            f"at B={budget} the searched allocation is {quality} on test perplexity "
            f"({s['test_ppl']:.3f} vs {u['test_ppl']:.3f}, ratio {q['ratio']:.3f} "
            f"[{q['ci_low']:.3f}, {q['ci_high']:.3f}], paired over windows) and its decode time is "
            + (
                "indistinguishable from uniform's (95 % CIs overlap)"
                if overlap
                else "different from uniform's"
            )
        )
    return (
        "**Verdict:** "
        + "; ".join(parts)
        + ". Total and active parameters are equal within a budget (same kept experts, same top-k), so a "
        "latency difference is not expected."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default=str(ROOT / "runs" / "moe_expert_pruning" / "tiny-moe"))
    parser.add_argument("--budgets", type=int, nargs="+", default=[16, 12])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--windows", type=int, default=128, help="held-out windows per half (val, test)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "moe_expert_pruning"))
    args = parser.parse_args()
    result = run(args)
    Path(args.out).with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    Path(args.out).with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
