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
    """A 2-layer, hidden-32 ``bert`` encoder or ``llama`` causal LM with the character tokenizer, seeded."""
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
    else:
        raise ValueError(f"architecture must be 'bert' or 'llama'. Got {architecture!r} instead.")
    return path
