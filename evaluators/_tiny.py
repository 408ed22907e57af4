"""Tiny, download-free models for the evaluators' ``tiny_spec`` hooks (the conformance suite runs every
registered evaluator on one): a character-level WordPiece tokenizer and 2-layer transformers models built
from a config with seeded random weights, saved like hub models."""

from __future__ import annotations

import string
from pathlib import Path


def save_char_tokenizer(path: Path) -> int:
    """Save a character-level WordPiece tokenizer to ``path``; returns its vocabulary size.

    ``BertTokenizer`` is the fast (Rust) tokenizer in transformers 5; ``BertTokenizerFast`` is an alias.
    """
    import transformers

    chars = string.ascii_lowercase + string.digits + ".,;:'\"()-*_!?"
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars)]
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    transformers.BertTokenizer(vocab_file=str(path / "vocab.txt")).save_pretrained(path)
    return len(vocab)


def save_tiny_model(path: Path, architecture: str) -> Path:
    """A 2-layer, hidden-32 ``bert`` encoder, ``llama`` causal LM or ``qwen2_moe`` MoE causal LM with the
    character tokenizer, seeded (untrained)."""
    import torch
    import transformers

    vocab = save_char_tokenizer(path)
    torch.manual_seed(0)
    if architecture == "bert":
        bert = transformers.BertConfig(
            vocab_size=vocab,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=64,
        )
        transformers.BertModel(bert).save_pretrained(path)
    elif architecture == "llama":
        llama = transformers.LlamaConfig(
            vocab_size=vocab,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=64,
        )
        transformers.LlamaForCausalLM(llama).save_pretrained(path)
    elif architecture == "qwen2_moe":  # 4 routed experts, top-2, a narrow shared expert
        moe = transformers.Qwen2MoeConfig(
            vocab_size=vocab,
            hidden_size=32,
            intermediate_size=64,
            moe_intermediate_size=32,
            shared_expert_intermediate_size=16,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            num_experts=4,
            num_experts_per_tok=2,
            max_position_embeddings=128,
        )
        transformers.Qwen2MoeForCausalLM(moe).save_pretrained(path)
    else:
        raise ValueError(
            f"architecture must be 'bert', 'llama' or 'qwen2_moe'. Got {architecture!r} instead."
        )
    return path
