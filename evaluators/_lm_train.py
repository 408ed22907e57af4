"""``lm-train``: train a small decoder-only language model from scratch; measure quality, speed and size."""

from __future__ import annotations

import contextlib
import copy
import math
import re
import resource
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from frontier.evaluators._base import EvalContext, Evaluator, EvaluatorOptions
from frontier.evaluators._registry import register_evaluator
from frontier.spaces import Candidate, DecodedRecipe, FamilyParam, LocalPath, StudySpec, compression_recipe
from frontier.spaces._family_compress import Allocation, check_allocations, layer_index
from frontier.spaces._family_lm import LayerArch, LMArch, MoEFamily, NASFamily

if TYPE_CHECKING:
    from pathlib import Path

    from torch import Tensor, nn

_TRAIN_KEYS = ("lr", "aux_loss_coef")  # plain parameters of the space, besides the family's
# The native model's Linear modules that a joint study's bits/sparsity families may compress (tiny_lm)
_COMPRESSIBLE = re.compile(r"blocks\.\d+\.(qkv|proj)")
_JOINT_METRICS = ("perplexity_dense", "val_loss_dense", "size_mb", "avg_bits", "sparsity")

Backend = Literal["native", "transformers", "auto"]
KeepWeights = Literal["none", "pareto", "all"]


class LMTrainOptions(EvaluatorOptions):
    """Options of the ``lm-train`` evaluator.

    Attributes:
        steps: optimizer steps per trial: the fidelity budget (``search.scheduler.max_t`` should equal it).
        eval_every: validation interval in steps; each evaluation is a ``context.report(step, ...)``.
        seq_len: training and validation window, in tokens.
        batch_size: windows per step.
        lr: peak AdamW learning rate (a ``lr`` parameter in the space overrides it); linear warm-up over
            5 % of ``steps``, then cosine decay to 10 % of the peak, so a trial stopped at a rung followed the
            same schedule as one that continues.
        aux_loss_coef: weight of the MoE load-balancing loss (a space parameter overrides it).
        eval_batches: validation batches per evaluation (fixed windows, the same for every trial).
        val_fraction: share of corpus chunks held out for validation (a content-hash split, disjoint).
        text_file: a local UTF-8 text file to train on instead of the bundled corpus.
        dataset: a Hugging Face ``datasets`` name (``name`` or ``name:config``), read from the local cache.
        dataset_split, dataset_field: the split and the text column of ``dataset``.
        max_chars: cap on the corpus size read from ``dataset``.
        tokenizer: a local ``transformers`` tokenizer directory; default byte-level (vocabulary 256).
        latency_context: tokens already in the KV cache when one decode step is timed.
        prefill_batch, prefill_seq: the shape timed by ``prefill_ms``.
        latency_time_cap_s: time cap of each latency measurement.
        backend: ``native`` (our transformer for every candidate), ``transformers`` (Llama for every
            candidate; one it cannot express fails), ``auto`` (Llama when it can express the candidate).
        seed: fixed seed for weights and batches; default the trial's seed (``context.seed``).
        keep_weights: save each finished trial's trained model: ``none`` (default), ``all``, or ``pareto``
            (the study deletes those of trials that end off the Pareto set when it finishes, and again
            when a resumed study finishes). A trial writes into its work directory,
            ``<run_dir>/trials/<study>/<trial number>/``: ``frontier_lm.json`` (architecture, model
            path, tokenizer, parameters, metrics) and ``model.safetensors``. ``frontier export`` names it
            as ``checkpoint``; :func:`evaluators._lm_export.write_hf_checkpoint` turns it into a
            ``transformers`` checkpoint. Trials stopped early by a scheduler keep nothing.
    """

    steps: int = Field(default=300, ge=1, le=10_000_000)
    eval_every: int = Field(default=50, ge=1)
    seq_len: int = Field(default=64, ge=2, le=65_536)
    batch_size: int = Field(default=16, ge=1, le=65_536)
    lr: float = Field(default=3e-3, gt=0, le=1.0)
    aux_loss_coef: float = Field(default=0.01, ge=0)
    eval_batches: int = Field(default=8, ge=1)
    val_fraction: float = Field(default=0.1, gt=0, lt=0.5)
    text_file: LocalPath | None = None
    dataset: str | None = None
    dataset_split: str = "train"
    dataset_field: str = "text"
    max_chars: int = Field(default=5_000_000, ge=1000)
    tokenizer: LocalPath | None = None
    latency_context: int = Field(default=32, ge=1)
    prefill_batch: int = Field(default=1, ge=1)
    prefill_seq: int = Field(default=64, ge=1)
    latency_time_cap_s: float = Field(default=0.5, gt=0)
    backend: Backend = "native"
    seed: int | None = Field(default=None, ge=0)
    keep_weights: KeepWeights = "none"

    @model_validator(mode="after")
    def _one_source(self) -> LMTrainOptions:
        if self.text_file is not None and self.dataset is not None:
            raise ValueError(
                "'text_file' and 'dataset' are alternative corpora: give one. "
                f"Got text_file={self.text_file!r} and dataset={self.dataset!r}."
            )
        return self


