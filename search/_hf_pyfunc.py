"""MLflow "models from code" for a Hugging Face model directory that Frontier logs (see ``_mlflow_model``).

MLflow copies this file into the logged model and runs it when ``mlflow.pyfunc.load_model`` loads the
model, so it imports only mlflow, numpy, torch and transformers, never Frontier: a production service
loads the model with MLflow's own API and no Frontier installed. The Hugging Face directory travels as the
model's artifact ``hf_model``; a compressed directory (a compressed-tensors ``quantization_config`` in its
config.json) loads through transformers when the ``compressed-tensors`` package is installed, which the
logged requirements then list.

``predict`` takes token ids or text and returns float32 numpy, ``(batch, tokens, width)``:

* ``config.json`` ``architectures`` naming a ``...ForCausalLM``: the model is an ``AutoModelForCausalLM``
  and the output is its **logits** (width = vocabulary size);
* otherwise an ``AutoModel`` and the output is its **last hidden states** (width = hidden size).

Input: a list of token-id lists (ragged lists are right-padded with the pad token and masked out; the
padded positions still appear in the output), one list of ints, a 2-D integer ndarray, a DataFrame with one
column of token-id lists or one integer column per position, or ``{"input_ids": ..., "attention_mask":
...}``; where the directory has a tokenizer, also a string, a list of strings or a one-column DataFrame of
strings (tokenized with padding, as the tokenizer's ``__call__`` does).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import torch
import transformers
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel

ARTIFACT = "hf_model"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "tokenizer.model")


def is_causal_lm(config: dict[str, Any]) -> bool:
    return any(str(a).endswith("ForCausalLM") for a in config.get("architectures") or [])


class HFDirectoryModel(PythonModel):
    def load_context(self, context: Any) -> None:
        path = context.artifacts[ARTIFACT]
        with open(os.path.join(path, "config.json")) as f:
            config = json.load(f)
        self.causal = is_causal_lm(config)
        auto = transformers.AutoModelForCausalLM if self.causal else transformers.AutoModel
        self.model = auto.from_pretrained(path).eval()
        self.tokenizer = (
            transformers.AutoTokenizer.from_pretrained(path)
            if any(os.path.exists(os.path.join(path, f)) for f in _TOKENIZER_FILES)
            else None
        )
        pad = getattr(self.model.config, "pad_token_id", None)
        self.pad_id = int(pad) if pad is not None else 0

    # no type hints: MLflow would read them as an input schema and convert the input to fit it
    def predict(self, context, model_input, params=None):
        inputs = self._encode(model_input)
        with torch.inference_mode():
            out = self.model(**inputs)
        values = out.logits if self.causal else out.last_hidden_state
        return values.float().cpu().numpy()

    def _encode(self, data: Any) -> dict[str, torch.Tensor]:
        mask = None
        if isinstance(data, dict):
            if "input_ids" not in data:
                raise ValueError(
                    f"a dict input must have the key 'input_ids' (token-id lists); got keys {sorted(data)}"
                )
            mask, data = data.get("attention_mask"), data["input_ids"]
        rows = _rows(data)
        if rows and all(isinstance(r, str) for r in rows):
            if self.tokenizer is None:
                raise ValueError(
                    "this model directory has no tokenizer, so the input must be token ids (a list of "
                    f"lists of ints); got strings, e.g. {rows[0][:40]!r}"
                )
            enc = self.tokenizer(rows, padding=True, return_tensors="pt")
            return {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        if rows and all(isinstance(r, int | np.integer) for r in rows):
            rows = [rows]  # one sequence
        ids = [_token_ids(r, i) for i, r in enumerate(rows)]
        if not ids or not all(ids):
            raise ValueError("the input must hold at least one non-empty sequence of token ids; got none")
        width = max(len(r) for r in ids)
        input_ids = torch.tensor([r + [self.pad_id] * (width - len(r)) for r in ids], dtype=torch.long)
        if mask is not None:
            attention = torch.tensor(np.asarray(_rows(mask), dtype=np.int64))
        else:
            attention = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in ids], dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": attention}


def _rows(data: Any) -> list[Any]:
    """The input as a list of rows (DataFrame and ndarray inputs included), without importing pandas."""
    if hasattr(data, "iloc") and hasattr(data, "columns"):  # a DataFrame
        if data.shape[1] == 1:
            return [_plain(v) for v in data.iloc[:, 0].tolist()]
        return [[int(v) for v in row] for row in data.to_numpy().tolist()]
    if hasattr(data, "tolist") and not isinstance(data, str):  # ndarray, Series, tensor
        data = data.tolist()
    if isinstance(data, str):
        return [data]
    if isinstance(data, list | tuple):
        return [_plain(v) for v in data]
    raise TypeError(
        f"the input must be token ids (a list of lists of ints, an ndarray or a DataFrame) or strings; got "
        f"{type(data).__name__}"
    )


def _plain(value: Any) -> Any:
    return value.tolist() if hasattr(value, "tolist") and not isinstance(value, str) else value


def _token_ids(row: Any, i: int) -> list[int]:
    if isinstance(row, list | tuple) and all(
        isinstance(v, int | np.integer) and not isinstance(v, bool) for v in row
    ):
        return [int(v) for v in row]
    raise TypeError(
        f"row {i} of the input must be a list of int token ids (or, with a tokenizer, a string); got "
        f"{row!r:.80}"
    )


set_model(HFDirectoryModel())
