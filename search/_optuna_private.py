"""Every use Frontier makes of Optuna's private API, in one module, so an Optuna upgrade that moves or
changes one of them breaks here (and in ``tests/search/test_optuna_private.py``, which pins what each is
expected to be) rather than somewhere in the engine.

Why each is needed (Optuna exposes none of them publicly as of 5.1):

- ``compute_hypervolume``: the WFG hypervolume (``optuna._hypervolume``); Optuna's public
  ``optuna.visualization`` helpers recompute fronts and plot, they do not return a number.
- ``is_pareto_front`` / ``pareto_front_trials``: non-dominated sorting of a loss matrix and of trials with
  constraints considered (``optuna.study._multi_objective``); ``Study.best_trials`` exists but reloads the
  study and ignores trials passed in.
- ``rdb_models`` / ``rdb_backend``: the RDB storage's SQLAlchemy models and the storage behind a study's
  cache (``optuna.storages._rdb``, ``storage._backend``), for ``search._optuna._TrialWriter``'s
  one-transaction trial writes on the exact schema version they were checked against.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna._hypervolume import compute_hypervolume
from optuna.study._multi_objective import _get_pareto_front_trials_by_trials, _is_pareto_front

__all__ = ["compute_hypervolume", "is_pareto_front", "pareto_front_trials", "rdb_backend", "rdb_models"]

is_pareto_front = _is_pareto_front
pareto_front_trials = _get_pareto_front_trials_by_trials


def rdb_models() -> Any:
    """``optuna.storages._rdb.models`` (imported on first use: it pulls in SQLAlchemy's ORM)."""
    from optuna.storages._rdb import models

    return models


def rdb_backend(storage: optuna.storages.BaseStorage) -> optuna.storages.BaseStorage:
    """The storage a study's cached storage wraps (``_CachedStorage._backend``), else ``storage`` itself."""
    return getattr(storage, "_backend", storage)
