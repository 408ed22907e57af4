"""Development and held-out problems: recorded tables a study spec searches through the ``tabular`` evaluator.

Synthetic problems discretise the ZDT (Zitzler, Deb & Thiele, 2000) and DTLZ (Deb, Thiele, Laumanns &
Zitzler, 2002) test functions onto integer, ordinal and categorical parameters; they are generated
deterministically at run time. Real problems come from the HELP latency data (Lee et al., NeurIPS 2021;
NAS-Bench-201 cell space, latency recorded on 27 devices) under ``/work/shared/data/help`` (or
``$FRONTIER_HELP_DATA``): latency on two devices that disagree, or latency against a FLOPs proxy.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

HELP_DIR = Path(os.environ.get("FRONTIER_HELP_DATA", "/work/shared/data/help"))
SEED_COLUMN = "seed"


@dataclass(frozen=True)
class Problem:
    """One benchmark problem: a table builder and the study spec fields that search it.

    Attributes:
        name: the problem's name (also the study name prefix).
        build: returns the recorded table (parameter columns, metric columns, optionally ``seed``).
        space: the spec's ``space`` entries; their names are the table's key columns.
        objectives: the spec's ``objectives`` entries (name, direction); metric name == column name.
        constraints: the spec's ``constraints`` entries.
        heldout: kept aside while the ``auto`` rule was chosen; reported separately.
        quick: small enough for ``--quick`` and tests.
        noisy: the table repeats each configuration once per seed (``seed`` column).
    """

    name: str
    build: Callable[[], pd.DataFrame]
    space: tuple[dict[str, Any], ...]
    objectives: tuple[dict[str, str], ...]
    constraints: tuple[dict[str, Any], ...] = ()
    heldout: bool = False
    quick: bool = False
    noisy: bool = False
    note: str = ""
    available: Callable[[], bool] = field(default=lambda: True)

    @property
    def params(self) -> list[str]:
        return [p["name"] for p in self.space]

    @property
    def metrics(self) -> list[str]:
        names = [o["name"] for o in self.objectives] + [c["metric"] for c in self.constraints]
        return list(dict.fromkeys(names))

    @property
    def directions(self) -> list[str]:
        return [o["direction"] for o in self.objectives]


_PROBLEMS: dict[str, Problem] = {}


def register(problem: Problem) -> Problem:
    _PROBLEMS[problem.name] = problem
    return problem


def get_problem(name: str) -> Problem:
    try:
        return _PROBLEMS[name]
    except KeyError:
        raise ValueError(f"Unknown problem '{name}'. Available: {sorted(_PROBLEMS)}") from None


def all_problems() -> list[Problem]:
    return [p for p in _PROBLEMS.values() if p.available()]


# --------------------------------------------------------------------------------------------- synthetic

_CAT_LEVELS = ("a", "b", "c", "d")
_CAT_VALUE = {"a": 0.55, "b": 0.0, "c": 0.85, "d": 0.3}  # unordered on purpose: the order says nothing


def _grid(space: tuple[dict[str, Any], ...]) -> pd.DataFrame:
    axes = []
    for p in space:
        if p["kind"] == "int":
            axes.append(list(range(p["low"], p["high"] + 1)))
        else:
            axes.append(list(p["choices"]))
    return pd.DataFrame(list(itertools.product(*axes)), columns=[p["name"] for p in space])


def _unit(frame: pd.DataFrame, space: tuple[dict[str, Any], ...]) -> np.ndarray:
    """Each parameter mapped to [0, 1] (categorical levels through a fixed, unordered table)."""
    cols = []
    for p in space:
        v = frame[p["name"]]
        if p["kind"] == "int":
            cols.append((v.to_numpy(float) - p["low"]) / (p["high"] - p["low"]))
        elif p["kind"] == "ordinal":
            cols.append(np.asarray([p["choices"].index(x) / (len(p["choices"]) - 1) for x in v]))
        else:
            cols.append(v.map(_CAT_VALUE).to_numpy(float))
    return np.stack(cols, axis=1)


def _noisy(
    frame: pd.DataFrame, metrics: list[str], *, seeds: int, rel_sd: float, rng_seed: int
) -> pd.DataFrame:
    """Repeat every row once per seed with Gaussian noise of ``rel_sd`` x the metric's range."""
    rng = np.random.default_rng(rng_seed)
    parts = []
    for s in range(seeds):
        part = frame.copy()
        part[SEED_COLUMN] = s
        for m in metrics:
            span = float(frame[m].max() - frame[m].min()) or 1.0
            part[m] = frame[m] + rng.normal(0.0, rel_sd * span, len(frame))
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def _zdt(kind: str, space: tuple[dict[str, Any], ...]) -> Callable[[], pd.DataFrame]:
    def build() -> pd.DataFrame:
        frame = _grid(space)
        u = _unit(frame, space)
        f1 = u[:, 0]
        g = 1.0 + 9.0 * u[:, 1:].mean(axis=1)
        if kind == "zdt1":
            h = 1.0 - np.sqrt(f1 / g)
        elif kind == "zdt2":
            h = 1.0 - (f1 / g) ** 2
        else:  # zdt3: disconnected front
            h = 1.0 - np.sqrt(f1 / g) - (f1 / g) * np.sin(10 * math.pi * f1)
        frame["f1"] = f1
        frame["f2"] = g * h
        return frame

    return build


