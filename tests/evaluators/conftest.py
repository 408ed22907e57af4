from __future__ import annotations

import string
from pathlib import Path


def save_char_tokenizer(path: Path) -> int:
    """Save a character-level WordPiece tokenizer (no download) to ``path``; returns its vocabulary size."""
    import transformers

    chars = string.ascii_lowercase + string.digits + ".,;:'\"()-*_!?"
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars)]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    transformers.BertTokenizerFast(vocab_file=str(path / "vocab.txt")).save_pretrained(path)
    return len(vocab)
