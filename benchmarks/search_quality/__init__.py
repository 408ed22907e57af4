"""Search-quality benchmark: how close each sampler's front gets to a recorded table's true front."""

from benchmarks.search_quality._harness import (
    BASELINES,
    Config,
    Results,
    run_benchmark,
    scorer_for,
    summarise,
)
from benchmarks.search_quality._metrics import TableScorer, hv_ratio, igd_plus
from benchmarks.search_quality._problems import Problem, all_problems, get_problem
from benchmarks.search_quality._report import markdown, plot
from benchmarks.search_quality._runner import Trace, make_spec, run_engine, run_inprocess, table_path

__all__ = [
    "BASELINES",
    "Config",
    "Problem",
    "Results",
    "TableScorer",
    "Trace",
    "all_problems",
    "get_problem",
    "hv_ratio",
    "igd_plus",
    "make_spec",
    "markdown",
    "plot",
    "run_benchmark",
    "run_engine",
    "run_inprocess",
    "scorer_for",
    "summarise",
    "table_path",
]
