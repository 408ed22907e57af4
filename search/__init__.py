"""The study engine: Optuna search on Ray Tune workers, tracked in MLflow, with Pareto logic."""

from frontier.search._engine import Progress, StudyOutcome, check_spec, run_study
from frontier.search._mlflow import MlflowTracker, default_tracking_uri, find_parent_run, register_export
from frontier.search._mlflow_model import log_model_dir
from frontier.search._optuna import default_storage, load_study, stored_spec
from frontier.search._pareto import hypervolume, pareto_mask, pareto_trials
from frontier.search._results import StudySummary, TrialRow, export_point, list_studies, select, trial_rows
from frontier.search._samplers import (
    AutoChoice,
    auto_choice,
    available_samplers,
    make_sampler,
    register_sampler,
)

__all__ = [
    "AutoChoice",
    "MlflowTracker",
    "Progress",
    "StudyOutcome",
    "StudySummary",
    "TrialRow",
    "auto_choice",
    "available_samplers",
    "check_spec",
    "default_storage",
    "default_tracking_uri",
    "export_point",
    "find_parent_run",
    "hypervolume",
    "list_studies",
    "load_study",
    "log_model_dir",
    "make_sampler",
    "pareto_mask",
    "pareto_trials",
    "register_export",
    "register_sampler",
    "run_study",
    "select",
    "stored_spec",
    "trial_rows",
]
