"""Pins what Frontier expects of each piece of Optuna's private API (search/_optuna_private.py), so an
Optuna upgrade that changes one fails here, by name, instead of deep in a study."""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import optuna

from frontier.search import _optuna_private as private


def _params(fn: Any) -> list[str]:
    return list(inspect.signature(fn).parameters)


def test_the_private_functions_take_what_frontier_passes() -> None:
    assert _params(private.compute_hypervolume) == ["loss_vals", "reference_point", "assume_pareto"]
    assert _params(private.is_pareto_front) == ["loss_values", "assume_unique_lexsorted"]
    assert _params(private.pareto_front_trials) == ["trials", "directions", "consider_constraint"]


def test_they_compute_what_frontier_relies_on() -> None:
    loss = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0], [3.0, 3.0]])
    assert private.is_pareto_front(loss, assume_unique_lexsorted=False).tolist() == [True, True, True, False]
    hv = private.compute_hypervolume(loss[:3], np.array([4.0, 4.0]), assume_pareto=False)
    assert hv == 6.0
    study = optuna.create_study(directions=["minimize", "minimize"])
    for a, b in loss:
        study.add_trial(optuna.trial.create_trial(values=[a, b]))
    front = private.pareto_front_trials(study.trials, study.directions, consider_constraint=True)
    assert sorted(t.number for t in front) == [0, 1, 2]


def test_the_rdb_schema_the_trial_writer_uses(tmp_path) -> None:
    from frontier.search._optuna import _TrialWriter

    models = private.rdb_models()
    tables = {
        "TrialModel": {"trial_id", "number", "study_id", "state", "datetime_start", "datetime_complete"},
        "TrialParamModel": {"trial_id", "param_name", "param_value", "distribution_json"},
        "TrialValueModel": {"trial_id", "objective", "value", "value_type"},
        "TrialIntermediateValueModel": {"trial_id", "step", "intermediate_value", "intermediate_value_type"},
        "TrialUserAttributeModel": {"trial_id", "key", "value_json"},
        "TrialSystemAttributeModel": {"trial_id", "key", "value_json"},
    }
    for name, columns in tables.items():
        assert columns <= set(getattr(models, name).__table__.c.keys()), name
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'o.db'}")
    assert storage.get_current_version() == _TrialWriter.SCHEMA
    study = optuna.create_study(storage=storage)
    # a study wraps its RDB storage in a cache; the writer needs the RDB storage itself
    assert isinstance(private.rdb_backend(study._storage), optuna.storages.RDBStorage)
    assert not isinstance(study._storage, optuna.storages.RDBStorage)