# ----------------------------------------------------------------------------------------------- models


def _rope_tables(head_dim: int, max_len: int, device: Any) -> tuple[Tensor, Tensor]:
    import torch

    rot = head_dim - head_dim % 2
    inv = 1.0 / (10000.0 ** (torch.arange(0, rot, 2, dtype=torch.float32, device=device) / max(rot, 1)))
    angles = torch.outer(torch.arange(max_len, dtype=torch.float32, device=device), inv)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def _apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotary position embedding (Su et al., RoFormer, 2021), rotate-half layout as in Llama; an odd head
    width leaves its last channel unrotated."""
    import torch

    rot = cos.shape[-1]
    if rot == 0:
        return x
    xr, rest = x[..., :rot], x[..., rot:]
    x1, x2 = xr.chunk(2, dim=-1)
    out = xr * cos + torch.cat([-x2, x1], dim=-1) * sin
    return torch.cat([out, rest], dim=-1) if rest.shape[-1] else out


def _native_model(arch: LMArch, *, aux_loss_coef: float, device: Any) -> nn.Module:
    import torch
    import torch.nn.functional as F
    from torch import nn

    from frontier.kernels.moe import MoELayer

    class Block(nn.Module):
        def __init__(self, spec: LayerArch) -> None:
            super().__init__()
            d = arch.hidden
            self.heads = spec.heads
            self.head_dim = d // spec.heads
            self.attn_norm = nn.RMSNorm(d, eps=1e-5)
            self.qkv = nn.Linear(d, 3 * d, bias=False)
            self.proj = nn.Linear(d, d, bias=False)
            self.ffn_norm = nn.RMSNorm(d, eps=1e-5)
            self.ffn = MoELayer(
                d,
                spec.ffn,
                spec.experts,
                top_k=spec.top_k,
                shared_expert=spec.shared_expert,
                aux_loss_coef=aux_loss_coef,
                # With top_k=1 renormalised weights are all 1 and the router would learn from the aux
                # loss only (Switch Transformer uses raw probabilities there).
                normalize_top_k=spec.top_k > 1,
            )

        def forward(
            self, x: Tensor, cos: Tensor, sin: Tensor, past: tuple[Tensor, Tensor] | None
        ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
            b, t, d = x.shape
            qkv = self.qkv(self.attn_norm(x)).view(b, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
            q, k, v = _apply_rope(qkv[0], cos, sin), _apply_rope(qkv[1], cos, sin), qkv[2]
            if past is None:
                a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            else:
                k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
                # Decoding new tokens after a cache: a causal mask aligned to the end of the keys.
                mask = torch.ones(t, k.shape[2], dtype=torch.bool, device=x.device).tril(k.shape[2] - t)
                a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
            return x + self.ffn(self.ffn_norm(x)), (k, v)

    class TinyLM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.arch = arch
            self.embed = nn.Embedding(arch.vocab, arch.hidden)
            nn.init.normal_(self.embed.weight, std=0.02)
            self.blocks = nn.ModuleList(Block(spec) for spec in arch.layers)
            self.norm = nn.RMSNorm(arch.hidden, eps=1e-5)
            for hd in sorted({arch.hidden // spec.heads for spec in arch.layers}):
                cos, sin = _rope_tables(hd, arch.max_len, None)
                self.register_buffer(f"rope_cos_{hd}", cos, persistent=False)
                self.register_buffer(f"rope_sin_{hd}", sin, persistent=False)

        def forward(
            self, ids: Tensor, past: list[tuple[Tensor, Tensor]] | None = None
        ) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
            start = 0 if past is None else past[0][0].shape[2]
            t = ids.shape[1]
            if start + t > arch.max_len:
                raise ValueError(f"sequence of {start + t} tokens exceeds the model's max_len={arch.max_len}")
            x = self.embed(ids)
            cache: list[tuple[Tensor, Tensor]] = []
            for i, block in enumerate(self.blocks):
                cos = getattr(self, f"rope_cos_{block.head_dim}")[start : start + t]
                sin = getattr(self, f"rope_sin_{block.head_dim}")[start : start + t]
                x, kv = block(x, cos, sin, None if past is None else past[i])
                cache.append(kv)
            return F.linear(self.norm(x), self.embed.weight), cache  # tied output embedding

        def router_loss(self) -> Tensor:
            losses: list[Tensor] = []
            for block in self.blocks:
                loss = block.ffn.router_loss  # type: ignore[union-attr]
                if loss is not None:
                    losses.append(loss)  # type: ignore[arg-type]
            return torch.stack(losses).sum() if losses else torch.zeros(())

    return TinyLM().to(device)


class _Runner:
    """One interface over both model paths: training logits, router loss, timed prefill and decode."""

    def __init__(self, model: nn.Module, *, hf: bool) -> None:
        self.model = model
        self.hf = hf

    def logits(self, ids: Tensor) -> Tensor:
        if self.hf:
            return self.model(input_ids=ids, use_cache=False).logits
        return self.model(ids)[0]

    def router_loss(self) -> Tensor | None:
        return None if self.hf else self.model.router_loss()  # type: ignore[operator]

    def decode_step(self, context: Tensor, nxt: Tensor) -> Callable[[], Any]:
        """A callable that decodes token ``nxt`` after a KV cache holding ``context`` (the cache is not
        grown: each call sees the same cache)."""
        import torch

        with torch.inference_mode():
            if not self.hf:
                past = self.model(context)[1]
                return lambda: self.model(nxt, past)
            import inspect

            from transformers import DynamicCache

            cache = DynamicCache(config=self.model.config)  # type: ignore[arg-type]
            # transformers 5.25 renamed ``past_key_values`` to ``cache`` (the old name warns until 5.40)
            params = inspect.signature(self.model.forward).parameters
            key = "cache" if "cache" in params else "past_key_values"
            self.model(input_ids=context, use_cache=True, **{key: cache})

        def step() -> Any:
            out = self.model(input_ids=nxt, use_cache=True, **{key: cache})
            cache.crop(-nxt.shape[1])  # transformers 5: a negative count removes the newest tokens
            return out

        return step


def _llama_model(arch: LMArch, *, device: Any) -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    layer = arch.layers[0]
    config = LlamaConfig(
        vocab_size=arch.vocab,
        hidden_size=arch.hidden,
        intermediate_size=layer.ffn,
        num_hidden_layers=len(arch.layers),
        num_attention_heads=layer.heads,
        num_key_value_heads=layer.heads,
        head_dim=arch.hidden // layer.heads,
        max_position_embeddings=arch.max_len,
        tie_word_embeddings=True,
        rms_norm_eps=1e-5,
        attn_implementation="sdpa",  # type: ignore[call-arg]  # accepted by PreTrainedConfig's **kwargs
    )
    return LlamaForCausalLM(config).to(device)


# ---------------------------------------------------------------------------------------------- memory


# Memory figures are MB (10**6 bytes), like every size Frontier reports; /proc and ru_maxrss count KiB.
_KB = 1024 / 1e6


def _rss_mb() -> float | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * _KB
    except OSError:
        pass
    return None


def _release_free_memory() -> None:
    """Hand memory freed by earlier trials back to the OS (glibc ``malloc_trim``), so that this trial's
    allocations show up as RSS growth instead of silently reusing the allocator's free lists."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    name = ctypes.util.find_library("c")
    if name is None:
        return
    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL(name).malloc_trim(0)


