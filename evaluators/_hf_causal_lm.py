"""``hf-causal-lm-perplexity``: compress a local transformers causal LM with a candidate allocation and
measure its perplexity on held-out prose."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from frontier.evaluators._base import EvalContext
from frontier.evaluators._hf_compress import METRICS, CompressionEvaluator, CompressionOptions
from frontier.evaluators._registry import register_evaluator
from frontier.spaces import LocalPath

if TYPE_CHECKING:
    import torch
    from torch import nn


class HFCausalLMOptions(CompressionOptions):
    """Options of ``hf-causal-lm-perplexity``.

    Attributes:
        model: a local ``transformers`` causal LM directory (config, weights, tokenizer; loaded with
            ``AutoModelForCausalLM``/``AutoTokenizer``, never ``trust_remote_code``).
        seq_len: tokens per window.
        eval_windows: held-out windows the perplexity is computed on.
        calibration_windows: windows for Wanda calibration and the sensitivity probe, from the training
            side of a content-hash split of the corpus (never overlapping the held-out text).
        val_fraction: share of corpus chunks held out.
        latency_seq_len: tokens of the batch-1 prompt whose forward pass (prefill) is timed.
        warm_start, latency_time_cap_s: see :class:`~evaluators._hf_compress.CompressionOptions`.
    """

    model: LocalPath
    seq_len: int = Field(default=128, ge=8, le=65_536)
    eval_windows: int = Field(default=16, ge=1, le=100_000)
    calibration_windows: int = Field(default=8, ge=1, le=100_000)
    val_fraction: float = Field(default=0.2, gt=0, lt=1)
    latency_seq_len: int = Field(default=16, ge=1, le=65_536)


def _windows(ids: list[int], seq_len: int, count: int, what: str) -> torch.Tensor:
    import torch

    n = min(count, len(ids) // seq_len)
    if n < 1:
        raise ValueError(
            f"hf-causal-lm-perplexity: the {what} text has {len(ids)} tokens, fewer than one window of "
            f"seq_len={seq_len}. Lower seq_len."
        )
    return torch.tensor(ids[: n * seq_len], dtype=torch.long).view(n, seq_len)


def mean_nll(model: nn.Module, windows: torch.Tensor) -> float:
    """Mean next-token NLL of a causal LM over ``windows`` (``[n, seq_len]``, one forward per window);
    ``exp`` of it is the perplexity every causal-LM figure in Frontier reports."""
    import torch

    total = 0.0
    with torch.inference_mode():
        for row in windows:
            out = model(input_ids=row[None], labels=row[None], use_cache=False)
            total += float(out.loss)
    return total / len(windows)


@register_evaluator("hf-causal-lm-perplexity")
class HFCausalLMPerplexity(CompressionEvaluator):
    """Compress a causal LM with a ``bits``/``sparsity`` candidate; score held-out perplexity.

    Text: CPython's ``pydoc_data.topics`` cut into chunks and split by a content hash (as ``lm-train``):
    held-out chunks give ``eval_windows`` windows of ``seq_len`` tokens, training-side chunks the calibration
    windows. Metrics: ``perplexity`` (exp of the mean token NLL on the held-out windows),
    ``perplexity_ratio`` (to the uncompressed model's), and the compression metrics of
    :class:`~evaluators._hf_compress.CompressionEvaluator` (``latency_ms``: a ``latency_seq_len``-token
    prompt at batch 1).
    """

    Options = HFCausalLMOptions
    options: HFCausalLMOptions

    @classmethod
    def tiny_spec(cls, workdir: Path) -> dict[str, Any]:
        """A small study spec this evaluator runs in seconds (the conformance suite runs it; files under
        ``workdir``)."""
        from frontier.evaluators._tiny import save_tiny_model

        model = save_tiny_model(workdir / "tiny-llama", "llama")
        fast = {"seq_len": 32, "eval_windows": 4, "calibration_windows": 2, "latency_time_cap_s": 0.05}
        return {
            "name": "tiny-causal-lm",
            "evaluator": {"kind": "hf-causal-lm-perplexity", "options": {"model": str(model), **fast}},
            "space": [
                {
                    "kind": "family",
                    "name": "q",
                    "family": "bits",
                    "options": {"num_layers": 2, "layout": "llama", "targets": ["**"], "group_by": "all"},
                },
            ],
            "objectives": [{"name": "perplexity", "direction": "minimize"}],
        }

    def metrics(self) -> tuple[str, ...]:
        return ("perplexity", "perplexity_ratio", *METRICS)

    def model_id(self) -> str:
        return self.options.model

    def load_base(self) -> nn.Module:
        import transformers

        path = self.options.model
        if not Path(path).is_dir():
            raise ValueError(
                "The 'model' option of hf-causal-lm-perplexity must be a local transformers model directory. "
                f"Got {path!r} instead."
            )
        self._tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        model: nn.Module = transformers.AutoModelForCausalLM.from_pretrained(path)
        return model

    def prepare(self) -> None:
        from frontier.evaluators._text import chunk_documents, pydoc_topics, split_chunks

        o = self.options
        train, val = split_chunks(chunk_documents(pydoc_topics()), val_fraction=o.val_fraction)

        def encode(chunks: list[str], count: int) -> list[int]:
            ids: list[int] = []
            for chunk in chunks:  # only as much text as the windows need
                ids.extend(self._tokenizer(chunk, add_special_tokens=False)["input_ids"])
                if len(ids) >= count * o.seq_len:
                    break
            return ids

        self._eval = _windows(encode(val, o.eval_windows), o.seq_len, o.eval_windows, "held-out")
        self._calib = _windows(
            encode(train, o.calibration_windows), o.seq_len, o.calibration_windows, "calibration"
        )
        self.base_nll = self._nll(self.base, self._eval)
        self.base_calib_nll = self._nll(self.base, self._calib)

    def _nll(self, model: nn.Module, windows: torch.Tensor) -> float:
        return mean_nll(model, windows)

    def calibration_batches(self) -> list[Any]:
        return [{"input_ids": row[None]} for row in self._calib]

    def latency_input(self, context: EvalContext) -> dict[str, torch.Tensor]:
        seq = context.latency_input[0] if context.latency_input else self.options.latency_seq_len
        batch = context.latency_batch_size or 1
        ids = self._eval.flatten()[:seq]
        return {"input_ids": ids[None].repeat(batch, 1)}

    def quality(self, model: nn.Module) -> dict[str, float]:
        nll = self._nll(model, self._eval)
        return {"perplexity": math.exp(nll), "perplexity_ratio": math.exp(nll - self.base_nll)}

    def distortion(self, model: nn.Module) -> float:
        return max(0.0, self._nll(model, self._calib) - self.base_calib_nll)
