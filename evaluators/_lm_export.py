"""Trial checkpoints of ``lm-train``, and their conversion to stock ``transformers`` checkpoints.

A trial run with the ``lm-train`` option ``keep_weights`` writes its trained model into its work directory
(``<run_dir>/trials/<study>/<trial>/``, the directory ``frontier export`` names as ``checkpoint``):

- ``frontier_lm.json``: the format tag and version, the architecture (:class:`LMArch`), which model path
  trained it (``native`` or ``llama``), the tokenizer (None: byte-level, vocabulary 256), the candidate's
  parameters and its final metrics;
- ``model.safetensors``: the trained state dict.

:func:`load_trial_model` rebuilds the trained model from it. :func:`write_hf_checkpoint` turns it into a
directory that ``transformers.AutoModelForCausalLM.from_pretrained`` loads with stock transformers (no
Frontier, no ``trust_remote_code``) and whose logits match the trial's model within 1e-5 in float32:

- a dense model whose layers are all alike becomes ``LlamaForCausalLM``;
- a model with MoE layers whose routed experts, ``top_k``, expert widths and head counts are the same in every
  MoE layer becomes ``MixtralForCausalLM`` when every layer is routed, ``top_k >= 2`` and there is no
  shared expert (Mixtral renormalises the top-k weights, as the native layer does for ``top_k > 1``), and
  ``Qwen2MoeForCausalLM`` otherwise (``norm_topk_prob = top_k > 1``; dense layers through
  ``mlp_only_layers``; its sigmoid-gated shared expert carries ours with a zero gate, since
  ``sigmoid(0) * 2 * down == down``, and a layer without one gets an all-zero shared expert);
- anything else (per-layer head counts, dense FFN widths or expert settings, an odd head width, whose last
  channel the native RoPE leaves unrotated) raises a ``ValueError`` naming what differs and where.

A trial of a joint study (``bits``/``sparsity`` families besides the architecture) also has a ``recipe`` in
its export, in native module names; :func:`write_joint_checkpoint` writes the transformers checkpoint and
compresses it with that recipe mapped to the transformers names (:func:`hf_recipe`), giving a
compressed-tensors directory.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from frontier.spaces import LayerArch, LMArch

if TYPE_CHECKING:
    from torch import Tensor, nn

CHECKPOINT_FORMAT = "frontier-lm-train"
CHECKPOINT_VERSION = 1
MANIFEST = "frontier_lm.json"
WEIGHTS = "model.safetensors"
ROPE_THETA = 10000.0  # _lm_train._rope_tables
RMS_EPS = 1e-5  # _lm_train's nn.RMSNorm(eps=1e-5)
# Logits of the written checkpoint are compared with the trial's model before write_hf_checkpoint returns.
VERIFY_TOLERANCE = 1e-5


# ----------------------------------------------------------------------------------------- trial side


def save_trial_checkpoint(
    model: nn.Module,
    arch: LMArch,
    directory: str | Path,
    *,
    llama: bool,
    tokenizer: str | None = None,
    params: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
) -> Path:
    """Write a trained ``lm-train`` model (its architecture and state dict) to ``directory``.

    The weights are written first and the manifest last, each through a temporary file and a rename, so a
    directory with a manifest holds a whole checkpoint.

    Args:
        model: the trained model (native ``TinyLM`` or ``LlamaForCausalLM``).
        arch: its architecture.
        directory: where to write (created).
        llama: whether ``model`` is the ``transformers`` Llama path.
        tokenizer: the ``tokenizer`` option it was trained with (None: byte-level).
        params: the candidate's parameters (provenance).
        metrics: the trial's final metrics (provenance).

    Returns:
        The checkpoint directory.
    """
    from safetensors.torch import save_model

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / (WEIGHTS + ".tmp")
    save_model(model, str(tmp))  # drops the tied lm_head copy of the Llama path; load_model restores it
    os.replace(tmp, out / WEIGHTS)
    manifest = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model": "llama" if llama else "native",
        "arch": dataclasses.asdict(arch),
        "tokenizer": tokenizer,
        "params": dict(params or {}),
        "metrics": {k: float(v) for k, v in (metrics or {}).items()},
    }
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, default=str))
    os.replace(tmp, out / MANIFEST)
    return out


@dataclass
class TrialModel:
    """A trained ``lm-train`` model rebuilt from its checkpoint (:func:`load_trial_model`)."""

    model: nn.Module
    arch: LMArch
    llama: bool
    manifest: dict[str, Any]
    path: Path

    def logits(self, ids: Tensor) -> Tensor:
        """Next-token logits for ``ids`` (batch, tokens)."""
        if self.llama:
            return self.model(input_ids=ids, use_cache=False).logits
        return self.model(ids)[0]


def checkpoint_dir(source: str | Path | Mapping[str, Any]) -> Path:
    """The checkpoint directory a source names: a checkpoint directory, an export document (a mapping, or
    a JSON/YAML file of one) whose ``checkpoint`` field names one.

    Raises:
        ValueError: the source names no checkpoint, or the directory holds none.
    """
    if isinstance(source, Mapping):
        return _doc_checkpoint(source, where="the export document")
    path = Path(source).expanduser()
    if path.is_file():
        text = path.read_text()
        if path.suffix in (".yaml", ".yml"):
            import yaml

            doc = yaml.safe_load(text)
        else:
            doc = json.loads(text)
        if not isinstance(doc, Mapping):
            raise ValueError(f"{path} must hold an export document (a mapping). Got {type(doc).__name__}.")
        return _doc_checkpoint(doc, where=str(path))
    if not (path / MANIFEST).is_file():
        raise ValueError(
            f"The checkpoint directory must hold {MANIFEST} (written by an lm-train trial with keep_weights "
            f"'pareto' or 'all'). Got {str(path)!r}, which "
            + ("has no such file." if path.is_dir() else "does not exist.")
        )
    return path


def _doc_checkpoint(doc: Mapping[str, Any], *, where: str) -> Path:
    ckpt = doc.get("checkpoint")
    if not ckpt:
        trial, study = doc.get("trial"), doc.get("study")
        raise ValueError(
            f"The 'checkpoint' field of {where} (trial {trial} of study {study!r}) must name the trial's "
            f"saved weights. Got {ckpt!r}: the study ran without keeping them. Run it with "
            "evaluator.options.keep_weights 'pareto' or 'all'"
        )
    return checkpoint_dir(ckpt)


def load_trial_model(source: str | Path | Mapping[str, Any], *, device: str = "cpu") -> TrialModel:
    """Rebuild a kept trial's trained model (in eval mode).

    Args:
        source: the checkpoint directory or an export document naming it (see :func:`checkpoint_dir`).
        device: where to put the model.

    Raises:
        ValueError: no checkpoint there, or one of another format or a newer version.
    """
    from safetensors.torch import load_model

    from frontier.evaluators._lm_train import _llama_model, _native_model

    path = checkpoint_dir(source)
    manifest = json.loads((path / MANIFEST).read_text())
    if manifest.get("format") != CHECKPOINT_FORMAT or int(manifest.get("version", 0)) > CHECKPOINT_VERSION:
        raise ValueError(
            f"{path / MANIFEST} must be a '{CHECKPOINT_FORMAT}' checkpoint of version <= "
            f"{CHECKPOINT_VERSION}. Got format={manifest.get('format')!r}, "
            f"version={manifest.get('version')!r}"
        )
    raw = manifest["arch"]
    arch = LMArch(
        vocab=int(raw["vocab"]),
        hidden=int(raw["hidden"]),
        layers=tuple(LayerArch(**layer) for layer in raw["layers"]),
        max_len=int(raw["max_len"]),
    )
    llama = manifest["model"] == "llama"
    if llama:
        model = _llama_model(arch, device=device)
    else:
        model = _native_model(arch, aux_loss_coef=0.0, device=device)
    load_model(model, str(path / WEIGHTS), strict=True, device=device)  # raises on missing/unexpected keys
    model.eval()
    return TrialModel(model=model, arch=arch, llama=llama, manifest=manifest, path=path)


# ------------------------------------------------------------------------------------ transformers side


def hf_config(arch: LMArch) -> Any:
    """The stock ``transformers`` config that expresses ``arch`` exactly (see the module docstring).

    Raises:
        ValueError: naming what is not expressible and which layers differ.
    """
    from transformers import LlamaConfig, MixtralConfig, Qwen2MoeConfig

    layers = arch.layers
    _check_uniform(layers, "heads", "attention heads", lambda layer: layer.heads)
    heads = layers[0].heads
    head_dim = arch.hidden // heads
    if head_dim % 2:
        raise ValueError(
            f"write_hf_checkpoint: the head width (hidden / heads = {arch.hidden} / {heads}) must be even "
            f"for a transformers RoPE model. Got {head_dim}: the native model leaves its last channel "
            "unrotated, which Llama, Mixtral and Qwen2-MoE cannot express; choose an even head_dim"
        )
    common: dict[str, Any] = {
        "vocab_size": arch.vocab,
        "hidden_size": arch.hidden,
        "num_hidden_layers": len(layers),
        "num_attention_heads": heads,
        "num_key_value_heads": heads,
        "head_dim": head_dim,
        "max_position_embeddings": arch.max_len,
        "rms_norm_eps": RMS_EPS,
        "rope_parameters": {"rope_type": "default", "rope_theta": ROPE_THETA},
        "tie_word_embeddings": True,
        "hidden_act": "silu",
    }
    moe = [layer for layer in layers if layer.is_moe]
    dense = [layer for layer in layers if not layer.is_moe]
    if dense:
        _check_uniform(dense, "ffn", "dense FFN widths (ffn_ratio * hidden)", lambda layer: layer.ffn)
    if not moe:
        return LlamaConfig(**common, intermediate_size=dense[0].ffn)
    _check_uniform(moe, "experts", "routed expert counts", lambda layer: layer.experts)
    _check_uniform(moe, "top_k", "top_k values", lambda layer: layer.top_k)
    _check_uniform(moe, "expert_ffn", "expert widths (expert_ffn)", lambda layer: layer.ffn)
    first = moe[0]
    if not dense and first.top_k >= 2 and not any(layer.shared_expert for layer in moe):
        return MixtralConfig(
            **common,
            intermediate_size=first.ffn,
            num_local_experts=first.experts,
            num_experts_per_tok=first.top_k,
            sliding_window=None,
            router_jitter_noise=0.0,
        )
    shared = any(layer.shared_expert for layer in moe)
    return Qwen2MoeConfig(
        **common,
        intermediate_size=dense[0].ffn if dense else first.ffn,
        moe_intermediate_size=first.ffn,
        # The native shared expert is as wide as a routed one; without any, a width-1 all-zero shared
        # expert adds exactly 0 (a zero-width one would be exact too, but trips some loaders' kernels).
        shared_expert_intermediate_size=first.ffn if shared else 1,
        num_experts=first.experts,
        num_experts_per_tok=first.top_k,
        norm_topk_prob=first.top_k > 1,  # _lm_train: normalize_top_k = top_k > 1
        decoder_sparse_step=1,
        mlp_only_layers=[i for i, layer in enumerate(layers) if not layer.is_moe],
        qkv_bias=False,
        use_sliding_window=False,
    )


def _check_uniform(layers: tuple[LayerArch, ...] | list[LayerArch], field: str, what: str, get: Any) -> None:
    values = {get(layer) for layer in layers}
    if len(values) > 1:
        by_value: dict[Any, list[int]] = {}
        for i, layer in enumerate(layers):
            by_value.setdefault(get(layer), []).append(i)
        detail = ", ".join(f"{field}={v} in layers {idx}" for v, idx in sorted(by_value.items()))
        raise ValueError(
            f"write_hf_checkpoint: {what} must be the same in every layer to be written as a transformers "
            f"checkpoint (one value per config). Got {detail} (indices as in model.blocks). Per-layer "
            "settings are not expressible by LlamaForCausalLM, MixtralForCausalLM or Qwen2MoeForCausalLM"
        )


def hf_state_dict(native: Mapping[str, Tensor], arch: LMArch, model_type: str) -> dict[str, Tensor]:
    """The native model's state dict under the names and layouts of ``model_type`` (``llama``,
    ``mixtral``, ``qwen2_moe``). The native ``MoELayer`` stores ``x @ W`` weights (in, out); transformers'
    ``nn.Linear`` and expert tensors store (out, in)."""
    import torch

    d = arch.hidden
    out: dict[str, Tensor] = {
        "model.embed_tokens.weight": native["embed.weight"],
        "lm_head.weight": native["embed.weight"],  # tied
        "model.norm.weight": native["norm.weight"],
    }
    for i, layer in enumerate(arch.layers):
        src, dst = f"blocks.{i}.", f"model.layers.{i}."
        q, k, v = native[src + "qkv.weight"].split(d, dim=0)  # rows: q | k | v, each head-major
        out.update(
            {
                dst + "input_layernorm.weight": native[src + "attn_norm.weight"],
                dst + "post_attention_layernorm.weight": native[src + "ffn_norm.weight"],
                dst + "self_attn.q_proj.weight": q,
                dst + "self_attn.k_proj.weight": k,
                dst + "self_attn.v_proj.weight": v,
                dst + "self_attn.o_proj.weight": native[src + "proj.weight"],
            }
        )
        gate, up, down = (native[f"{src}ffn.experts_{w}"] for w in ("gate", "up", "down"))
        mlp = dst + "mlp."
        if not layer.is_moe:
            out[mlp + "gate_proj.weight"] = gate[0].T
            out[mlp + "up_proj.weight"] = up[0].T
            out[mlp + "down_proj.weight"] = down[0].T
            continue
        out[mlp + "gate.weight"] = native[src + "ffn.router.weight"]
        # Experts: gate_up_proj (E, 2F, d), gate rows first ("gate, up = ....chunk(2)"); down_proj (E, d, F).
        out[mlp + "experts.gate_up_proj"] = torch.cat([gate, up], dim=2).transpose(1, 2)
        out[mlp + "experts.down_proj"] = down.transpose(1, 2)
        if model_type != "qwen2_moe":
            continue
        width = layer.ffn if any(x.shared_expert for x in arch.layers if x.is_moe) else 1
        if layer.shared_expert:
            s_gate, s_up = native[src + "ffn.shared_gate"].T, native[src + "ffn.shared_up"].T
            # Qwen2-MoE scales the shared expert by sigmoid(gate(x)); a zero gate gives exactly 0.5, so
            # the down projection is doubled (a power of two: exact in floating point).
            s_down = native[src + "ffn.shared_down"].T * 2
        else:
            s_gate, s_up = gate.new_zeros(width, d), gate.new_zeros(width, d)
            s_down = gate.new_zeros(d, width)
        out[mlp + "shared_expert.gate_proj.weight"] = s_gate
        out[mlp + "shared_expert.up_proj.weight"] = s_up
        out[mlp + "shared_expert.down_proj.weight"] = s_down
        out[mlp + "shared_expert_gate.weight"] = gate.new_zeros(1, d)
    return {k: v.detach().contiguous() for k, v in out.items()}


def write_hf_checkpoint(
    source: str | Path | Mapping[str, Any],
    out_dir: str | Path,
    *,
    tokenizer: bool = True,
    verify: bool = True,
) -> dict[str, Any]:
    """Write a kept ``lm-train`` trial as a stock ``transformers`` causal-LM checkpoint.

    ``transformers.AutoModelForCausalLM.from_pretrained(out_dir)`` loads the result without Frontier or
    ``trust_remote_code``; it is saved with ``save_pretrained`` (safetensors, float32), so a compression study
    can name it as ``evaluator.options.model``. Which class expresses which candidate: see the module
    docstring.

    Args:
        source: the trial's checkpoint directory (``<run_dir>/trials/<study>/<trial>``), or an export document
            (``frontier export``; a mapping or a JSON/YAML file) whose ``checkpoint`` field names it.
        out_dir: the directory to write (created; files of the same names are replaced).
        tokenizer: also save a tokenizer: the trial's ``tokenizer`` directory, or for the byte-level default
            a byte-level BPE without merges whose token ids are the UTF-8 bytes (vocabulary 256).
        verify: reload the written directory and compare its logits with the trial's model on a fixed
            random batch; more than 1e-5 apart raises ``RuntimeError``.

    Returns:
        A summary: ``out_dir``, ``architecture`` (the transformers class), ``model_type``, ``checkpoint``,
        ``num_parameters``, ``tokenizer`` (what was saved, or None) and ``max_abs_logit_diff`` (with
        ``verify``).

    Raises:
        ValueError: no checkpoint at ``source``, or an architecture no stock class expresses (the message
            names what differs between which layers).
    """
    import torch
    from transformers import AutoModelForCausalLM

    trial = load_trial_model(source)
    config = hf_config(trial.arch)
    out = Path(out_dir).expanduser()
    hf_model: Any
    if trial.llama:
        hf_model = trial.model
    else:
        hf_model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        converted = hf_state_dict(trial.model.state_dict(), trial.arch, config.model_type)
        missing, unexpected = hf_model.load_state_dict(converted, strict=False)
        if missing or unexpected:
            raise RuntimeError(
                f"write_hf_checkpoint: the converted weights do not fit {type(hf_model).__name__}: "
                f"missing {sorted(missing)}, unexpected {sorted(unexpected)}"
            )
        hf_model.tie_weights()
    hf_model.eval()
    out.mkdir(parents=True, exist_ok=True)
    hf_model.save_pretrained(out)
    summary: dict[str, Any] = {
        "out_dir": str(out),
        "architecture": type(hf_model).__name__,
        "model_type": config.model_type,
        "checkpoint": str(trial.path),
        "num_parameters": sum(p.numel() for p in hf_model.parameters()),
        "tokenizer": _save_tokenizer(trial.manifest.get("tokenizer"), out) if tokenizer else None,
    }
    if verify:
        summary["max_abs_logit_diff"] = _verify(trial, out)
    return summary


def _verify(trial: TrialModel, out: Path) -> float:
    import torch
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, trial.arch.vocab, (2, min(16, trial.arch.max_len)), generator=gen)
    with torch.inference_mode():
        want = trial.logits(ids)
        got = reloaded(input_ids=ids).logits
    diff = float((want - got).abs().max())
    if not diff <= VERIFY_TOLERANCE:
        raise RuntimeError(
            f"write_hf_checkpoint: the written {type(reloaded).__name__} in {out} differs from the trial's "
            f"model by {diff:.3g} in logits (tolerance {VERIFY_TOLERANCE:g}); this is a bug in the converter"
        )
    return diff


def _save_tokenizer(path: str | None, out: Path) -> str:
    if path is not None:
        from transformers import AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except Exception as exc:
            raise ValueError(
                f"write_hf_checkpoint: the trial's tokenizer {path!r} must still load to be saved with the "
                f"model ({exc}). Restore it, or pass tokenizer=False"
            ) from None
        tok.save_pretrained(out)
        return path
    byte_level_tokenizer().save_pretrained(out)
    return "byte-level"


def byte_level_tokenizer() -> Any:
    """A ``transformers`` tokenizer whose token ids are the UTF-8 bytes of the text (vocabulary 256), as
    ``lm-train`` tokenises its default corpus: byte-level BPE with GPT-2's byte-to-character table and no
    merges, no special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {ch: b for b, ch in _bytes_to_unicode().items()}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, clean_up_tokenization_spaces=False)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table (what the ``ByteLevel`` pre-tokenizer emits)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


