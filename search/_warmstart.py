"""Candidates a study evaluates before its sampler's own: uniform baselines and warm starts.

The evaluator proposes them (:meth:`evaluators.Evaluator.initial_candidates`); they are enqueued in the
persistent study as WAITING trials, which :class:`search._optuna.WriteThroughStudy` hands out first, in
order. Baselines carry the ``frontier.baseline`` user attribute (MLflow tag ``baseline``), warm starts
``frontier.tag.warm_start``.
"""

from __future__ import annotations

import logging

import optuna

from frontier.search._pareto import BASELINE_ATTR
from frontier.spaces import StudySpec, encode

log = logging.getLogger(__name__)
WARM_START_ATTR = "frontier.tag.warm_start"


def enqueue_initial(spec: StudySpec, study: optuna.Study) -> int:
    """Enqueue the evaluator's initial candidates into a study that has no trials yet; return how many.

    A resumed study (any stored trial) gets nothing: its initial candidates were enqueued when it started.
    At most ``search.n_trials`` are enqueued.
    """
    from frontier.evaluators import for_spec

    if study.get_trials(deepcopy=False):
        return 0
    # not set up: an evaluator whose initial candidates need its models calls ensure_setup itself
    evaluator = for_spec(spec, setup=False)
    candidates = evaluator.initial_candidates(spec)[: spec.search.n_trials]
    for c in candidates:
        attrs = {BASELINE_ATTR: c.label} if c.baseline else {WARM_START_ATTR: c.label}
        study.enqueue_trial(encode(spec.params, c.params), user_attrs=attrs)
    if candidates:
        log.info("enqueued %d initial candidates: %s", len(candidates), [c.label for c in candidates])
    return len(candidates)
