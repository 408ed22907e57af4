"""``tabular``: look candidates up in a recorded table (CSV or Parquet). How samplers are benchmarked."""

from __future__ import annotations

import math
import random
import time
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from frontier.evaluators._base import EvalContext, Evaluator, EvaluatorOptions
from frontier.evaluators._registry import register_evaluator
from frontier.spaces import Candidate, LocalPath


class TabularOptions(EvaluatorOptions):
    table: LocalPath = Field(description="Path to a .csv or .parquet file.")
    metrics: dict[str, str] = Field(min_length=1, description="metric name -> column of the table")
    delay_s: float = Field(
        default=0.0, ge=0, le=3600, description="Sleep this long per evaluation (to simulate costly trials)."
    )
    step_column: str | None = Field(
        default=None,
        description="When rows repeat a key once per training step (a learning curve), the column with the "
        "step: each evaluation reports every step's metrics in order through context.report (so schedulers "
        "can stop it early) and returns the last step's.",
    )
    seed_column: str | None = Field(
        default=None,
        description="When rows repeat a key once per seed, the column that tells the seeds apart: each "
        "evaluation observes one seed's row (chosen by the trial's seed), as a real noisy run would.",
    )

    @field_validator("table")
    @classmethod
    def _suffix(cls, v: str) -> str:
        if Path(v).suffix.lower() not in (".csv", ".parquet", ".pq"):
            raise ValueError(f"table must be a .csv or .parquet file, but got {v!r}")
        return v


def _key(value: Any) -> Any:
    """Normalise a cell or a parameter value so that 3, 3.0 and '3' style mismatches still match."""
    if value is None:
        return None
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return int(value) if value.is_integer() else round(value, 10)
    if hasattr(value, "item"):  # numpy scalar
        return _key(value.item())
    return value


@register_evaluator("tabular")
class TabularEvaluator(Evaluator):
    """Returns the recorded metrics of the table row whose key columns equal the candidate's parameters.

    The key columns are the space's parameter names; a parameter that is inactive for a candidate matches
    an empty cell. A candidate missing from the table fails the trial with a clear error.
    """

    Options = TabularOptions
    options: TabularOptions

    @classmethod
    def tiny_spec(cls, workdir: Path) -> dict[str, Any]:
        """A small study spec this evaluator runs in seconds (the conformance suite runs it; files under
        ``workdir``)."""
        table = workdir / "tiny-table.csv"
        rows = [f"{x},{k},{x / 10 + (k == 'b') / 5},{x * 3}" for x in range(1, 4) for k in "ab"]
        table.write_text("\n".join(["x,kind,f1,cost", *rows]) + "\n")
        return {
            "name": "tiny-tabular",
            "evaluator": {
                "kind": "tabular",
                "options": {"table": str(table), "metrics": {"f1": "f1", "cost": "cost"}},
            },
            "space": [
                {"kind": "int", "name": "x", "low": 1, "high": 3},
                {"kind": "categorical", "name": "kind", "choices": ["a", "b"]},
            ],
            "objectives": [
                {"name": "f1", "direction": "maximize"},
                {"name": "cost", "direction": "minimize"},
            ],
        }

    def metrics(self) -> tuple[str, ...]:
        return tuple(self.options.metrics)

    def setup(self) -> None:
        import pandas as pd

        path = Path(self.options.table).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"tabular evaluator: table not found: {path}")
        frame = pd.read_parquet(path) if path.suffix.lower() in (".parquet", ".pq") else pd.read_csv(path)
        missing = [c for c in self.options.metrics.values() if c not in frame.columns]
        if missing:
            raise ValueError(
                f"tabular evaluator: metric columns {missing} are not in {path.name}. "
                f"Columns: {list(frame.columns)}"
            )
        self._frame = frame
        self._index: dict[tuple[str, ...], dict[tuple[Any, ...], list[int]]] = {}

    def _rows_for(self, params: dict[str, Any]) -> list[int]:
        frame = self._frame
        unknown = [k for k in params if k not in frame.columns]
        if unknown:
            raise KeyError(f"tabular evaluator: parameters {unknown} are not columns of {self.options.table}")
        reserved = {*self.options.metrics.values(), self.options.seed_column, self.options.step_column}
        keys = tuple(c for c in frame.columns if c in params or (c not in reserved and c in self._space_cols))
        index = self._index.get(keys)
        if index is None:
            index = {}
            for i, row in enumerate(zip(*(frame[c].tolist() for c in keys), strict=True)):
                index.setdefault(tuple(_key(v) for v in row), []).append(i)
            self._index[keys] = index
        return index.get(tuple(_key(params.get(c)) for c in keys), [])

    _space_cols: frozenset[str] = frozenset()

    def check_params(self, names: set[str]) -> None:
        self._space_cols = frozenset(names)

    def evaluate(self, candidate: Candidate, context: EvalContext) -> dict[str, float]:
        params = dict(candidate.params)
        rows = self._rows_for(params)
        if not rows:
            raise LookupError(f"candidate {params} is not in the table {self.options.table}")
        step_col = self.options.step_column
        if step_col is None:
            row = rows[0] if len(rows) == 1 else random.Random(context.seed).choice(rows)
            if self.options.delay_s:
                time.sleep(self.options.delay_s)
            return self._metrics_of(row)
        if self.options.seed_column is not None:
            seeds = sorted({self._frame.iloc[r][self.options.seed_column] for r in rows})
            chosen = random.Random(context.seed).choice(seeds)
            rows = [r for r in rows if self._frame.iloc[r][self.options.seed_column] == chosen]
        curve = sorted(rows, key=lambda r: float(self._frame.iloc[r][step_col]))
        out: dict[str, float] = {}
        for r in curve:
            if self.options.delay_s:
                time.sleep(self.options.delay_s)
            out = self._metrics_of(r)
            context.report(int(self._frame.iloc[r][step_col]), out)
        return out

    def _metrics_of(self, row: int) -> dict[str, float]:
        record = self._frame.iloc[row]
        return {name: float(record[col]) for name, col in self.options.metrics.items()}
