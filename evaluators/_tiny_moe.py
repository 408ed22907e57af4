"""A small *pretrained* Qwen2-MoE causal LM, built offline, for expert-pruning studies and tests.

:func:`build_tiny_moe` trains a 4-layer, 8-expert, top-2 Qwen2-MoE-layout model from a ``transformers``
config on the prose of CPython's ``pydoc_data.topics`` (the reference manual's help topics, shipped with every
Python) with a byte-level tokenizer, briefly, with the load-balancing loss on, so that the experts
specialise and held-out perplexity means something. It trains only on the *training* side of the
evaluators' content-hash split (``split_chunks(chunk_documents(pydoc_topics()), val_fraction=0.2)``, the
split ``hf-causal-lm-perplexity`` and ``hf-moe-perplexity`` use by default; a chunk held out at 0.2 is held
out at any smaller fraction too), so their held-out windows are never training text. The result is saved
with ``save_pretrained`` where a user's local checkpoint would sit, with a marker recording the recipe, so
later calls load it instead of training again. Not an evaluator: ``hf-moe-perplexity``'s
``build_if_missing: tiny-moe`` builds it.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

MARKER = "frontier_tiny_moe.json"

# Changing any of these retrains (the marker stores them and a mismatch rebuilds the cache).
RECIPE: dict[str, Any] = {
    # 2: trains on the training side of the evaluators' split (version 1 held out the last topics instead)
    "version": 2,
    "config": {
        "vocab_size": 256,
        "hidden_size": 96,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 192,
        "moe_intermediate_size": 96,
        # A narrow shared expert: with a wide one the routed experts matter little and pruning says little.
        "shared_expert_intermediate_size": 32,
        "num_experts": 8,
        "num_experts_per_tok": 2,
        "norm_topk_prob": False,
        "max_position_embeddings": 256,
        "router_aux_loss_coef": 0.01,
        "tie_word_embeddings": True,
    },
    "seq_len": 128,
    "batch": 16,
    "steps": 600,
    "lr": 3e-3,
    "seed": 0,
    "val_fraction": 0.2,
}


def tiny_moe_corpus() -> tuple[str, str]:
    """(train, held-out) text: the two sides of the evaluators' content-hash split of ``pydoc_data.topics``
    chunks (:func:`evaluators._text.split_chunks` at the recipe's ``val_fraction``), each joined by blank
    lines."""
    from frontier.evaluators._text import chunk_documents, pydoc_topics, split_chunks

    train, heldout = split_chunks(chunk_documents(pydoc_topics()), val_fraction=RECIPE["val_fraction"])
    return "\n\n".join(train), "\n\n".join(heldout)


def encode_bytes(text: str) -> torch.Tensor:
    """Token ids of ``text``: its UTF-8 bytes, as the saved byte-level tokenizer encodes it."""
    import torch

    return torch.tensor(list(text.encode("utf-8")), dtype=torch.long)


def heldout_perplexity(model: Any, *, seq_len: int = 128, max_windows: int | None = None) -> float:
    """Perplexity of ``model`` on the held-out side of the split, as ``hf-moe-perplexity`` computes it
    (:func:`evaluators._hf_causal_lm.mean_nll` over non-overlapping ``seq_len``-byte windows)."""
    import math

    from frontier.evaluators._hf_causal_lm import _windows, mean_nll

    ids = encode_bytes(tiny_moe_corpus()[1]).tolist()
    count = len(ids) // seq_len if max_windows is None else max_windows
    return math.exp(mean_nll(model, _windows(ids, seq_len, count, "held-out")))


def _cached(path: Path, recipe: dict[str, Any]) -> bool:
    marker = path / MARKER
    if not (marker.is_file() and (path / "config.json").is_file()):
        return False
    return bool(json.loads(marker.read_text()).get("recipe") == recipe)


def build_tiny_moe(
    path: str | Path,
    *,
    threads: int = 1,
    steps: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """The tiny pretrained Qwen2-MoE at ``path``: trained and saved on first call, reused afterwards.

    Args:
        path: the checkpoint directory (``from_pretrained`` loads it; the tokenizer is saved with it).
        threads: torch intra-op threads while training (one by default: the machine is often shared).
        steps: training steps, when not the recipe's (tests train briefly); recorded in the marker.
        progress: called with a line when training starts, every 100 steps and when the model is saved.

    Returns:
        ``path``. Its ``frontier_tiny_moe.json`` holds the recipe, train time and held-out perplexity.
    """
    import torch
    import transformers

    from frontier.evaluators._lm_export import byte_level_tokenizer

    path = Path(path)
    recipe = RECIPE if steps is None else {**RECIPE, "steps": steps}
    if _cached(path, recipe):
        return path
    train_ids = encode_bytes(tiny_moe_corpus()[0])
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(RECIPE["seed"])
        config = transformers.Qwen2MoeConfig(**RECIPE["config"], output_router_logits=True)
        model = transformers.Qwen2MoeForCausalLM(config)
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=RECIPE["lr"], weight_decay=0.01)
        steps, seq, batch = recipe["steps"], recipe["seq_len"], recipe["batch"]
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=RECIPE["lr"], total_steps=steps, pct_start=0.1
        )
        gen = torch.Generator().manual_seed(RECIPE["seed"])
        start = time.perf_counter()
        if progress is not None:
            progress(f"training the tiny pretrained MoE at {path}: {steps} steps, {threads} thread(s), once")
        for step in range(1, steps + 1):
            offsets = torch.randint(0, train_ids.numel() - seq - 1, (batch,), generator=gen)
            x = torch.stack([train_ids[o : o + seq] for o in offsets.tolist()])
            loss = model(input_ids=x, labels=x, use_cache=False).loss  # includes the aux (balance) loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            if progress is not None and step % 100 == 0 and step < steps:
                elapsed = time.perf_counter() - start
                progress(f"  step {step}/{steps}, loss {float(loss):.3f}, {elapsed:.0f} s")
        train_s = time.perf_counter() - start
        model.config.output_router_logits = False
        model.eval()
        ppl = heldout_perplexity(model, seq_len=seq, max_windows=64)
    finally:
        torch.set_num_threads(previous_threads)
    # Write next to the target and rename, so a crash or a concurrent reader never sees half a checkpoint.
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    byte_level_tokenizer().save_pretrained(tmp)
    (tmp / MARKER).write_text(
        json.dumps({"recipe": recipe, "train_s": round(train_s, 1), "heldout_ppl": ppl}, indent=2)
    )
    shutil.rmtree(path, ignore_errors=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(path)
    if progress is not None:
        progress(f"  saved {path}: trained in {train_s:.0f} s, held-out perplexity {ppl:.3f}")
    return path
