"""The latency-predictor extension point: one base class, a transfer specialisation, shared input checks."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd


class LatencyPredictor(abc.ABC):
    """Predicts the latency (ms) of architectures on one device from their configurations.

    A configuration table is a :class:`pandas.DataFrame` with one row per architecture and one column per
    search-space parameter: category strings (an op name per layer or edge) or numbers (a resolution).

    Lifecycle: ``__init__(*, seed, **options)`` only stores its arguments; ``fit(configs, latency_ms)``
    learns from measured architectures and returns the predictor; ``predict(configs)`` returns one
    predicted latency in ms per row as a float ``numpy.ndarray``. ``fit`` may be called again: it starts
    from scratch. Calling ``predict`` before ``fit`` raises :class:`RuntimeError`.

    Transfer predictors (:class:`TransferPredictor`) also know each architecture's latency on other,
    fully measured devices and adapt to a new device from a few measurements with ``adapt(rows,
    latency_ms)``; see there.

    Subclasses register with :func:`~evaluators.latency.register_predictor` and are created by name with
    :func:`~evaluators.latency.get_predictor`.
    """

    name: ClassVar[str] = ""

    def __init__(self, *, seed: int = 0) -> None:
        self.seed = seed

    @abc.abstractmethod
    def fit(self, configs: pd.DataFrame, latency_ms: Any) -> Self:
        """Learn from measured architectures.

        Args:
            configs: one row per measured architecture, one column per search-space parameter.
            latency_ms: the measured latency of each row, in ms (finite, > 0).

        Returns:
            The fitted predictor itself.

        Raises:
            TypeError: ``configs`` is not a DataFrame.
            ValueError: lengths differ, or a latency is not finite and positive.
        """

    @abc.abstractmethod
    def predict(self, configs: pd.DataFrame) -> np.ndarray:
        """Predicted latency in ms, one float per row of ``configs``.

        Raises:
            RuntimeError: the predictor was not fitted yet.
        """

    def _require_fitted(self, fitted: bool, how: str = "fit(configs, latency_ms)") -> None:
        if not fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted yet: call {how} before predict().")


class TransferPredictor(LatencyPredictor):
    """A latency predictor that transfers from fully measured source devices to a new device.

    It is built on one table of architectures with their latency on the source devices, then adapts to a
    target device from the measured latency of a few of those rows (few-shot device transfer, as in
    HELP: Lee et al., "HELP: Hardware-Adaptive Efficient Latency Prediction for NAS via
    Meta-Learning", NeurIPS 2021).

    Lifecycle: ``__init__(configs, source_latency_ms, *, seed)`` validates and stores the table (cheap);
    ``adapt(rows, latency_ms)`` fits on the given row positions measured on the target device (each call
    starts from scratch); ``predict(rows=None)`` returns predicted ms for those row positions (all rows if
    None). The base-class lifecycle works too: ``fit(configs, latency_ms)`` and ``predict(configs)``
    accept configurations that are rows of the table (matched by value).

    Args:
        configs: one row per architecture, one column per search-space parameter (numbers or category
            strings).
        source_latency_ms: the same rows, one column per source device (ms): a DataFrame or a 2-D array.
        seed: seeds any randomness (the predictors shipped here are deterministic).
    """

    def __init__(self, configs: pd.DataFrame, source_latency_ms: Any, *, seed: int = 0) -> None:
        super().__init__(seed=seed)
        owner = type(self).__name__
        self.configs = check_configs(configs, owner=owner)
        self.source_latency_ms = check_source_latency(source_latency_ms, len(self.configs), owner=owner)
        self._row_of: dict[tuple[Any, ...], int] | None = None

    @abc.abstractmethod
    def adapt(self, rows: Sequence[int] | np.ndarray, latency_ms: Any) -> Self:
        """Fit to the target device from a few measured rows.

        Args:
            rows: K distinct row positions of the table (``0 <= row < len(configs)``).
            latency_ms: their latency on the target device, in ms.

        Returns:
            The adapted predictor itself.
        """

    @abc.abstractmethod
    def _predict_rows(self, rows: np.ndarray) -> np.ndarray:
        """Predicted ms for validated row positions."""

    def fit(self, configs: pd.DataFrame, latency_ms: Any) -> Self:
        rows = self.locate(configs)
        _, first, counts = np.unique(rows, return_index=True, return_counts=True)
        if np.any(counts > 1):
            dup = sorted(int(j) for j in np.nonzero(np.isin(rows, rows[first[counts > 1]]))[0])
            raise ValueError(
                f"The 'configs' parameter of {type(self).__name__}.fit must hold distinct architectures. "
                f"Got the same architecture at rows {dup[:5]}; average their latencies into one row."
            )
        return self.adapt(rows, latency_ms)

    def predict(self, rows: pd.DataFrame | Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Predicted latency in ms for the given row positions (or configurations), all rows if None."""
        if isinstance(rows, pd.DataFrame):
            positions = self.locate(rows)
        elif rows is None:
            positions = np.arange(len(self.configs))
        else:
            positions = check_rows(
                rows, len(self.configs), owner=f"{type(self).__name__}.predict", unique=False
            )
        return self._predict_rows(positions)

    def locate(self, configs: pd.DataFrame) -> np.ndarray:
        """Row positions in the table of the given configurations (matched on the table's columns)."""
        owner = f"{type(self).__name__}.locate"
        configs = check_configs(configs, owner=owner)
        missing = [c for c in self.configs.columns if c not in configs.columns]
        if missing:
            raise ValueError(
                f"The 'configs' parameter of {owner} must have the table's columns "
                f"{list(self.configs.columns)}. Got columns {list(configs.columns)} instead "
                f"(missing {missing})."
            )
        if self._row_of is None:
            self._row_of = {}
            for i, key in enumerate(_row_keys(self.configs)):
                self._row_of.setdefault(key, i)
        out = np.empty(len(configs), dtype=np.int64)
        columns = list(self.configs.columns)
        for j, key in enumerate(_row_keys(configs[columns])):
            pos = self._row_of.get(key)
            if pos is None:
                row = dict(zip(columns, key, strict=True))
                raise ValueError(
                    f"The 'configs' parameter of {owner} must hold rows of the table the predictor was built "
                    f"on (their source-device latency is needed). Got row {j} = {row}, "
                    "which is not in the table; add it to the table with its source latencies."
                )
            out[j] = pos
        return out


def _row_keys(frame: pd.DataFrame) -> list[tuple[Any, ...]]:
    return [tuple(_norm(v) for v in row) for row in frame.itertuples(index=False, name=None)]


def _norm(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def check_configs(configs: Any, *, owner: str, param: str = "configs") -> pd.DataFrame:
    """``configs`` must be a non-empty DataFrame without missing values; returned with a 0..n-1 index."""
    if not isinstance(configs, pd.DataFrame):
        raise TypeError(
            f"The '{param}' parameter of {owner} must be a pandas.DataFrame with one row per architecture "
            f"and one column per search-space parameter. Got {type(configs).__name__} instead."
        )
    if configs.shape[0] == 0 or configs.shape[1] == 0:
        raise ValueError(
            f"The '{param}' parameter of {owner} must have at least one row and one column. "
            f"Got shape {configs.shape} instead."
        )
    if configs.isna().to_numpy().any():
        bad = [str(c) for c in configs.columns[configs.isna().any()]]
        raise ValueError(
            f"The '{param}' parameter of {owner} must not contain missing values. "
            f"Got NaN/None in columns {bad}."
        )
    return configs.reset_index(drop=True)


def check_latency(latency_ms: Any, n_rows: int, *, owner: str, param: str = "latency_ms") -> np.ndarray:
    """One finite, positive latency per row, as a float array."""
    try:
        y = np.asarray(latency_ms, dtype=float)
    except (TypeError, ValueError):
        raise TypeError(
            f"The '{param}' parameter of {owner} must be a sequence of numbers (ms). "
            f"Got {type(latency_ms).__name__} instead."
        ) from None
    if y.ndim != 1 or len(y) != n_rows:
        raise ValueError(
            f"The '{param}' parameter of {owner} must hold one latency per row ({n_rows} values). "
            f"Got shape {y.shape} instead."
        )
    if not np.all(np.isfinite(y)) or np.any(y <= 0):
        raise ValueError(
            f"The '{param}' parameter of {owner} must hold finite latencies > 0 ms. "
            f"Got {y[~(np.isfinite(y) & (y > 0))][:5].tolist()} instead."
        )
    return y


def check_source_latency(source_latency_ms: Any, n_rows: int, *, owner: str) -> np.ndarray:
    """A (rows, devices) float array of finite positive latencies."""
    param = "source_latency_ms"
    values = (
        source_latency_ms.to_numpy() if isinstance(source_latency_ms, pd.DataFrame) else source_latency_ms
    )
    try:
        s = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise TypeError(
            f"The '{param}' parameter of {owner} must be a DataFrame or 2-D array of numbers (ms), "
            f"one column per source device. Got {type(source_latency_ms).__name__} instead."
        ) from None
    if s.ndim == 1:
        s = s[:, None]
    if s.ndim != 2 or s.shape[0] != n_rows or s.shape[1] == 0:
        raise ValueError(
            f"The '{param}' parameter of {owner} must have one row per row of 'configs' ({n_rows}) and at "
            f"least one device column. Got shape {s.shape} instead."
        )
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(
            f"The '{param}' parameter of {owner} must hold finite latencies > 0 ms. "
            f"Got {s[~(np.isfinite(s) & (s > 0))][:5].tolist()} instead."
        )
    return s


def check_rows(rows: Any, n_rows: int, *, owner: str, unique: bool = True, min_rows: int = 1) -> np.ndarray:
    """Integer row positions in ``[0, n_rows)``; distinct when ``unique``; at least ``min_rows`` of them."""
    r = np.asarray(rows)
    if r.ndim != 1 or (r.size and r.dtype.kind not in "iu"):
        raise TypeError(
            f"The 'rows' parameter of {owner} must be a 1-D sequence of integer row positions. "
            f"Got {type(rows).__name__} of dtype {r.dtype} and shape {r.shape} instead."
        )
    r = r.astype(np.int64)
    if r.size < min_rows:
        raise ValueError(
            f"The 'rows' parameter of {owner} must hold at least {min_rows} row positions. "
            f"Got {r.size} instead."
        )
    if r.size and (r.min() < 0 or r.max() >= n_rows):
        raise ValueError(
            f"The 'rows' parameter of {owner} must hold positions in [0, {n_rows}). "
            f"Got {r[(r < 0) | (r >= n_rows)][:5].tolist()} instead."
        )
    if unique and len(np.unique(r)) != r.size:
        raise ValueError(
            f"The 'rows' parameter of {owner} must hold distinct positions. Got duplicates "
            f"{sorted({int(v) for v in r if (r == v).sum() > 1})[:5]} instead."
        )
    return r
