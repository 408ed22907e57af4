"""The few-shot transfer contract: ``DeviceTransferPredictor(configs, sources).adapt(rows, ms).predict()``."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from frontier.evaluators.latency import DeviceTransferPredictor, SourceMixPredictor, TransferPredictor


def known_target(configs: pd.DataFrame, sources: pd.DataFrame) -> np.ndarray:
    """Exactly 2x device A plus 0.5 ms per 1x1 convolution, wherever it sits."""
    n_conv1 = (configs.filter(like="pos") == "conv1").sum(axis=1).to_numpy()
    return 2.0 * sources["dev_a"].to_numpy() + 0.5 * n_conv1


def test_recovers_a_scaled_source_plus_a_per_op_term_from_few_points(table):
    configs, sources = table
    y = known_target(configs, sources)
    rows = np.random.default_rng(0).choice(len(configs), size=12, replace=False)
    pred = DeviceTransferPredictor(configs, sources, seed=0).adapt(rows, y[rows]).predict()
    rel = np.abs(pred - y) / y
    assert pred.shape == (len(configs),)
    assert rel.max() < 0.03 and rel.mean() < 0.01
    # The source mix alone cannot express the per-op term.
    mix = SourceMixPredictor(configs, sources).adapt(rows, y[rows]).predict()
    assert np.abs(mix - y).mean() > 3 * np.abs(pred - y).mean()


@pytest.mark.parametrize("seed", range(5))
def test_ranks_well_for_any_draw_of_ten(seed, make_table):
    configs, sources = make_table(seed=seed)
    y = known_target(configs, sources)
    rows = np.random.default_rng(100 + seed).choice(len(configs), size=10, replace=False)
    pred = DeviceTransferPredictor(configs, sources, seed=seed).adapt(rows, y[rows]).predict()
    assert spearmanr(pred, y).statistic > 0.97


def test_exactly_a_source_is_reproduced(table):
    configs, sources = table
    y = 3.0 * sources["dev_a"].to_numpy()
    rows = np.arange(10)
    pred = DeviceTransferPredictor(configs, sources).adapt(rows, y[rows]).predict()
    np.testing.assert_allclose(pred, y, rtol=0.01)


def test_predict_rows_configs_and_all(table):
    configs, sources = table
    y = known_target(configs, sources)
    p = DeviceTransferPredictor(configs, sources).adapt([0, 5, 9, 20, 33, 41], y[[0, 5, 9, 20, 33, 41]])
    full = p.predict()
    np.testing.assert_array_equal(p.predict([7, 3, 7]), full[[7, 3, 7]])
    np.testing.assert_array_equal(p.predict(np.array([2, 4])), full[[2, 4]])
    np.testing.assert_array_equal(p.predict(configs.iloc[[11, 12]]), full[[11, 12]])
    assert isinstance(p, TransferPredictor)


def test_fit_on_configs_matches_adapt_on_rows(table):
    configs, sources = table
    y = known_target(configs, sources)
    rows = [3, 14, 15, 92, 65, 35]
    by_rows = DeviceTransferPredictor(configs, sources).adapt(rows, y[rows]).predict()
    shuffled = configs.iloc[rows].sample(frac=1.0, random_state=0)
    by_configs = DeviceTransferPredictor(configs, sources).fit(shuffled, y[shuffled.index]).predict()
    np.testing.assert_allclose(by_rows, by_configs)


def test_numpy_sources_and_ablations(table):
    configs, sources = table
    y = known_target(configs, sources)
    rows = np.arange(0, 60, 5)
    for kwargs in ({}, {"denoise_sources": False}, {"residual": False}):
        p = DeviceTransferPredictor(configs, sources.to_numpy(), **kwargs).adapt(rows, y[rows])
        assert spearmanr(p.predict(), y).statistic > 0.9
        assert p.source_weights_ is not None and p.source_weights_.shape == (3,)
        assert np.all(p.source_weights_ >= 0)


def test_residual_variances_are_reported(table):
    configs, sources = table
    y = known_target(configs, sources)
    p = DeviceTransferPredictor(configs, sources).adapt(np.arange(12), y[:12])
    assert set(p.residual_log_variances_) == {"op_counts", "one_hot", "numeric", "constant", "noise"}


def test_row_rules(table):
    configs, sources = table
    p = DeviceTransferPredictor(configs, sources)
    with pytest.raises(
        ValueError, match=r"'rows' parameter of DeviceTransferPredictor\.adapt must hold distinct"
    ):
        p.adapt([1, 1, 2], [1.0, 1.0, 2.0])
    with pytest.raises(ValueError, match=r"must hold positions in \[0, 300\)\. Got \[300\] instead"):
        p.adapt([1, 300], [1.0, 2.0])
    with pytest.raises(ValueError, match=r"must hold at least 2 row positions\. Got 1 instead"):
        p.adapt([1], [1.0])
    with pytest.raises(
        TypeError, match=r"must be a 1-D sequence of integer row positions\. Got ndarray of dtype float64"
    ):
        p.adapt(np.array([1.0, 2.0]), [1.0, 2.0])
    with pytest.raises(
        ValueError, match=r"'latency_ms' parameter of DeviceTransferPredictor\.adapt must hold one"
    ):
        p.adapt([1, 2, 3], [1.0, 2.0])
    with pytest.raises(RuntimeError, match=r"not fitted yet: call adapt\(rows, latency_ms\)"):
        p.predict()


def test_table_rules(table):
    configs, sources = table
    with pytest.raises(
        ValueError, match="'source_latency_ms' parameter of DeviceTransferPredictor must have one row per"
    ):
        DeviceTransferPredictor(configs, sources.iloc[:-1])
    with pytest.raises(
        ValueError, match=r"'source_latency_ms' parameter .* finite latencies > 0 ms\. Got \[-1\.0\]"
    ):
        bad = sources.copy()
        bad.iloc[0, 0] = -1.0
        DeviceTransferPredictor(configs, bad)
    with pytest.raises(
        ValueError, match="'configs' parameter of DeviceTransferPredictor must not contain missing"
    ):
        DeviceTransferPredictor(configs.assign(pos0=None), sources)
    p = DeviceTransferPredictor(configs, sources)
    unknown = configs.iloc[:1].assign(pos0="conv7")
    with pytest.raises(ValueError, match="must hold rows of the table the predictor was built on"):
        p.fit(unknown, [1.0])
    with pytest.raises(ValueError, match=r"must have the table's columns .* \(missing \['width'\]\)"):
        p.fit(configs.iloc[:2].drop(columns="width"), [1.0, 2.0])


def test_importing_the_predictors_does_not_import_torch():
    code = "import sys, frontier.evaluators.latency; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_fit_rejects_the_same_architecture_twice(table):
    configs, sources = table
    with pytest.raises(
        ValueError, match=r"must hold distinct architectures\. Got the same architecture at rows \[0, 2\]"
    ):
        DeviceTransferPredictor(configs, sources).fit(configs.iloc[[4, 5, 4]], [1.0, 2.0, 1.1])
