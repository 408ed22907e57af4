"""The Pareto-front picture logged to MLflow (matplotlib, headless)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

from optuna.trial import FrozenTrial, TrialState

from frontier.search._pareto import is_feasible
from frontier.spaces import StudySpec


def plot_pareto(trials: Sequence[FrozenTrial], front: set[int], spec: StudySpec, path: Path) -> Path:
    """Scatter of objective values: Pareto trials (red, joined), dominated feasible (grey dots),
    infeasible (orange crosses). One panel for two objectives, pairwise panels for more, a strip for one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [o.name for o in spec.objectives]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    pairs = list(itertools.combinations(range(len(names)), 2)) or [(0, 0)]
    fig, axes = plt.subplots(1, len(pairs), figsize=(5 * len(pairs), 4), squeeze=False)
    for ax, (i, j) in zip(axes[0], pairs, strict=True):
        groups = {
            "dominated (feasible)": [t for t in complete if is_feasible(t) and t.number not in front],
            "infeasible": [t for t in complete if not is_feasible(t)],
            "Pareto set": sorted((t for t in complete if t.number in front), key=lambda t: t.values[i]),
        }
        style = {
            "dominated (feasible)": {"c": "0.6", "marker": "o", "s": 18},
            "infeasible": {"c": "tab:orange", "marker": "x", "s": 22},
            "Pareto set": {"c": "tab:red", "marker": "o", "s": 36, "edgecolors": "k"},
        }
        for label, group in groups.items():
            if not group:
                continue
            xs = [t.values[i] for t in group]
            ys = [t.values[j] if i != j else t.number for t in group]
            ax.scatter(xs, ys, label=f"{label} ({len(group)})", **style[label])
            if label == "Pareto set" and i != j:
                ax.step(xs, ys, where="post", c="tab:red", lw=1, alpha=0.6)
        ax.set_xlabel(f"{names[i]} ({spec.objectives[i].direction})")
        ax.set_ylabel(f"{names[j]} ({spec.objectives[j].direction})" if i != j else "trial number")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"{spec.name}: {len(complete)} complete trials, {len(front)} on the Pareto set")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