class _PeakRSS:
    """Peak resident-set growth over a baseline, without psutil.

    On Linux the kernel's high-water mark ``VmHWM`` is reset by writing ``5`` to ``/proc/self/clear_refs``,
    so each trial measures its own peak even in a reused worker; free allocator memory is first returned to
    the OS so that reusing it counts as growth. Memory a library keeps cached across trials (allocated once
    by the first trial of a worker) is not seen again: ``setup`` runs a throw-away model to take it early.
    Elsewhere it falls back to ``ru_maxrss`` growth, which reads 0 when an earlier trial in the same process
    peaked higher.
    """

    def __init__(self) -> None:
        _release_free_memory()
        self.base = _rss_mb()
        self.reset = False
        if self.base is not None:
            try:
                with open("/proc/self/clear_refs", "w") as fh:
                    fh.write("5")
                self.reset = True
            except OSError:
                pass
        self.base_maxrss = self._maxrss_mb()
        if self.base is None:
            self.base = self.base_maxrss

    @staticmethod
    def _maxrss_mb() -> float:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss / 1e6 if sys.platform == "darwin" else rss * _KB  # bytes on macOS, KiB on Linux

    def growth_mb(self) -> float:
        if self.reset:
            try:
                with open("/proc/self/status") as fh:
                    for line in fh:
                        if line.startswith("VmHWM:"):
                            return max(0.0, int(line.split()[1]) * _KB - float(self.base or 0.0))
            except OSError:
                pass
        return max(0.0, self._maxrss_mb() - self.base_maxrss)


# ------------------------------------------------------------------------------------------- evaluator


