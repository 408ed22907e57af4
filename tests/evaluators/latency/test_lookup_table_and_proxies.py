from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from frontier.evaluators.latency import (
    LookupTablePredictor,
    RegressorPredictor,
    fbnet_flops,
    nasbench201_flops,
    ofa_flops,
)

OPS = ("conv3", "conv1", "pool", "skip")
BASE_COST = {"conv3": 0.9, "conv1": 0.3, "pool": 0.1, "skip": 0.0}  # skip is free: the table is identifiable


def test_lookup_table_recovers_known_per_op_costs():
    rng = np.random.default_rng(0)
    ops = rng.choice(OPS, size=(200, 4))
    configs = pd.DataFrame(ops, columns=["l0", "l1", "l2", "l3"])
    scale = {"l0": 1.0, "l1": 2.0, "l2": 0.5, "l3": 1.5}
    y = 1.25 + sum(configs[c].map(BASE_COST).to_numpy() * s for c, s in scale.items())
    p = LookupTablePredictor().fit(configs, y)
    assert p.bias_ms_ == pytest.approx(1.25, abs=1e-3)
    costs = p.costs_.set_index(["column", "value"])["cost_ms"]
    for column, s in scale.items():
        for op in OPS:
            assert costs[(column, op)] == pytest.approx(BASE_COST[op] * s, abs=1e-3)
    np.testing.assert_allclose(p.predict(configs), y, atol=1e-3)


def test_lookup_table_treats_numbers_as_choices_and_prices_unseen_ones_at_the_column_mean():
    configs = pd.DataFrame({"k": [3, 5, 7, 3, 5, 7], "op": ["a", "a", "a", "b", "b", "b"]})
    y = np.array([1.0, 2.0, 4.0, 1.5, 2.5, 4.5])
    p = LookupTablePredictor().fit(configs, y)
    np.testing.assert_allclose(p.predict(configs), y, atol=1e-3)
    unseen = p.predict(pd.DataFrame({"k": [9], "op": ["a"]}))
    k_costs = p.costs_.query("column == 'k'")["cost_ms"]
    assert unseen[0] == pytest.approx(p.bias_ms_ + k_costs.mean() + 0.0, abs=1e-3)


def test_lookup_table_and_regressor_option_rules():
    with pytest.raises(ValueError, match=r"'alpha' parameter of LookupTablePredictor must be >= 0\. Got -1"):
        LookupTablePredictor(alpha=-1)
    with pytest.raises(
        ValueError, match=r"'model' parameter of RegressorPredictor must be one of .* Got 'svm'"
    ):
        RegressorPredictor(model="svm")  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match=r"'n_estimators' parameter of RegressorPredictor must be an int >= 1"
    ):
        RegressorPredictor(n_estimators=0)


def test_predict_needs_the_fitted_columns():
    configs = pd.DataFrame({"a": ["x", "y", "x"], "b": [1.0, 2.0, 3.0]})
    p = RegressorPredictor(model="random-forest", n_estimators=5).fit(configs, [1.0, 2.0, 3.0])
    with pytest.raises(
        ValueError, match=r"must have the columns it was fitted on \['a', 'b'\].*missing \['b'\]"
    ):
        p.predict(configs[["a"]])


def test_nasbench201_flops_weighs_3x3_nine_times_1x1():
    unit = nasbench201_flops("|nor_conv_1x1~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    assert unit == pytest.approx(15 * 16 * 16 * 32 * 32 / 1e6)
    assert nasbench201_flops("|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|none~1|none~2|") == (
        pytest.approx(9 * unit)
    )
    assert nasbench201_flops("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|") == 0
    with pytest.raises(ValueError, match="'arch_str' parameter of nasbench201_flops must be a NAS-Bench-201"):
        nasbench201_flops("|conv~0|+|none~0|none~1|")


def test_fbnet_and_ofa_flops_grow_with_kernel_expansion_and_resolution():
    small = ["k3_e1"] * 22
    assert fbnet_flops(["k5_e6", *small[1:]]) > fbnet_flops(small) > fbnet_flops(["skip"] * 22)
    assert fbnet_flops(["k3_e1_g2"] * 22) < fbnet_flops(small)
    with pytest.raises(ValueError, match="'ops' parameter of fbnet_flops must be a sequence of 22 op names"):
        fbnet_flops(small[:3])
    with pytest.raises(ValueError, match=r"must hold 'kK_eE\[_gG\]' or 'skip' names\. Got 'conv'"):
        fbnet_flops(["conv"] * 22)
    ks, e = [3] * 20, [3] * 20
    base = ofa_flops(ks, e, [2] * 5, 160)
    assert ofa_flops([7] * 20, e, [2] * 5, 160) > base
    assert ofa_flops(ks, [6] * 20, [2] * 5, 160) > base
    assert ofa_flops(ks, e, [4] * 5, 160) > base
    assert ofa_flops(ks, e, [2] * 5, 224) > base
    with pytest.raises(ValueError, match=r"5 depths 'd' in 1\.\.4 .* Got .*d=\[5, 2, 2, 2, 2\]"):
        ofa_flops(ks, e, [5, 2, 2, 2, 2], 160)
