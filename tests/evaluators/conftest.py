from __future__ import annotations

# The tests' tiny tokenizer is the one the evaluators' tiny_spec hooks use (frontier.evaluators._tiny).
from frontier.evaluators._tiny import save_char_tokenizer

__all__ = ["save_char_tokenizer"]