@register_evaluator("lm-train")
class LMTrain(Evaluator):
    """Train the candidate decoder-only language model from scratch on a text corpus and measure it.

    Corpus: by default CPython's bundled help topics (``pydoc_data.topics``, ~460k characters), byte-level
    (vocabulary 256), so nothing is downloaded; or ``text_file``, or a cached ``dataset``, optionally with a
    local ``tokenizer``. Text is cut into ~4k-character chunks at paragraph breaks and split train /
    validation by a hash of each chunk's content: the split is deterministic and disjoint.

    The space holds one ``nas`` or ``moe`` family, which decodes each candidate into its
    :class:`~spaces.LMArch` (depth, the one residual width, per-layer heads, FFN widths and experts); besides
    it, the space may search the training parameters ``lr`` and ``aux_loss_coef``.

    **Joint studies.** Besides the architecture family the space may hold ``bits`` and ``sparsity`` families
    over the native model's Linear modules (``layout: tiny_lm``: ``blocks.I.qkv``, ``blocks.I.proj``, I
    0-based; the FFN and experts are fused tensors and the router stays float), each with ``depth_of: <the
    family's name>`` so that a layer's allocation exists only when the sampled depth has that layer
    (``backend: native``). The candidate trains as usual; at every evaluation a copy of the trained model is
    compressed with the candidate's recipe (Wanda calibrated on fixed training windows) and evaluated:
    ``perplexity`` and ``val_loss`` are then the compressed model's (``perplexity_dense``,
    ``val_loss_dense`` the trained model's), ``latency_ms``/``prefill_ms`` time the compressed model's
    packed kernels (measured once, on the compressed untrained model before training), and ``size_mb``
    (packed bytes / 1e6), ``avg_bits`` and ``sparsity`` (over the allocated modules the architecture has)
    are added. ``total_params``, ``active_params`` count the uncompressed architecture.

    Model paths (``backend``):

    - ``native`` (default): our pre-norm decoder, the same for every candidate so latencies compare like
      with like. Each layer: RMSNorm, causal multi-head attention with RoPE through
      ``torch.nn.functional.scaled_dot_product_attention``, RMSNorm, and a
      :class:`kernels.moe.MoELayer` FFN (SwiGLU; dense when ``experts`` is 0). Output embedding tied.
    - ``transformers``: ``LlamaForCausalLM`` (same layer recipe, tied embeddings), which can only express
      a dense stack whose layers are all alike; other candidates fail with the reason. Per-layer head
      counts, FFN widths and expert counts cannot be written in a ``LlamaConfig``, and transformers' MoE
      configs hold one global expert count (see :mod:`kernels.moe`).
    - ``auto``: Llama for candidates it can express, native otherwise. Latencies of the two paths differ
      for the same architecture (the ``uses_transformers`` metric records which ran), so prefer ``native``
      for a latency Pareto front.

    Fidelity: the optimizer step. Every ``eval_every`` steps before the last it calls
    ``context.report(step, metrics)`` with the validation ``perplexity`` and the objectives measured before
    training (latency, prefill, parameter counts, memory so far), so a multi-objective scheduler (MO-ASHA)
    sees the whole objective vector at every rung. The evaluation after the last step is not reported but
    returned: it is the trial's result, and a scheduler rung at ``max_t == steps`` (MO-ASHA places one
    there when ``max_t = grace_period * reduction_factor**k``) would otherwise stop a trial that has
    finished, and the engine would record it as pruned.

    Metrics:
        perplexity: ``exp`` of the mean validation cross-entropy per token (per byte by default).
        val_loss: that cross-entropy (nats per token).
        latency_ms: median wall-clock time to generate one token at batch 1: an incremental decode step
            with a KV cache already holding ``latency_context`` tokens (the cache is not grown between
            repeats), measured with :func:`evaluators.latency.measure_latency` before training.
        latency_norm_ms: the same at the machine's calibrated speed (CPU: scaled by an interleaved
            reference workload, so a shared machine's drift cancels; equal to ``latency_ms`` on a GPU).
        latency_ci_ms: half-width of the 95 % confidence interval of ``latency_norm_ms``.
        prefill_ms: median wall-clock time of one forward pass over ``prefill_batch x prefill_seq`` tokens;
            ``prefill_norm_ms`` the same at the calibrated speed.
        total_params: every parameter (tied embedding counted once).
        active_params: parameters used per token: dense parameters, the router, ``top_k`` routed experts
            and the shared expert of each MoE layer (:func:`kernels.moe.moe_param_counts`).
        peak_memory_mb: peak resident-memory growth of the process while building, measuring and training
            (``torch.cuda.max_memory_allocated`` on a GPU), in MB (10**6 bytes) like every size here.
        moe_layers: layers with a routed FFN.
        uses_transformers: 1 when the ``transformers`` Llama path ran, else 0.
    """

    Options = LMTrainOptions
    options: LMTrainOptions
    _family: tuple[str, NASFamily] | None = None
    _allocations: tuple[Allocation, ...] = ()  # a joint study's bits/sparsity families
    _compression: tuple[FamilyParam, ...] = ()  # their spec items (what compression_recipe decodes)

    @classmethod
    def tiny_spec(cls, workdir: Path) -> dict[str, Any]:
        """A small study spec this evaluator runs in seconds (the conformance suite runs it; files under
        ``workdir``)."""
        options = {"steps": 4, "eval_every": 2, "seq_len": 32, "batch_size": 4, "eval_batches": 2}
        latency = {"latency_context": 8, "prefill_seq": 16, "latency_time_cap_s": 0.05}
        return {
            "name": "tiny-lm-train",
            "evaluator": {"kind": "lm-train", "options": {**options, **latency}},
            "space": [
                {
                    "kind": "family",
                    "name": "lm",
                    "family": "nas",
                    "options": {"layers": [1, 2], "hidden": [16, 32], "head_dim": [8], "ffn_ratio": [1, 2]},
                },
            ],
            "objectives": [{"name": "perplexity", "direction": "minimize"}],
        }

    def metrics(self) -> tuple[str, ...]:
        return (
            "perplexity",
            "val_loss",
            "latency_ms",
            "latency_norm_ms",
            "latency_ci_ms",
            "prefill_ms",
            "prefill_norm_ms",
            "total_params",
            "active_params",
            "peak_memory_mb",
            "moe_layers",
            "uses_transformers",
            *(_JOINT_METRICS if self._allocations else ()),
        )

    def bind_spec(self, spec: StudySpec) -> None:
        families = [
            (item.name, compiled)
            for item in spec.space
            if isinstance(item, FamilyParam) and isinstance(compiled := item.compile(), NASFamily)
        ]
        if len(families) != 1:
            raise ValueError(
                "lm-train builds one model, so the space must hold exactly one 'nas' or 'moe' family (kind: "
                f"family), which decodes each candidate into its architecture. Got {len(families)}: "
                f"{[name for name, _ in families]}"
            )
        prefix, family = families[0]
        owned = {p["name"] for p in family.expand(prefix)}
        allocations = check_allocations(spec.space)
        for alloc in allocations:
            if alloc.depth_of != prefix:
                raise ValueError(
                    f"lm-train: family '{alloc.prefix}' ({alloc.family}) must set 'depth_of: {prefix}', so "
                    f"that its layers follow the depth of the '{family.family}' family '{prefix}' (an "
                    "allocation for a layer the candidate lacks must not be sampled). Got "
                    f"depth_of={alloc.depth_of!r}"
                )
            wrong = [m for m in alloc.modules if not _COMPRESSIBLE.fullmatch(m)]
            if wrong:
                raise ValueError(
                    f"lm-train: family '{alloc.prefix}' ({alloc.family}) targets {wrong[:4]}, which are not "
                    "Linear modules of the native model. Compressible: 'blocks.I.qkv' and 'blocks.I.proj' "
                    "(I 0-based; 'layout: tiny_lm'); the FFN and experts are fused tensors"
                )
            owned.update(alloc.groups)
        if allocations and self.options.backend != "native":
            raise ValueError(
                "lm-train: bits/sparsity families compress the native model's modules ('layout: tiny_lm'), "
                f"so they need backend 'native'. Got backend={self.options.backend!r}"
            )
        stray = sorted(p.name for p in spec.params if p.name not in owned and p.name not in _TRAIN_KEYS)
        if stray:
            raise ValueError(
                f"lm-train does not use parameters {stray}. The architecture comes from the "
                f"'{family.family}' family '{prefix}'; other parameters may be {list(_TRAIN_KEYS)}"
            )
        self._family = (prefix, family)
        self._allocations = tuple(allocations)
        self._compression = tuple(
            item
            for item in spec.space
            if isinstance(item, FamilyParam) and item.family in ("bits", "sparsity")
        )

    # -------------------------------------------------------------------------------------- data

    def setup(self) -> None:
        import torch

        self.load_data()
        self._warm_up()
        widths = sorted({int(c) for a in self._allocations if a.family == "bits" for c in a.choices})
        if widths:
            from frontier.kernels._cpu_kernels import warm_up

            warm_up(widths, threads=torch.get_num_threads())  # numba compiles here, not in a trial

    def load_data(self) -> None:
        """Read and tokenise the corpus: training ids, the fixed validation windows and the fixed
        calibration windows (a joint study's Wanda inputs, which
        :func:`evaluators._lm_export.write_joint_checkpoint` calibrates the export on as well)."""
        import torch

        from frontier.evaluators import _text

        o = self.options
        if o.text_file is not None:
            docs = _text.text_file_documents(o.text_file)
        elif o.dataset is not None:
            docs = _text.dataset_documents(
                o.dataset, split=o.dataset_split, field=o.dataset_field, max_chars=o.max_chars
            )
        else:
            docs = _text.pydoc_topics()
        train, val = _text.split_chunks(_text.chunk_documents(docs), val_fraction=o.val_fraction)
        if not train or not val:
            raise ValueError(
                "lm-train: the corpus is too small to split into training and validation text "
                f"({len(train)} and {len(val)} chunks); give a longer text"
            )
        if o.tokenizer is None:
            self.vocab = 256
            tr = torch.frombuffer(bytearray(_text.byte_tokens(train)), dtype=torch.uint8).long()
            va = torch.frombuffer(bytearray(_text.byte_tokens(val)), dtype=torch.uint8).long()
        else:
            tok = _load_tokenizer(o.tokenizer)
            self.vocab = len(tok)
            sep = "\n\n"
            tr = torch.tensor(tok(sep.join(train), add_special_tokens=False)["input_ids"], dtype=torch.long)
            va = torch.tensor(tok(sep.join(val), add_special_tokens=False)["input_ids"], dtype=torch.long)
        need = o.seq_len + 1
        for what, ids in (("training", tr), ("validation", va)):
            if ids.numel() < need:
                raise ValueError(
                    f"lm-train: the {what} text has {ids.numel()} tokens, fewer than seq_len + 1 = {need}; "
                    "lower seq_len or give a longer corpus"
                )
        self.train_ids, self.val_ids = tr, va
        n_windows = min(o.eval_batches * o.batch_size, (va.numel() - 1) // o.seq_len)
        starts = torch.arange(n_windows) * o.seq_len
        idx = starts[:, None] + torch.arange(o.seq_len + 1)[None, :]
        self.val_windows = va[idx]  # fixed, non-overlapping, the same for every trial
        # Calibration inputs of a joint study's Wanda masks: fixed training windows, evenly spaced.
        n_calib = min(2 * o.batch_size, (tr.numel() - 1) // o.seq_len)
        stride = (tr.numel() - o.seq_len) // n_calib
        calib = (torch.arange(n_calib) * stride)[:, None] + torch.arange(o.seq_len)[None, :]
        self.calibration_windows = tr[calib]

    def _warm_up(self) -> None:
        """Evaluate a throw-away model for one step so lazy one-time allocations (kernels, thread pools,
        optimizer paths, imports) are not charged to the first trial's ``peak_memory_mb``."""
        from frontier.evaluators.latency import fixed_threads

        tiny: dict[str, Any] = {"warm.depth": 1, "warm.hidden": 8, "warm.head_dim_1": 4}
        family: NASFamily
        if self.options.backend != "transformers":  # Llama cannot express an MoE layer
            family = MoEFamily.compile(
                {"layers": [1, 1], "hidden": [8], "head_dim": [4], "experts": [2], "top_k": [1]}
            )
            tiny.update(
                {
                    "warm.experts_1": 2,
                    "warm.top_k_1": 1,
                    "warm.expert_ffn_1": 8,
                    "warm.shared_expert_1": False,
                }
            )
        else:
            family = NASFamily.compile({"layers": [1, 1], "hidden": [8], "head_dim": [4], "ffn_ratio": [2]})
            tiny["warm.ffn_ratio_1"] = 2
        with fixed_threads(1):
            self._run(
                Candidate(tiny),
                EvalContext(),
                device="cpu",
                seed=0,
                steps=1,
                warm_up=True,
                family=("warm", family),
            )
        if self.options.backend != "native":
            import transformers  # noqa: F401

    # ------------------------------------------------------------------------------------- model

    def architecture(self, candidate: Candidate, *, family: tuple[str, NASFamily] | None = None) -> LMArch:
        """The candidate's model, decoded by the spec's ``nas``/``moe`` family (:meth:`NASFamily.decode`).

        Raises:
            RuntimeError: :meth:`bind_spec` was not called (the family is what reads the parameters).
            ValueError: a parameter is missing or breaks a rule (named, with its value).
        """
        bound = family or self._family
        if bound is None:
            raise RuntimeError(
                "lm-train: bind_spec(spec) must be called before evaluating: a candidate's architecture is "
                "decoded by the spec's 'nas' or 'moe' family"
            )
        prefix, decoder = bound
        o = self.options
        max_len = max(o.seq_len, o.prefill_seq, o.latency_context + 1)
        return decoder.decode(prefix, candidate.params, vocab=getattr(self, "vocab", 256), max_len=max_len)

    def build(
        self, candidate: Candidate, *, device: str = "cpu", family: tuple[str, NASFamily] | None = None
    ) -> tuple[nn.Module, bool]:
        """The candidate's model and whether it is the ``transformers`` Llama (see the class docstring);
        ``family`` (``(prefix, family)``) decodes it instead of the bound spec's."""
        arch = self.architecture(candidate, family=family)
        backend = self.options.backend
        if backend == "transformers" and not arch.llama_expressible:
            raise ValueError(
                "lm-train: backend 'transformers' (LlamaForCausalLM) needs a dense model whose layers are "
                f"all alike; got {arch.layers}. Use backend 'native' or 'auto'"
            )
        aux = float(candidate.params.get("aux_loss_coef", self.options.aux_loss_coef))
        if backend != "native" and arch.llama_expressible:
            return _llama_model(arch, device=device), True
        return _native_model(arch, aux_loss_coef=aux, device=device), False

    @staticmethod
    def param_counts(model: nn.Module) -> tuple[int, int]:
        """``(total, active per token)``; the MoE layers' inactive experts are what separates them."""
        from frontier.kernels.moe import MoELayer, moe_param_counts

        total = sum(p.numel() for p in model.parameters())
        active = total
        for mod in model.modules():
            if isinstance(mod, MoELayer):
                held, used = moe_param_counts(mod)
                active -= held - used
        return total, active

    # ---------------------------------------------------------------------------------- evaluate

    def evaluate(self, candidate: Candidate, context: EvalContext) -> dict[str, float]:
        import torch

        from frontier.evaluators.latency import fixed_threads

        device = context.device
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError(f"lm-train: context.device is {device!r} but torch sees no CUDA device")
        keep = self.options.keep_weights
        if keep != "none" and context.workdir is None:
            raise RuntimeError(
                f"lm-train: keep_weights={keep!r} saves the trained model in the trial's work directory, "
                "but context.workdir is None. Run the evaluator in a study (its workers set it) or pass "
                "EvalContext(workdir=...); or set keep_weights 'none'"
            )
        seed = self.options.seed if self.options.seed is not None else context.seed
        save_to = None if keep == "none" else context.workdir
        with fixed_threads(context.threads):
            return self._run(candidate, context, device=device, seed=seed, save_to=save_to)

    def _run(
        self,
        candidate: Candidate,
        context: EvalContext,
        *,
        device: str,
        seed: int,
        steps: int | None = None,
        warm_up: bool = False,
        save_to: Path | None = None,
        family: tuple[str, NASFamily] | None = None,
    ) -> dict[str, float]:
        import torch
        import torch.nn.functional as F

        o = self.options
        cuda = device.startswith("cuda")
        memory = _PeakRSS()
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        torch.manual_seed(seed)
        model, hf = self.build(candidate, device=device, family=family)
        runner = _Runner(model, hf=hf)
        arch = self.architecture(candidate, family=family)
        total, active = self.param_counts(model)

        def peak_mb() -> float:
            if cuda:
                return float(torch.cuda.max_memory_allocated(device)) / 1e6
            return memory.growth_mb()

        model.eval()
        joint = None if warm_up or not self._allocations else self._joint(candidate, arch)
        timed = runner
        if joint is not None:
            # Timed on the compressed *untrained* copy, once, before training: the packed kernels' time
            # depends on shapes, bit-widths and group sizes, not on the weights' values, and masked
            # sparsity leaves the matmul's work unchanged whichever weights are zero; so this is the
            # trained compressed model's time, the measurement stays out of the training steps, and every
            # MO-ASHA rung sees it.
            with context.training():  # compressing is work, not a measurement
                timed = _Runner(joint.compress(model, device=device), hf=False)
        # The warm-up run (setup) is not a figure anyone reads: no lane, no cache.
        measure_ctx = EvalContext(threads=context.threads, device=device) if warm_up else context
        fixed = self._measure(
            timed,
            measure_ctx,
            arch=arch,
            hf=hf,
            cuda=cuda,
            time_cap_s=0.01 if warm_up else None,
            recipe=None if joint is None else joint.decoded,
        )
        del timed
        fixed.update(
            total_params=float(total),
            active_params=float(active),
            moe_layers=float(arch.moe_layers),
            uses_transformers=float(hf),
        )

        lr = float(candidate.params.get("lr", o.lr))
        opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
        steps = o.steps if steps is None else steps
        warm = max(1, steps // 20)

        def lr_at(step: int) -> float:
            if step <= warm:
                return step / warm
            frac = (step - warm) / max(1, steps - warm)
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: lr_at(i + 1))
        gen = torch.Generator().manual_seed(seed)
        train = self.train_ids
        high = train.numel() - o.seq_len - 1
        offsets = torch.arange(o.seq_len + 1)
        metrics: dict[str, float] = {}

        def train_step(step: int) -> float | None:
            model.train()
            starts = torch.randint(0, high + 1, (o.batch_size,), generator=gen)
            batch = train[starts[:, None] + offsets].to(device)
            logits = runner.logits(batch[:, :-1])
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
            extra = runner.router_loss()
            total_loss = loss if extra is None else loss + extra.to(loss.device)
            if not torch.isfinite(total_loss):
                raise FloatingPointError(
                    f"lm-train: training diverged at step {step} (loss {float(total_loss)}); lower lr "
                    f"(got lr={lr})"
                )
            opt.zero_grad(set_to_none=True)
            total_loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            if step % o.eval_every == 0 or step == steps:
                return self._validate(runner, device=device)
            return None

        for step in range(1, steps + 1):
            with context.training():  # no latency measurement on this node during the step
                val_loss = train_step(step)
                compressed = None
                if val_loss is not None and joint is not None:
                    compressed = self._evaluate_compressed(joint, model, device=device)
            if val_loss is not None:
                metrics = {
                    "perplexity": math.exp(min(val_loss, 700.0)),
                    "val_loss": val_loss,
                    **fixed,
                    "peak_memory_mb": peak_mb(),
                }
                if compressed is not None:
                    # the objectives see the compressed model; the dense figures stay for comparison
                    metrics.update(
                        perplexity_dense=metrics["perplexity"], val_loss_dense=val_loss, **compressed
                    )
                if step < steps:
                    context.report(step, metrics)
        if save_to is not None:
            from frontier.evaluators._lm_export import save_trial_checkpoint

            save_trial_checkpoint(
                model,
                arch,
                save_to,
                llama=hf,
                tokenizer=o.tokenizer,
                params=candidate.params,
                metrics=metrics,
            )
        return metrics

    def _joint(self, candidate: Candidate, arch: LMArch) -> _Joint:
        """The candidate's compression in a joint study (its bits/sparsity values, on the layers it has)."""
        decoded = compression_recipe(self._compression, candidate.params)
        depth = len(arch.layers)
        # avg_bits and sparsity are over every allocated module the architecture has (one left in float
        # counts 32 bits), as compression evaluators report them
        scope = sorted(
            {m for a in self._allocations for m in a.modules if (i := layer_index(m)) is None or i < depth}
        )
        return _Joint(decoded, scope, self.calibration_windows, batch_size=self.options.batch_size)

    def _evaluate_compressed(self, joint: _Joint, model: nn.Module, *, device: str) -> dict[str, float]:
        """Compress a copy of the trained model and validate it: the compressed metrics of an evaluation."""
        from frontier import kernels

        compressed = joint.compress(model, device=device)
        val_loss = self._validate(_Runner(compressed, hf=False), device=device)
        targets = joint.scope
        original = kernels.weight_counts(model, targets)
        return {
            "perplexity": math.exp(min(val_loss, 700.0)),
            "val_loss": val_loss,
            "size_mb": kernels.model_size_bytes(compressed) / 1e6,
            "avg_bits": kernels.avg_bits(compressed, targets),
            "sparsity": kernels.masked_fraction(compressed, targets, original=original),
        }

    def _validate(self, runner: _Runner, *, device: str) -> float:
        import torch
        import torch.nn.functional as F

        runner.model.eval()
        total, count = 0.0, 0
        with torch.inference_mode():
            for chunk in self.val_windows.split(self.options.batch_size):
                batch = chunk.to(device)
                logits = runner.logits(batch[:, :-1])
                total += float(
                    F.cross_entropy(
                        logits.reshape(-1, logits.shape[-1]).float(),
                        batch[:, 1:].reshape(-1),
                        reduction="sum",
                    )
                )
                count += batch[:, 1:].numel()
        return total / count

    def _measure(
        self,
        runner: _Runner,
        context: EvalContext,
        *,
        arch: LMArch,
        hf: bool,
        cuda: bool,
        time_cap_s: float | None = None,
        recipe: DecodedRecipe | None = None,
    ) -> dict[str, float]:
        import dataclasses

        import torch

        device = context.device
        o = self.options
        sync = torch.cuda.synchronize if cuda else None
        cap = o.latency_time_cap_s if time_cap_s is None else time_cap_s
        gen = torch.Generator().manual_seed(0)
        vocab = getattr(self, "vocab", 256)
        context_ids = torch.randint(0, vocab, (1, o.latency_context + 1), generator=gen).to(device)
        prefill_ids = torch.randint(0, vocab, (o.prefill_batch, o.prefill_seq), generator=gen).to(device)
        step = runner.decode_step(context_ids[:, :-1], context_ids[:, -1:])
        signature: dict[str, Any] = {
            "evaluator": self.name,
            "arch": dataclasses.asdict(arch),
            "transformers": hf,
        }
        if recipe is not None:  # the compressed model's time differs from the dense one's
            signature["recipe"] = recipe.to_dict()
        with torch.inference_mode():
            decode = context.measure_latency(
                step,
                signature={**signature, "what": "decode"},
                input_shape=tuple(context_ids.shape),
                time_cap_s=cap,
                sync=sync,
            )
            prefill = context.measure_latency(
                lambda: runner.logits(prefill_ids),
                signature={**signature, "what": "prefill"},
                input_shape=tuple(prefill_ids.shape),
                time_cap_s=cap,
                sync=sync,
            )
        metrics = decode.metrics()
        del metrics["latency_cv"]
        return {**metrics, "prefill_ms": prefill.wall_ms, "prefill_norm_ms": prefill.median_ms}


class _Joint:
    """A joint study candidate's compression: its decoded recipe, applied to copies of the model.

    Args:
        decoded: the candidate's recipe in native module names (``blocks.I.qkv``...).
        scope: the allocated modules the architecture has (what ``avg_bits``/``sparsity`` are over).
        windows: calibration inputs (token windows) for activation-aware configs (Wanda).
        batch_size: windows per calibration forward pass.
    """

    def __init__(self, decoded: DecodedRecipe, scope: list[str], windows: Tensor, *, batch_size: int) -> None:
        from frontier import kernels

        self.decoded = decoded
        self.scope = scope
        self.recipe = kernels.CompressionRecipe.from_dict(decoded.to_dict())
        self.windows = windows
        self.batch_size = batch_size

    def compress(self, model: nn.Module, *, device: str) -> nn.Module:
        """A compressed copy of ``model`` (which stays as it is), in eval mode."""
        import torch

        from frontier import kernels

        with torch.no_grad():
            out = copy.deepcopy(model).eval()
            for p in out.parameters():
                p.grad = None  # the optimizer's last gradients are no part of the compressed copy
            if not self.decoded:
                return out
            calibration = None
            if kernels.needs_calibration(self.recipe):
                batches = [w.to(device) for w in self.windows.split(self.batch_size)]
                calibration = kernels.calibrate(out, batches, list(self.decoded.entries))
            return kernels.apply_(out, self.recipe, calibration=calibration).eval()


def _load_tokenizer(path: str) -> Any:
    try:
        from transformers import AutoTokenizer
    except ModuleNotFoundError:
        raise RuntimeError(
            "The 'tokenizer' option needs the 'transformers' package, which is not installed"
        ) from None
    try:
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as exc:
        raise ValueError(
            f"The 'tokenizer' option must name a local transformers tokenizer directory. Got {path!r}, "
            f"which failed to load: {exc}"
        ) from None
    tok.model_max_length = 1 << 62  # whole-corpus encoding; windows are cut afterwards
    return tok
