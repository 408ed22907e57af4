"""Markdown table and plot of a harness run."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from benchmarks.search_quality._harness import Results, at_budget, summarise

_PEER_NOTES = {
    "gp": "Optuna's `GPSampler` (log-EHVI, constraint-aware).",
    "autosampler": "OptunaHub AutoSampler's published rule, re-implemented (the package fetches its code "
    "from GitHub at run time): here multivariate TPE with the constant liar after one random trial "
    "(categorical spaces, < 250 trials).",
    "morea": "Syne Tune's multi-objective regularized evolution (no constraints in Syne Tune: constrained "
    "problems give it the objectives only).",
    "ehvi": "Syne Tune's BoTorch EHVI searcher, `double_precision=False` (as shipped it fails with "
    "BoTorch 0.18: float64 model, float32 observations); losses normalised over the table, shifted by -3 "
    "to suit its fixed reference point.",
}


def _fmt(stats: dict[str, Any] | None, key: str = "hv_ratio") -> str:
    if stats is None:
        return "-"
    s = stats[key]
    if not math.isfinite(s["median"]):
        return "inf"
    return f"{s['median']:.3f} [{s['q25']:.2f}-{s['q75']:.2f}]"


def _wall(results: Results) -> str:
    parts = results.config.get("wall_seconds_per_part")
    if parts:
        return " + ".join(f"{s / 60:.1f} min" for s in parts) + " (separate processes, run side by side)"
    return f"{results.seconds / 60:.1f} min"


def markdown(results: Results) -> str:
    cfg = results.config
    summary = summarise(results)
    top = max(cfg["budgets"])
    goal_n = int(cfg["goal"].split("@")[1].split()[0])
    auto_cols = [n for n in cfg["auto_budgets"]]
    lines = [
        "# Search quality: `auto` vs the baselines and peers",
        "",
        f"Engine: {cfg['engine']}. Seeds: {len(cfg['seeds'])} ({cfg['seeds'][0]}..{cfg['seeds'][-1]}). "
        f"Wall time: {_wall(results)}.",
        "",
    ]
    if cfg.get("versions"):
        lines += ["Versions: " + ", ".join(f"{k} {v}" for k, v in cfg["versions"].items()) + ".", ""]
    lines += [
        "HV ratio = hypervolume of the feasible candidates found / that of the table's true front, "
        "objectives min-max normalised over the table, reference point at the median candidate in each "
        "objective. Cells: median [25th-75th percentile] over seeds. Noisy tables: the searcher observes "
        "one seed's row, the score uses the mean over seeds. IGD+ is measured to the whole true front.",
        "",
        f"Goal: {cfg['goal']}.",
        "",
    ]
    peers = [b for b in cfg["baselines"] if b in _PEER_NOTES]
    if peers:
        lines += ["Peers (same tables, scoring and seeds; `benchmarks/search_quality/_peers.py`):", ""]
        lines += [f"- `{b}`: {_PEER_NOTES[b]}" for b in peers]
        if cfg.get("slow_peers"):
            lines.append(
                f"- {', '.join(f'`{b}`' for b in cfg['slow_peers'])}: seconds per suggestion, so run on the "
                f"noisy problems only, seeds {cfg.get('slow_peer_seeds')}, {cfg.get('peer_time_limit_s')} s "
                "per run (checked before each suggestion, so one suggestion may overrun it)."
            )
        lines.append("")
    if any("AnalogNAS" in p["note"] for p in results.problems.values()):
        lines += [
            "Noisy NAS-Bench-201 accuracy: per-seed NAS-Bench-201 training accuracies ship in no PyPI "
            "package "
            "(`nas-bench-201` 2.1 and `nats-bench` 1.8 ship only their APIs; the tables are multi-GB "
            "downloads). The substitute is AnalogNAS-Bench (`analog-nasbench==0.1.3`): for every NB201 cell, "
            "CIFAR-10 accuracy on analog hardware after 1 h / 1 day / 30 days of drift as mean +- sd over "
            "repeated noisy inference runs. Each cell gets 3 draws from N(mean, sd) as its 'seeds'; the "
            "searcher observes one per evaluation, the score uses their mean. Latency: HELP's measurements.",
            "",
        ]
    if cfg.get("reused"):
        pairs = sorted({p.split(":")[1] for p in cfg["reused"]})
        lines += [
            f"Reused: {', '.join(pairs)} on the problems of the previous run come from that run's JSON "
            "(same Optuna, same seeds; rerunning three of them in process reproduced their trials row for "
            "row), since their code did not change.",
            "",
        ]
    for heldout in (False, True):
        names = [n for n in cfg["problems"] if results.problems[n]["heldout"] == heldout]
        if not names:
            continue
        lines += [f"## {'Held-out' if heldout else 'Development'} problems", ""]
        head = [f"{s}@{top}" for s in cfg["baselines"]] + [f"auto@{n}" for n in auto_cols]
        lines.append(
            "| problem | " + " | ".join(head) + f" | best baseline@{top} | auto@{goal_n} | goal met |"
        )
        lines.append("|---" * (len(head) + 4) + "|")
        met = 0
        for name in names:
            s = summary[name]
            cells = [_fmt(s["samplers"].get(h)) for h in head]
            goal = s.get("goal")
            if goal is None:
                lines.append(f"| {name} | " + " | ".join(cells) + " | - | - | - |")
                continue
            met += goal["met"]
            lines.append(
                f"| {name} | "
                + " | ".join(cells)
                + f" | {goal['best_baseline']} {goal['best_baseline_median']:.3f}"
                + f" | {goal['auto_median']:.3f} | "
                + ("yes" if goal["met"] else "**no**")
                + " |"
            )
        lines += [
            "",
            f"Goal met on {met} of {len(names)} {'held-out' if heldout else 'development'} problems.",
            "",
        ]
        lines += _unfinished(results, summary, names)
        lines += ["IGD+ (normalised; lower is better), median [IQR]:", ""]
        lines.append("| problem | " + " | ".join(head) + " |")
        lines.append("|---" * (len(head) + 1) + "|")
        for name in names:
            s = summary[name]
            lines.append(
                f"| {name} | " + " | ".join(_fmt(s["samplers"].get(h), "igd_plus") for h in head) + " |"
            )
        lines.append("")
    lines += [
        "## Problems",
        "",
        "| problem | set | objectives | constraints | candidates | true front in box | note |",
    ]
    lines.append("|---|---|---|---|---|---|---|")
    for name, p in results.problems.items():
        lines.append(
            f"| {name} | {'held-out' if p['heldout'] else 'dev'} | {', '.join(p['objectives'])} | "
            f"{', '.join(p['constraints']) or '-'} | {p['n_candidates']} ({p['n_feasible']} feasible) | "
            f"{p['front_in_box']} | {p['note']} |"
        )
    if results.overhead:
        n = results.config.get("overhead_trials", "N")
        lines += [
            "",
            "## `auto` sampler overhead",
            "",
            f"Time of one ask (suggestion of all parameters) in a {n}-trial in-process study on SQLite "
            "storage, seed 0, on the 2 shared cores.",
            "",
        ]
        lines += [
            f"| problem | ask at trial {n} (ms) | max of the last 10 (ms) | mean (ms) |",
            "|---|---|---|---|",
        ]
        for name, o in results.overhead.items():
            lines.append(
                f"| {name} | {o['ask_s_at_last_trial'] * 1000:.0f} | {o['ask_s_max_last_10'] * 1000:.0f} | "
                f"{o['ask_s_mean'] * 1000:.0f} |"
            )
    return "\n".join(lines) + "\n"


def _unfinished(results: Results, summary: dict[str, Any], names: list[str]) -> list[str]:
    """Peers cut by their time limit: how far they got, and their HV ratio there (not ranked)."""
    cfg = results.config
    out = []
    for name in names:
        for sampler, done in summary[name].get("unfinished", {}).items():
            runs = [
                r
                for r in results.runs
                if r["problem"] == name and r["sampler"] == sampler and not r.get("finished", True)
            ]
            hv = [r["hv_ratio"][-1] for r in runs]
            asks = [r["last_ask_s"] for r in runs if r.get("last_ask_s") is not None]
            out.append(
                f"- {name}: `{sampler}` did not reach {max(cfg['budgets'])} trials within "
                f"{cfg.get('peer_time_limit_s')} s on {len(done)} of {len(runs)} seeds "
                f"(reached {min(done)}-{max(done)} trials, HV ratio there {min(hv):.3f}-{max(hv):.3f}"
                + (f", last suggestion {max(asks):.1f} s" if asks else "")
                + ")"
            )
    if out:
        out = ["Peers cut by the time limit (not ranked; their cells above are '-'):", "", *out, ""]
    return out


def plot(results: Results, path: Path) -> None:
    """Median HV ratio vs evaluations per problem (baselines as curves, ``auto`` per budget with IQR)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cfg = results.config
    names = cfg["problems"]
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False)
    top = max(cfg["budgets"])
    colours = {
        "random": "tab:gray",
        "tpe": "tab:blue",
        "nsga2": "tab:green",
        "auto": "tab:red",
        "autosampler": "tab:purple",
        "morea": "tab:orange",
        "gp": "tab:olive",
        "ehvi": "tab:brown",
    }
    styles = {"nsga2": "-.", "random": ":"}  # NSGA-II's first generation is random: the curves overlap
    for ax, name in zip(axes.flat, names, strict=False):
        for sampler in cfg["baselines"]:
            runs = [
                r
                for r in results.runs
                if r["problem"] == name and r["sampler"] == sampler and r["n_trials"] == top
            ]
            if not runs:
                continue
            # A run cut by its time limit is drawn only as far as every seed got.
            done = min(r.get("n_done", r["n_trials"]) for r in runs)
            keep = [i for i, n in enumerate(runs[0]["points"]) if n <= done]
            if not keep:
                continue
            curves = np.asarray([[r["hv_ratio"][i] for i in keep] for r in runs])
            ax.plot(
                [runs[0]["points"][i] for i in keep],
                np.median(curves, axis=0),
                label=sampler,
                color=colours.get(sampler),
                ls=styles.get(sampler, "-"),
            )
        auto_top = [
            r
            for r in results.runs
            if r["problem"] == name and r["sampler"] == "auto" and r["n_trials"] == top
        ]
        if auto_top:
            curves = np.asarray([r["hv_ratio"] for r in auto_top])
            ax.plot(auto_top[0]["points"], np.median(curves, axis=0), color="tab:red", alpha=0.4, ls="--")
        for n in cfg["auto_budgets"]:
            hv = at_budget(results, name, "auto", n)
            if hv:
                med, lo, hi = np.median(hv), np.quantile(hv, 0.25), np.quantile(hv, 0.75)
                ax.errorbar(
                    [n],
                    [med],
                    yerr=[[med - lo], [hi - med]],
                    fmt="o",
                    color="tab:red",
                    capsize=3,
                    label="auto (run at N)" if n == cfg["auto_budgets"][0] else None,
                )
        tag = " (held-out)" if results.problems[name]["heldout"] else ""
        ax.set_title(name + tag, fontsize=9)
        ax.set_xlabel("evaluations")
        ax.set_ylabel("HV ratio (median over seeds)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    labels: dict[str, Any] = {}  # every sampler once, from whichever panel drew it (GP/EHVI: noisy only)
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            labels.setdefault(label, handle)
    axes.flat[0].legend(list(labels.values()), list(labels), fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
