"""Every registered latency predictor through the same checks (parametrized over the registry)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from frontier.evaluators.latency import (
    LatencyPredictor,
    TransferPredictor,
    available_predictors,
    get_predictor,
    get_predictor_class,
    register_predictor,
)

NAMES = available_predictors()


def target_latency(configs: pd.DataFrame, sources: pd.DataFrame) -> np.ndarray:
    n_conv1 = (configs.filter(like="pos") == "conv1").sum(axis=1).to_numpy()
    noise = np.random.default_rng(1).normal(0, 0.02, len(configs))
    return 1.2 * sources["dev_a"].to_numpy() + 0.3 * n_conv1 + noise


def make(name: str, table: tuple[pd.DataFrame, pd.DataFrame], seed: int = 0) -> LatencyPredictor:
    configs, sources = table
    if issubclass(get_predictor_class(name), TransferPredictor):
        return get_predictor(name, configs=configs, source_latency_ms=sources, seed=seed)
    return get_predictor(name, seed=seed)


def test_the_registry_holds_the_shipped_predictors():
    assert {"lookup-table", "regressor", "source-mix", "device-transfer"} <= set(NAMES)
    for name in NAMES:
        assert get_predictor_class(name).name == name


@pytest.mark.parametrize("name", NAMES)
def test_fit_returns_self_and_predict_has_one_float_per_row(name, table):
    configs, sources = table
    y = target_latency(configs, sources)
    p = make(name, table)
    assert p.fit(configs.iloc[:60], y[:60]) is p
    pred = p.predict(configs.iloc[100:130])
    assert isinstance(pred, np.ndarray) and pred.shape == (30,) and pred.dtype == float
    assert np.all(np.isfinite(pred))


@pytest.mark.parametrize("name", NAMES)
def test_learns_string_categories_and_numbers(name, table):
    configs, sources = table
    y = target_latency(configs, sources)
    pred = make(name, table).fit(configs.iloc[:120], y[:120]).predict(configs.iloc[120:])
    assert spearmanr(pred, y[120:]).statistic > 0.8


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_predictions(name, table):
    configs, sources = table
    y = target_latency(configs, sources)
    a = make(name, table, seed=3).fit(configs.iloc[:50], y[:50]).predict(configs)
    b = make(name, table, seed=3).fit(configs.iloc[:50], y[:50]).predict(configs)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", NAMES)
def test_refit_starts_from_scratch(name, table):
    configs, sources = table
    y = target_latency(configs, sources)
    p = make(name, table)
    first = p.fit(configs.iloc[:50], y[:50]).predict(configs)
    p.fit(configs.iloc[50:100], y[50:100] * 3)
    again = p.fit(configs.iloc[:50], y[:50]).predict(configs)
    np.testing.assert_allclose(first, again)


@pytest.mark.parametrize("name", NAMES)
def test_mismatched_lengths_are_rejected(name, table):
    configs, sources = table
    y = target_latency(configs, sources)
    with pytest.raises(
        ValueError, match=r"'latency_ms' parameter of \w+\.(fit|adapt) must hold one latency per row"
    ):
        make(name, table).fit(configs.iloc[:10], y[:9])


@pytest.mark.parametrize("name", NAMES)
def test_non_positive_latency_is_rejected(name, table):
    configs, _ = table
    with pytest.raises(
        ValueError, match=r"'latency_ms' parameter .* must hold finite latencies > 0 ms\. Got \[0\.0\]"
    ):
        make(name, table).fit(configs.iloc[:3], [1.0, 0.0, 2.0])


@pytest.mark.parametrize("name", NAMES)
def test_configs_must_be_a_dataframe(name, table):
    configs, _ = table
    with pytest.raises(
        TypeError, match=r"'configs' parameter of \w+\.\w+ must be a pandas\.DataFrame.*Got ndarray"
    ):
        make(name, table).fit(configs.to_numpy()[:5], np.ones(5))


@pytest.mark.parametrize("name", NAMES)
def test_predict_before_fit_is_a_lifecycle_error(name, table):
    configs, _ = table
    with pytest.raises(RuntimeError, match="is not fitted yet: call"):
        make(name, table).predict(configs.iloc[:3])


def test_unknown_predictor_names_list_the_available_ones():
    expected = f"Unknown predictor 'nope'. Available: {NAMES}"
    with pytest.raises(ValueError, match=re.escape(expected)):
        get_predictor("nope")
    with pytest.raises(ValueError, match=re.escape(expected)):
        get_predictor_class("nope")


def test_a_name_cannot_be_registered_twice():
    with pytest.raises(
        ValueError, match=r"Duplicate predictor 'lookup-table': already registered by .*LookupTablePredictor"
    ):

        @register_predictor("lookup-table")
        class Other(LatencyPredictor):  # pragma: no cover - never instantiated
            def fit(self, configs, latency_ms):
                return self

            def predict(self, configs):
                return np.zeros(len(configs))
