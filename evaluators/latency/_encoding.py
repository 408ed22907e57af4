"""Numeric encodings of configuration tables, shared by the latency predictors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd


def is_categorical(column: pd.Series) -> bool:
    """Strings, booleans and other non-numeric columns are categories; numbers are numbers."""
    return bool(column.dtype == bool or not pd.api.types.is_numeric_dtype(column))


@dataclass(frozen=True)
class ConfigEncoding:
    """How one configuration table becomes features; learnt once with :meth:`fit`, applied to any table.

    Attributes:
        categories: categorical column -> its values seen at fit time (one-hot order).
        numeric: numeric columns, standardised with ``center``/``scale``.
        shared_values: the values of all categorical columns together (for :meth:`counts`).
    """

    categories: dict[str, tuple[Any, ...]]
    numeric: tuple[str, ...]
    center: np.ndarray
    scale: np.ndarray
    shared_values: tuple[Any, ...]

    @classmethod
    def fit(cls, configs: pd.DataFrame, *, all_categorical: bool = False) -> ConfigEncoding:
        """Learn the categories and numeric scales of ``configs``; ``all_categorical`` one-hot encodes
        numeric columns too (a lookup table has one cost per value)."""
        categories: dict[str, tuple[Any, ...]] = {}
        numeric: list[str] = []
        for name in configs.columns:
            col = configs[name]
            if all_categorical or is_categorical(col):
                categories[str(name)] = tuple(sorted(pd.unique(col), key=_sort_key))
            else:
                numeric.append(str(name))
        nums = configs[numeric].to_numpy(dtype=float) if numeric else np.zeros((len(configs), 0))
        scale = nums.std(axis=0) if numeric else np.zeros(0)
        shared = sorted({v for cats in categories.values() for v in cats}, key=_sort_key)
        return cls(
            categories=categories,
            numeric=tuple(numeric),
            center=nums.mean(axis=0) if numeric else np.zeros(0),
            scale=np.where(scale > 0, scale, 1.0),
            shared_values=tuple(shared),
        )

    @property
    def columns(self) -> list[str]:
        return [*self.categories, *self.numeric]

    @property
    def one_hot_names(self) -> list[tuple[str, Any]]:
        return [(name, v) for name, cats in self.categories.items() for v in cats]

    def check(self, configs: pd.DataFrame, *, owner: str) -> None:
        missing = [c for c in self.columns if c not in configs.columns]
        if missing:
            raise ValueError(
                f"The 'configs' parameter of {owner} must have the columns it was fitted on {self.columns}. "
                f"Got columns {[str(c) for c in configs.columns]} instead (missing {missing})."
            )

    def codes(self, configs: pd.DataFrame) -> np.ndarray:
        """(rows, categorical columns) category index per cell, -1 for a value unseen at fit time."""
        out = np.empty((len(configs), len(self.categories)), dtype=np.int64)
        for j, (name, cats) in enumerate(self.categories.items()):
            out[:, j] = pd.Categorical(configs[name], categories=list(cats)).codes
        return out

    def one_hot(self, configs: pd.DataFrame) -> np.ndarray:
        """(rows, sum of category counts) indicators; an unseen value leaves its column's block at zero."""
        codes = self.codes(configs)
        sizes = [len(c) for c in self.categories.values()]
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64) if sizes else np.zeros(0, int)
        out = np.zeros((len(configs), int(sum(sizes))))
        rows = np.arange(len(configs))
        for j in range(codes.shape[1]):
            seen = codes[:, j] >= 0
            out[rows[seen], offsets[j] + codes[seen, j]] = 1.0
        return out

    def numbers(self, configs: pd.DataFrame) -> np.ndarray:
        """(rows, numeric columns), standardised with the fit-time mean and standard deviation."""
        if not self.numeric:
            return np.zeros((len(configs), 0))
        return (configs[list(self.numeric)].to_numpy(dtype=float) - self.center) / self.scale

    def counts(self, configs: pd.DataFrame) -> np.ndarray:
        """(rows, shared values): in how many categorical columns each value occurs, e.g. how many edges
        of a cell are a 3x3 convolution. Shares an op's cost across positions."""
        if not self.categories:
            return np.zeros((len(configs), 0))
        cells = configs[list(self.categories)].to_numpy(dtype=object)
        index = {v: i for i, v in enumerate(self.shared_values)}
        out = np.zeros((len(configs), len(self.shared_values)))
        for j in range(cells.shape[1]):
            col = np.array([index.get(_key(v), -1) for v in cells[:, j]])
            seen = col >= 0
            np.add.at(out, (np.nonzero(seen)[0], col[seen]), 1.0)
        return out


def _key(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _sort_key(value: Any) -> tuple[str, str]:
    return (type(value).__name__, str(value))