# --------------------------------------------------------------------------------------- joint studies

# native Linear -> its transformers modules (same config each): the fused Q/K/V rows split into q|k|v
_HF_MODULES = {
    "qkv": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "proj": ("self_attn.o_proj",),
}


def hf_recipe(recipe: Mapping[str, Any]) -> dict[str, Any]:
    """A joint study's recipe (the ``kernels.CompressionRecipe`` dict, native names ``blocks.I.qkv`` and
    ``blocks.I.proj``) under the transformers module names of :func:`write_hf_checkpoint`'s output: the fused
    ``qkv`` becomes ``q_proj``, ``k_proj`` and ``v_proj`` with the same configs, ``proj`` ``o_proj``.

    Per-output-row criteria carry over exactly (weight quantization per channel or per group, Wanda, 2:4):
    each row of the fused matrix is one row of q, k or v with the same inputs. Magnitude sparsity ranks a
    whole layer, so on the three projections it picks per-projection thresholds where the fused layer had
    one: the same ratio, not necessarily the same masked weights.

    Raises:
        ValueError: an entry names a module the native model does not compress.
    """
    entries = recipe.get("entries")
    if not isinstance(entries, Mapping):
        raise ValueError(f"The recipe must hold 'entries' (a CompressionRecipe dict). Got {dict(recipe)!r}.")
    out: dict[str, Any] = {}
    for name, configs in entries.items():
        parts = str(name).split(".")
        if len(parts) != 3 or parts[0] != "blocks" or not parts[1].isdigit() or parts[2] not in _HF_MODULES:
            raise ValueError(
                f"The recipe entry {name!r} is not a compressible module of the native lm-train model: "
                "expected 'blocks.I.qkv' or 'blocks.I.proj'"
            )
        for module in _HF_MODULES[parts[2]]:
            out[f"model.layers.{parts[1]}.{module}"] = list(configs)
    return {**recipe, "entries": out}


