from __future__ import annotations

import dataclasses
import json

import pytest

from frontier import kernels
from frontier.kernels import (
    CompressionConfig,
    MagnitudeSparsityConfig,
    NMSparsityConfig,
    StructuredPruneConfig,
    WandaSparsityConfig,
    WeightOnlyQuantConfig,
)
from frontier.kernels._config import HANDLERS

CONFIG_TYPES = sorted((entry.config_type for _, entry in HANDLERS.items()), key=lambda t: t.__name__)

EXAMPLES: dict[type[CompressionConfig], CompressionConfig] = {
    WeightOnlyQuantConfig: WeightOnlyQuantConfig(4, group_size=32, symmetric=False),
    MagnitudeSparsityConfig: MagnitudeSparsityConfig(0.3),
    WandaSparsityConfig: WandaSparsityConfig(0.5),
    NMSparsityConfig: NMSparsityConfig(1, 4, importance="activation"),
    StructuredPruneConfig: StructuredPruneConfig(2, ffn_ratio=0.25, importance="activation", round_to=8),
}


def test_every_registered_config_has_an_example() -> None:
    assert set(CONFIG_TYPES) == set(EXAMPLES)
    assert kernels.available_configs() == sorted(t.__name__ for t in EXAMPLES)


@pytest.mark.parametrize("config_type", CONFIG_TYPES, ids=lambda t: t.__name__)
def test_config_conformance(config_type: type[CompressionConfig]) -> None:
    """Every registered config: frozen, default-constructible, JSON round-trip, equality, versioned."""
    for config in (config_type(), EXAMPLES[config_type]):
        assert dataclasses.is_dataclass(config)
        with pytest.raises(dataclasses.FrozenInstanceError):
            config.x = 1  # type: ignore[attr-defined]
        data = config.to_dict()
        assert data["type"] == config_type.__name__
        assert data["version"] == config_type.VERSION
        again = CompressionConfig.from_dict(json.loads(json.dumps(data)))
        assert again == config and type(again) is config_type
        assert hash(again) == hash(config)


def test_from_dict_rejects_unknown_type_listing_available() -> None:
    with pytest.raises(
        ValueError, match=r"Unknown compression config type 'Int3Magic'. Available: \['Magnitude"
    ):
        CompressionConfig.from_dict({"type": "Int3Magic", "version": 1})


def test_from_dict_rejects_unknown_field_and_newer_version() -> None:
    with pytest.raises(ValueError, match=r"Unknown field\(s\) \['bitz'\] for WeightOnlyQuantConfig"):
        CompressionConfig.from_dict({"type": "WeightOnlyQuantConfig", "bitz": 4})
    with pytest.raises(ValueError, match=r"'version' field .* must be an int in \[1, 1\].*Got 2 instead"):
        CompressionConfig.from_dict({"type": "WeightOnlyQuantConfig", "version": 2, "bits": 4})
    with pytest.raises(TypeError, match="must be a mapping"):
        CompressionConfig.from_dict(["WeightOnlyQuantConfig"])  # type: ignore[arg-type]


def test_apply_rejects_unregistered_config_type() -> None:
    import torch

    @dataclasses.dataclass(frozen=True)
    class Unregistered(CompressionConfig):
        pass

    with pytest.raises(ValueError, match=r"Unknown compression config type 'Unregistered'. Available: \["):
        kernels.apply_(torch.nn.Linear(4, 4), Unregistered())


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (
            lambda: WeightOnlyQuantConfig(9),
            ValueError,
            r"The 'bits' parameter of WeightOnlyQuantConfig must be an int in \[2, 8\]. Got 9 instead.",
        ),
        (lambda: WeightOnlyQuantConfig(1), ValueError, r"'bits' .* in \[2, 8\]. Got 1 instead"),
        (lambda: WeightOnlyQuantConfig("8"), TypeError, r"'bits' parameter .* Got '8' instead"),  # type: ignore[arg-type]
        (lambda: WeightOnlyQuantConfig(True), TypeError, r"'bits' parameter"),
        (
            lambda: WeightOnlyQuantConfig(4, group_size=12),
            ValueError,
            r"The 'group_size' parameter of WeightOnlyQuantConfig must be None or a multiple of 8. Got 12",
        ),
        (lambda: WeightOnlyQuantConfig(4, group_size=0), ValueError, r"'group_size' .* int >= 8. Got 0"),
        (lambda: WeightOnlyQuantConfig(4, symmetric=1), TypeError, r"'symmetric' parameter .* bool"),  # type: ignore[arg-type]
        (
            lambda: MagnitudeSparsityConfig(1.0),
            ValueError,
            r"'ratio' parameter of MagnitudeSparsityConfig .* \[0, 1\)",
        ),
        (lambda: WandaSparsityConfig(-0.1), ValueError, r"'ratio' parameter of WandaSparsityConfig"),
        (
            lambda: NMSparsityConfig(4, 4),
            ValueError,
            r"'n' parameter of NMSparsityConfig must be an int in \[1, m - 1\]",
        ),
        (lambda: NMSparsityConfig(2, 4, importance="random"), ValueError, r"'importance' .* one of"),  # type: ignore[arg-type]
        (
            lambda: StructuredPruneConfig(-1),
            ValueError,
            r"'heads' parameter of StructuredPruneConfig .* >= 0",
        ),
        (lambda: StructuredPruneConfig(ffn_ratio=1.5), ValueError, r"'ffn_ratio' parameter"),
        (lambda: StructuredPruneConfig(round_to=0), ValueError, r"'round_to' parameter"),
    ],
)
def test_config_validation_errors(build: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        build()  # type: ignore[operator]
