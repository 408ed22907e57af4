"""Scoring a search against the whole recorded table: hypervolume ratio and IGD+.

Objectives are turned into losses (maximised ones negated) and min-max normalised over the table's
feasible candidates; the hypervolume reference point is the *median* candidate in each objective, so the
ratio measures how much of the better half of the trade-off a search found. Hypervolume and Pareto masks
reuse ``search._pareto`` (Optuna's own code).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from frontier.search._pareto import hypervolume, pareto_mask, to_loss

Key = tuple[Any, ...]


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def igd_plus(found: np.ndarray, front: np.ndarray) -> float:
    """IGD+ (Ishibuchi, Masuda, Tanigaki & Nojima, EMO 2015) of ``found`` to the reference ``front``.

    Both are minimisation matrices. For each reference point z, the modified distance to a found point a is
    ``sqrt(sum(max(a_i - z_i, 0) ** 2))`` (only the objectives where a is worse count); IGD+ is the mean
    over z of the smallest such distance. 0 means the front was found; ``inf`` when nothing was found.
    """
    found = np.asarray(found, dtype=float)
    front = np.asarray(front, dtype=float)
    if len(found) == 0:
        return float("inf")
    diff = np.maximum(found[None, :, :] - front[:, None, :], 0.0)
    return float(np.sqrt((diff**2).sum(axis=2)).min(axis=1).mean())


def hv_ratio(found: np.ndarray, front: np.ndarray, reference: np.ndarray) -> float:
    """Hypervolume of ``found`` over that of ``front`` (both minimised, bounded by ``reference``)."""
    best = hypervolume(front, reference)
    if best <= 0:
        raise ValueError(f"the true front dominates no volume below the reference point {reference.tolist()}")
    return hypervolume(found, reference) / best


class TableScorer:
    """The true front of a table and the scores of any set of its candidates.

    Args:
        frame: the recorded table; rows that repeat a configuration (one per seed) are averaged.
        params: the key columns (the space's parameter names), in order.
        objectives: ``(column, direction)`` pairs.
        constraints: ``(column, op, value)`` triples; infeasible candidates are never on a front.
    """

    def __init__(
        self,
        frame: pd.DataFrame,
        params: Sequence[str],
        objectives: Sequence[tuple[str, str]],
        constraints: Sequence[tuple[str, str, float]] = (),
    ) -> None:
        columns = list(dict.fromkeys([c for c, _ in objectives] + [c for c, _, _ in constraints]))
        mean = frame.groupby(list(params), sort=False, dropna=False)[columns].mean().reset_index()
        self.params = list(params)
        self.directions = [d for _, d in objectives]
        keys = [tuple(_plain(v) for v in row) for row in mean[self.params].itertuples(index=False)]
        self.index = {k: i for i, k in enumerate(keys)}
        feasible = np.ones(len(mean), dtype=bool)
        for col, op, value in constraints:
            v = mean[col].to_numpy(float)
            feasible &= v <= value if op == "<=" else v >= value
        if not feasible.any():
            raise ValueError("no candidate of the table satisfies the constraints")
        self.feasible = feasible
        loss = to_loss(mean[[c for c, _ in objectives]].to_numpy(float), self.directions)
        ok = loss[feasible]
        self.low, span = ok.min(axis=0), ok.max(axis=0) - ok.min(axis=0)
        self.span = np.where(span > 0, span, 1.0)
        self.loss = (loss - self.low) / self.span
        self.reference = np.median(self.loss[feasible], axis=0)
        ok_norm = self.loss[feasible]
        self.pareto_front = np.unique(ok_norm[pareto_mask(ok_norm)], axis=0)  # IGD+ reference set
        self.front = self.pareto_front[np.all(self.pareto_front < self.reference, axis=1)]  # in the HV box
        self.true_hv = hypervolume(self.front, self.reference)

    def row(self, key: Key | None) -> int:
        """The averaged table's row of a candidate; -1 for ``None`` (a failed trial)."""
        if key is None:
            return -1
        i = self.index.get(tuple(_plain(v) for v in key))
        if i is None:
            raise KeyError(f"candidate {key} is not in the table")
        return i

    def rows(self, keys: Sequence[Key | None]) -> np.ndarray:
        """Row numbers of the feasible candidates among ``keys`` (``None``: a failed trial)."""
        out = [i for i in (self.row(k) for k in keys) if i >= 0 and self.feasible[i]]
        return np.asarray(out, dtype=int)

    def score(self, keys: Sequence[Key | None]) -> tuple[float, float]:
        """``(hv_ratio, igd_plus)`` of the candidates ``keys`` evaluated so far."""
        found = self.loss[self.rows(keys)]
        return hypervolume(found, self.reference) / self.true_hv, igd_plus(found, self.pareto_front)

    def curve(self, keys: Sequence[Key | None], points: Sequence[int]) -> dict[str, list[float]]:
        """HV ratio and IGD+ after the first ``n`` trials, for each ``n`` in ``points``."""
        hv, igd = [], []
        for n in points:
            h, d = self.score(keys[:n])
            hv.append(h)
            igd.append(d)
        return {"hv_ratio": hv, "igd_plus": igd}