def _dtlz(kind: str, space: tuple[dict[str, Any], ...], n_obj: int = 3) -> Callable[[], pd.DataFrame]:
    def build() -> pd.DataFrame:
        frame = _grid(space)
        u = _unit(frame, space)
        pos, rest = u[:, : n_obj - 1], u[:, n_obj - 1 :]
        if kind == "dtlz2":
            g = ((rest - 0.5) ** 2).sum(axis=1)
            f = np.empty((len(u), n_obj))
            for i in range(n_obj):
                v = 1.0 + g
                for j in range(n_obj - 1 - i):
                    v = v * np.cos(pos[:, j] * math.pi / 2)
                if i > 0:
                    v = v * np.sin(pos[:, n_obj - 1 - i] * math.pi / 2)
                f[:, i] = v
            # Convex DTLZ2 (Deb & Jain, IEEE TEVC 2014): on a concave front no point beats the median
            # candidate in all three objectives at once, which would leave the median box empty.
            f[:, :-1] = f[:, :-1] ** 4
            f[:, -1] = f[:, -1] ** 2
        else:  # dtlz7: disconnected regions
            g = 1.0 + 9.0 * rest.mean(axis=1)
            f = np.empty((len(u), n_obj))
            f[:, : n_obj - 1] = pos
            h = n_obj - (pos / (1 + g[:, None]) * (1 + np.sin(3 * math.pi * pos))).sum(axis=1)
            f[:, -1] = (1 + g) * h
        for i in range(n_obj):
            frame[f"f{i + 1}"] = f[:, i]
        return frame

    return build


def _minimise(*names: str) -> tuple[dict[str, str], ...]:
    return tuple({"name": n, "direction": "minimize"} for n in names)


_ZDT_SPACE = (
    {"name": "x1", "kind": "int", "low": 0, "high": 19},
    {"name": "x2", "kind": "int", "low": 0, "high": 7},
    {"name": "x3", "kind": "ordinal", "choices": [0, 1, 2, 4, 8, 16]},
    {"name": "mode", "kind": "categorical", "choices": list(_CAT_LEVELS)},
)
_ZDT_SMALL = (
    {"name": "x1", "kind": "int", "low": 0, "high": 9},
    {"name": "x2", "kind": "int", "low": 0, "high": 4},
    {"name": "mode", "kind": "categorical", "choices": list(_CAT_LEVELS)},
)
_DTLZ_SPACE = (
    {"name": "x1", "kind": "int", "low": 0, "high": 10},
    {"name": "x2", "kind": "int", "low": 0, "high": 10},
    {"name": "x3", "kind": "ordinal", "choices": [1, 2, 3, 4, 5]},
    {"name": "mode", "kind": "categorical", "choices": list(_CAT_LEVELS)},
)

register(
    Problem("zdt1-mixed", _zdt("zdt1", _ZDT_SPACE), _ZDT_SPACE, _minimise("f1", "f2"), note="3,840 rows")
)
register(
    Problem(
        "zdt2-noisy",
        lambda: _noisy(_zdt("zdt2", _ZDT_SPACE)(), ["f1", "f2"], seeds=3, rel_sd=0.02, rng_seed=2),
        _ZDT_SPACE,
        _minimise("f1", "f2"),
        noisy=True,
        note="3,840 configurations x 3 seeds, noise sd 2 % of range",
    )
)
register(
    Problem(
        "zdt1-small", _zdt("zdt1", _ZDT_SMALL), _ZDT_SMALL, _minimise("f1", "f2"), quick=True, note="200 rows"
    )
)
register(
    Problem(
        "zdt3-mixed",
        _zdt("zdt3", _ZDT_SPACE),
        _ZDT_SPACE,
        _minimise("f1", "f2"),
        heldout=True,
        note="3,840 rows",
    )
)
register(
    Problem(
        "dtlz7-3obj",
        _dtlz("dtlz7", _DTLZ_SPACE),
        _DTLZ_SPACE,
        _minimise("f1", "f2", "f3"),
        note="2,420 rows",
    )
)

# --------------------------------------------------------------------------------------------- HELP / NB201

NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NB201_EDGES = ("e10", "e20", "e21", "e30", "e31", "e32")
_NB201_SPACE = tuple({"name": e, "kind": "categorical", "choices": list(NB201_OPS)} for e in NB201_EDGES)
# Multiply-accumulates per edge relative to a 1x1 convolution (the cell is the same in all three stages).
_OP_COST = {"none": 0.0, "skip_connect": 0.0, "nor_conv_1x1": 1.0, "nor_conv_3x3": 9.0, "avg_pool_3x3": 0.1}


def _help_nb201() -> pd.DataFrame:
    raw = pd.read_csv(HELP_DIR / "help_latency_nasbench201.csv")
    ops = raw["arch_str"].str.findall(r"([a-z_0-9]+)~\d")
    frame = pd.DataFrame(ops.tolist(), columns=list(NB201_EDGES))
    frame["flops"] = frame[list(NB201_EDGES)].apply(lambda col: col.map(_OP_COST)).sum(axis=1)
    devices = [c for c in raw.columns if c not in ("idx", "arch_str")]
    return pd.concat([frame, raw[devices]], axis=1)


def _nb201(columns: list[str]) -> Callable[[], pd.DataFrame]:
    def build() -> pd.DataFrame:
        frame = _help_nb201()
        return frame[[*NB201_EDGES, *columns]].rename(columns={c: _metric(c) for c in columns})

    return build


def _metric(column: str) -> str:
    return column if column == "flops" else f"lat_{column}"


def _help_available() -> bool:
    return (HELP_DIR / "help_latency_nasbench201.csv").exists()


def _nb201_problem(name: str, objectives: list[tuple[str, str]], **kw: Any) -> Problem:
    columns = [c for c, _ in objectives] + [
        c["metric"].removeprefix("lat_") for c in kw.get("constraints", ())
    ]
    return Problem(
        name,
        _nb201(list(dict.fromkeys(columns))),
        _NB201_SPACE,
        tuple({"name": _metric(c), "direction": d} for c, d in objectives),
        available=_help_available,
        note=kw.pop("note", "NAS-Bench-201, 15,625 architectures (HELP latency)"),
        **kw,
    )


register(_nb201_problem("nb201-pixel3-1080ti", [("pixel3", "minimize"), ("1080ti_1", "minimize")]))
register(_nb201_problem("nb201-flops-pixel3", [("flops", "maximize"), ("pixel3", "minimize")]))
register(
    _nb201_problem(
        "nb201-3obj",
        [("eyeriss", "minimize"), ("1080ti_1", "minimize"), ("pixel3", "minimize")],
        note="NAS-Bench-201, latency on 3 devices",
    )
)
register(
    _nb201_problem(
        "nb201-flops-raspi4-constrained",
        [("flops", "maximize"), ("raspi4", "minimize")],
        constraints=({"metric": "lat_gold_6226", "op": "<=", "value": 11.0},),
        note="NAS-Bench-201, constraint gold_6226 latency <= 11 ms",
    )
)
register(
    _nb201_problem("nb201-flops-1080ti", [("flops", "maximize"), ("1080ti_1", "minimize")], heldout=True)
)
register(
    _nb201_problem(
        "nb201-3obj-heldout",
        [("raspi4", "minimize"), ("titanx_1", "minimize"), ("eyeriss", "minimize")],
        heldout=True,
        note="NAS-Bench-201, latency on 3 devices",
    )
)
register(
    _nb201_problem("nb201-flops-eyeriss", [("flops", "maximize"), ("eyeriss", "minimize")], heldout=True)
)

# --------------------------------------------------------------------------------------------- noisy NB201

# Per-seed NAS-Bench-201 training accuracies ship in no PyPI package (NAS-Bench-201 / NATS-Bench ship only
# their APIs; the tables are multi-GB downloads). AnalogNAS-Bench (Benmeziane et al., 2025; PyPI
# ``analog-nasbench==0.1.3``) ships, for all 15,625 NB201 cells on CIFAR-10, the accuracy on analog
# in-memory hardware after conductance drift as *mean +- standard deviation over repeated noisy inference
# runs*. Those are measured, per-architecture noise levels; the table draws ``NOISY_SEEDS`` observations per
# cell from N(mean, sd) (fixed RNG) and the score uses their mean, as for seed-averaged accuracy.
NOISY_SEEDS = 3
# AnalogNAS-Bench encodes a cell as 6 op indices. Its op order is fixed by the all-'none' cell (10 %
# accuracy) and NAS-Bench-201's best cell (skip on 0->3, 3x3 convs elsewhere); its edge order by the three
# edge sets whose all-'none' setting disconnects the cell ({0->1,0->2,0->3}, {0->1,0->3,2->3},
# {0->3,1->3,2->3}), which leaves only the DAG's reversal symmetry: the (i < j) lexicographic order is taken.
_ANB_OPS = ("skip_connect", "none", "nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3")
_ANB_EDGES = ("e10", "e20", "e30", "e21", "e31", "e32")
ANALOG_ACCURACY = {
    "acc_1h": "analog_drift_3600",
    "acc_1d": "analog_drift_86400",
    "acc_30d": "analog_drift_2592000",
}


