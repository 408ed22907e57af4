from __future__ import annotations

from collections.abc import Callable

import pytest
import torch


def tiny_bert_config(**overrides: int) -> object:
    import transformers

    values = {
        "vocab_size": 64,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 64,
        "max_position_embeddings": 32,
    }
    values.update(overrides)
    return transformers.BertConfig(**values)


@pytest.fixture
def make_bert() -> Callable[[], torch.nn.Module]:
    """A factory for the same tiny, seeded, eval-mode ``BertModel`` every call."""
    import transformers

    config = tiny_bert_config()

    def make() -> torch.nn.Module:
        torch.manual_seed(0)
        return transformers.BertModel(config).eval()

    return make


@pytest.fixture
def bert_inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {"input_ids": torch.randint(0, 64, (2, 7), generator=g)}


def _sqnr_db(ref: torch.Tensor, approx: torch.Tensor) -> float:
    noise = (ref.double() - approx.double()).pow(2).sum()
    return float(10 * torch.log10(ref.double().pow(2).sum() / noise.clamp_min(1e-300)))


@pytest.fixture
def sqnr() -> Callable[[torch.Tensor, torch.Tensor], float]:
    """Signal-to-quantization-noise ratio in dB of ``approx`` against ``ref``."""
    return _sqnr_db
