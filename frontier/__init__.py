"""Frontier: AutoML search for neural architectures and compression configs.

The packages live in the repository's top-level folders and install as ``frontier.spaces``,
``frontier.search``, ``frontier.evaluators``, ``frontier.kernels`` and ``frontier.services``; this module
exports the few names a user needs. Each is imported on first use, so ``import frontier`` stays light
(no torch, Ray or MLflow).

Example:
    >>> import frontier
    >>> spec = frontier.load_spec("configs/quickstart.yaml")          # doctest: +SKIP
    >>> outcome = frontier.run_study(spec, run_dir="runs/demo")      # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from frontier.evaluators import Evaluator, register_evaluator
    from frontier.kernels import CompressionRecipe, apply_, load_pretrained_compressed
    from frontier.search import export_point, run_study
    from frontier.spaces import StudySpec, load_spec

__version__ = "0.1.0"


def _demote_checkout_root() -> None:
    """Move a Frontier source checkout's root to the end of ``sys.path``.

    The checkout keeps the product's folders ``kernels/`` and ``spaces/`` at its root; installed, they are
    ``frontier.kernels`` and ``frontier.spaces``, and nothing imports them by their bare names. But Hugging
    Face ships top-level ``kernels`` (a dependency of transformers >= 5.2x) and ``spaces`` packages, and a
    process whose ``sys.path`` starts at the checkout root (``python -m`` or ``python -c`` run there, pytest's
    rootdir, Ray workers, which get the driver's working directory) would import our folders in their
    place: transformers then fails on ``from kernels import CUDAProperties``. Putting the root last keeps
    ``tests``/``benchmarks`` importable there and lets site-packages win.
    """
    root = Path(__file__).resolve().parent.parent
    if not (root / "pyproject.toml").is_file() or not (root / "kernels" / "__init__.py").is_file():
        return  # an installed wheel: the parent is site-packages
    here = [p for p in sys.path if Path(p or ".").resolve() == root]
    if here:
        sys.path[:] = [p for p in sys.path if p not in here] + here


_demote_checkout_root()

# name -> the subpackage that defines it
_EXPORTS = {
    "load_spec": "frontier.spaces",
    "StudySpec": "frontier.spaces",
    "run_study": "frontier.search",
    "export_point": "frontier.search",
    "Evaluator": "frontier.evaluators",
    "register_evaluator": "frontier.evaluators",
    "apply_": "frontier.kernels",
    "CompressionRecipe": "frontier.kernels",
    "load_pretrained_compressed": "frontier.kernels",
}

__all__ = [
    "CompressionRecipe",
    "Evaluator",
    "StudySpec",
    "apply_",
    "export_point",
    "load_pretrained_compressed",
    "load_spec",
    "register_evaluator",
    "run_study",
]


def __getattr__(name: str) -> Any:
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'frontier' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