def _analog_path() -> Path | None:
    # find_spec, not importlib.resources: importing the package runs its loader, which needs pkg_resources.
    from importlib.util import find_spec

    spec = find_spec("analognasbench")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data.anb"
    return path if path.exists() else None


def _analog_table() -> pd.DataFrame:
    """AnalogNAS-Bench's drift accuracies (mean, sd) keyed by the NB201 edges, read without its API.

    The package's loader imports ``pkg_resources`` (gone from current setuptools); its data file is a pickle
    of plain attribute objects, read here with an unpickler that allows only those two classes.
    """
    import pickle
    from types import SimpleNamespace

    class _Restricted(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            if module == "analognasbench.data" and name in ("Architecture", "DriftMeasurement"):
                return SimpleNamespace
            raise pickle.UnpicklingError(f"unexpected class {module}.{name} in the AnalogNAS-Bench data")

    path = _analog_path()
    if path is None:
        raise FileNotFoundError("AnalogNAS-Bench data not found: pip install analog-nasbench==0.1.3")
    with path.open("rb") as f:
        data = _Restricted(f).load()
    rows = []
    for key, arch in data.items():
        row: dict[str, Any] = {e: _ANB_OPS[i] for e, i in zip(_ANB_EDGES, key, strict=True)}
        for name, attr in ANALOG_ACCURACY.items():
            drift = getattr(arch, attr)
            row[name], row[f"{name}_sd"] = float(drift.value), float(drift.uncertainty)
        rows.append(row)
    return pd.DataFrame(rows)


def _nb201_noisy(accuracy: str, columns: list[str], *, rng_seed: int) -> Callable[[], pd.DataFrame]:
    def build() -> pd.DataFrame:
        lat = _nb201(columns)()
        acc = _analog_table()[[*NB201_EDGES, accuracy, f"{accuracy}_sd"]]
        frame = lat.merge(acc, on=list(NB201_EDGES), how="inner", validate="one_to_one")
        if len(frame) != len(lat):
            raise ValueError(f"AnalogNAS-Bench matched {len(frame)} of {len(lat)} HELP cells")
        rng = np.random.default_rng(rng_seed)
        parts = []
        for s in range(NOISY_SEEDS):
            part = frame.drop(columns=[f"{accuracy}_sd"]).copy()
            part[SEED_COLUMN] = s
            part[accuracy] = frame[accuracy] + rng.normal(0.0, 1.0, len(frame)) * frame[f"{accuracy}_sd"]
            parts.append(part)
        return pd.concat(parts, ignore_index=True)

    return build


def _noisy_available() -> bool:
    return _help_available() and _analog_path() is not None


def _noisy_problem(name: str, accuracy: str, devices: list[str], *, rng_seed: int, **kw: Any) -> Problem:
    constraints = kw.pop("constraints", ())
    columns = [*devices, *(c["metric"].removeprefix("lat_") for c in constraints)]
    return Problem(
        name,
        _nb201_noisy(accuracy, list(dict.fromkeys(columns)), rng_seed=rng_seed),
        _NB201_SPACE,
        (
            {"name": accuracy, "direction": "maximize"},
            *({"name": _metric(d), "direction": "minimize"} for d in devices),
        ),
        constraints=constraints,
        noisy=True,
        available=_noisy_available,
        note=kw.pop(
            "note",
            f"NB201 x {NOISY_SEEDS} seeds: {accuracy} from AnalogNAS-Bench (mean +- sd), HELP latency",
        ),
        **kw,
    )


register(_noisy_problem("nb201-acc1d-pixel3-noisy", "acc_1d", ["pixel3"], rng_seed=11))
register(_noisy_problem("nb201-acc1h-eyeriss-noisy", "acc_1h", ["eyeriss"], rng_seed=12))
register(
    _noisy_problem(
        "nb201-acc1d-raspi4-noisy-constrained",
        "acc_1d",
        ["raspi4"],
        rng_seed=13,
        constraints=({"metric": "lat_gold_6226", "op": "<=", "value": 11.0},),
    )
)
register(_noisy_problem("nb201-acc30d-1080ti-noisy", "acc_30d", ["1080ti_1"], rng_seed=21, heldout=True))
register(
    _noisy_problem(
        "nb201-acc1d-titanx-noisy-constrained",
        "acc_1d",
        ["titanx_1"],
        rng_seed=22,
        heldout=True,
        constraints=({"metric": "lat_pixel3", "op": "<=", "value": 12.0},),
    )
)