def write_joint_checkpoint(doc: Mapping[str, Any], out_dir: str | Path) -> dict[str, Any]:
    """Write a kept trial of a joint ``lm-train`` study (architecture + bits/sparsity) as a compressed
    ``transformers`` checkpoint: the trained model as :func:`write_hf_checkpoint` writes it, compressed with
    the export's ``recipe`` mapped to the transformers names (:func:`hf_recipe`) by
    :func:`kernels.compress_pretrained`, into a compressed-tensors (``pack-quantized``) directory that stock
    ``transformers`` loads (with the ``compressed-tensors`` package). Activation-aware configs (Wanda) are
    calibrated on the study's own calibration windows (the export's ``evaluator`` options name the corpus),
    as in the search.

    Args:
        doc: the export document (``frontier export``): ``checkpoint`` (the kept weights), ``recipe`` (the
            decoded recipe, native names) and ``evaluator`` (the study's lm-train options: the corpus).
        out_dir: the directory to write (created).

    Returns:
        ``write_hf_checkpoint``'s summary (``architecture``, ``model_type``, ``checkpoint``,
        ``num_parameters``, ``tokenizer``, ``max_abs_logit_diff`` of the uncompressed conversion) plus what
        ``kernels.compress_pretrained`` returns (``out``, bytes before and after, ``avg_bits``, ``sparsity``,
        ``files``, ``reload_max_abs_diff``...), with ``out_dir`` and the applied transformers ``recipe``.

    Raises:
        ValueError: the document has no recipe or no checkpoint, or the trial's architecture has no
            ``transformers`` form (the message says which layers differ).
    """
    import tempfile

    from frontier import kernels

    recipe = doc.get("recipe")
    if not isinstance(recipe, Mapping) or not recipe.get("entries"):
        raise ValueError(
            "write_joint_checkpoint: the export document must hold the 'recipe' of a joint lm-train study "
            f"(bits/sparsity families). Got recipe={recipe!r}; a trial without compression is written by "
            "write_hf_checkpoint"
        )
    trial = load_trial_model(doc)
    try:
        hf_config(trial.arch)
    except ValueError as exc:
        raise ValueError(
            "write_joint_checkpoint: this trial's architecture has no transformers form, so no compressed "
            f"checkpoint for stock transformers can be written: {exc}. Its recipe (native names) applies "
            "with kernels.apply_ to the model load_trial_model rebuilds"
        ) from None
    mapped = hf_recipe(recipe)
    compression = kernels.CompressionRecipe.from_dict(mapped)
    batches = _calibration_batches(doc) if kernels.needs_calibration(compression) else None
    with tempfile.TemporaryDirectory(prefix="frontier-joint-") as tmp:
        dense = write_hf_checkpoint(doc, tmp)
        summary = kernels.compress_pretrained(tmp, compression, out_dir, calibration_batches=batches)
    summary.pop("model", None)  # the temporary uncompressed directory, gone now
    return {**dense, **summary, "out_dir": str(Path(out_dir).expanduser()), "recipe": mapped}


def _calibration_batches(doc: Mapping[str, Any]) -> list[dict[str, Tensor]]:
    """The study's calibration windows (``LMTrain.load_data``) as transformers model inputs."""
    from frontier.evaluators import make_evaluator

    # `frontier export` records the evaluator at the top and the whole spec under provenance
    provenance = doc.get("provenance")
    spec = doc.get("spec") or (provenance.get("spec") if isinstance(provenance, Mapping) else None)
    evaluator_doc = doc.get("evaluator") or (spec.get("evaluator") if isinstance(spec, Mapping) else None)
    if not isinstance(evaluator_doc, Mapping) or evaluator_doc.get("kind") != "lm-train":
        raise ValueError(
            "write_joint_checkpoint: the recipe needs calibration (Wanda), which reads the study's corpus "
            "from the export's 'evaluator' (kind lm-train, with its options). Got "
            f"{evaluator_doc!r}; export the point again with `frontier export`"
        )
    options = dict(evaluator_doc.get("options") or {})
    evaluator: Any = make_evaluator("lm-train", options)
    evaluator.load_data()
    windows = evaluator.calibration_windows
    return [{"input_ids": w} for w in windows.split(evaluator.options.batch_size)]
