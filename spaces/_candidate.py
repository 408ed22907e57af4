"""Candidates and the pure conversion of a space to Optuna distributions."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from frontier.spaces._params import CategoricalParam, FloatParam, IntParam, OrdinalParam, Param

if TYPE_CHECKING:
    import optuna


@dataclass(frozen=True)
class Candidate:
    """One point of a search space: the values of its *active* parameters.

    Attributes:
        params: parameter name -> value (ordinal parameters hold the chosen value, not its index).
        number: the Optuna trial number that proposed it, when there is one.
    """

    params: Mapping[str, Any]
    number: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    def signature(self) -> str:
        """A stable hash of the parameter values (order-independent), for caches."""
        blob = json.dumps(dict(self.params), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def __getitem__(self, key: str) -> Any:
        return self.params[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.params.get(key, default)


def distribution(param: Param) -> optuna.distributions.BaseDistribution:
    """The Optuna distribution that searches ``param`` (ordinal parameters search their index)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(param, IntParam):
        return IntDistribution(param.low, param.high, step=param.step, log=param.log)
    if isinstance(param, FloatParam):
        return FloatDistribution(param.low, param.high, step=param.step, log=param.log)
    if isinstance(param, OrdinalParam):
        return IntDistribution(0, len(param.choices) - 1)
    if isinstance(param, CategoricalParam):
        return CategoricalDistribution(list(param.choices))
    raise TypeError(f"unknown parameter type {type(param).__name__}")


def active(param: Param, values: Mapping[str, Any]) -> bool:
    return param.when is None or param.when.holds(dict(values))


def decode(params: Iterable[Param], raw: Mapping[str, Any]) -> dict[str, Any]:
    """Optuna's stored values -> candidate values (ordinal index -> choice), active parameters only."""
    out: dict[str, Any] = {}
    for p in params:
        if p.name not in raw or not active(p, out):
            continue
        value = raw[p.name]
        out[p.name] = p.choices[int(value)] if isinstance(p, OrdinalParam) else value
    return out


def encode(params: Iterable[Param], values: Mapping[str, Any]) -> dict[str, Any]:
    """Candidate values -> Optuna's stored values; raises ValueError naming an unknown or invalid value."""
    out: dict[str, Any] = {}
    by_name = {p.name: p for p in params}
    for name, value in values.items():
        p = by_name.get(name)
        if p is None:
            raise ValueError(f"unknown parameter '{name}'. Available: {sorted(by_name)}")
        if isinstance(p, OrdinalParam | CategoricalParam):
            if value not in p.choices:
                raise ValueError(f"parameter '{name}' must be one of {list(p.choices)}, but got {value!r}")
            out[name] = p.choices.index(value) if isinstance(p, OrdinalParam) else value
        else:
            out[name] = value
    return out


def _suggest_one(trial: optuna.trial.BaseTrial, p: Param) -> Any:
    if isinstance(p, IntParam):
        return trial.suggest_int(p.name, p.low, p.high, step=p.step, log=p.log)
    if isinstance(p, FloatParam):
        return trial.suggest_float(p.name, p.low, p.high, step=p.step, log=p.log)
    if isinstance(p, OrdinalParam):
        return p.choices[trial.suggest_int(p.name, 0, len(p.choices) - 1)]
    return trial.suggest_categorical(p.name, list(p.choices))


def suggest(trial: optuna.trial.BaseTrial, params: Iterable[Param]) -> Candidate:
    """Ask ``trial`` for every active parameter, in order (define-by-run, so conditions just work)."""
    values: dict[str, Any] = {}
    for p in params:
        if not active(p, values):
            continue
        values[p.name] = _suggest_one(trial, p)
    return Candidate(values, number=getattr(trial, "number", None))
