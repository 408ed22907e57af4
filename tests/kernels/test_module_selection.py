from __future__ import annotations

import pytest
from torch import nn

from frontier.kernels import select_modules


def _model() -> nn.Module:
    layer = nn.ModuleDict({"query": nn.Linear(4, 4), "key": nn.Linear(4, 4), "norm": nn.LayerNorm(4)})
    return nn.ModuleDict(
        {
            "encoder": nn.ModuleList([layer, nn.ModuleDict({"query": nn.Linear(4, 4)})]),
            "head": nn.Linear(4, 2),
        }
    )


def test_exact_glob_and_double_star() -> None:
    model = _model()
    assert list(select_modules(model, "head")) == ["head"]
    assert list(select_modules(model, "encoder.*.query")) == ["encoder.0.query", "encoder.1.query"]
    assert list(select_modules(model, "encoder.*")) == ["encoder.0", "encoder.1"]  # '*' is one segment
    assert list(select_modules(model, "**.key")) == ["encoder.0.key"]
    assert list(select_modules(model, "encoder.**.query")) == ["encoder.0.query", "encoder.1.query"]
    assert list(select_modules(model, ["head", "encoder.0.k?y"])) == ["encoder.0.key", "head"]


def test_regex_targets_match_whole_names() -> None:
    model = _model()
    assert list(select_modules(model, r"re:encoder\.\d\.(query|key)")) == [
        "encoder.0.query",
        "encoder.0.key",
        "encoder.1.query",
    ]
    with pytest.raises(ValueError, match="matched no module"):
        select_modules(model, "re:quer")  # fullmatch, not search


def test_no_match_names_the_target_and_close_names() -> None:
    with pytest.raises(
        ValueError,
        match=r"The target 'encoder.0.qurey' matched no module of ModuleDict. Close names: \['encoder.0.qu",
    ):
        select_modules(_model(), "encoder.0.qurey")


def test_invalid_regex_and_wrong_type() -> None:
    with pytest.raises(ValueError, match=r"not a valid regular expression"):
        select_modules(_model(), "re:(")
    with pytest.raises(TypeError, match="Targets must be a str or a sequence of str"):
        select_modules(_model(), [1])  # type: ignore[list-item]
