"""Hand-off to production: compress a transformers model directory with a recipe and write a standard
Hugging Face model directory in the compressed-tensors ``pack-quantized`` format (see
``kernels._compressed_tensors``), which stock ``transformers`` with ``compressed-tensors`` loads without
Frontier, and which :func:`load_pretrained_compressed` reads back into Frontier's own
:class:`~kernels.QuantizedLinear` modules (so Frontier's kernels can time it) with identical outputs.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from frontier.kernels._apply import CompressionRecipe, apply_
from frontier.kernels._calibrate import calibrate
from frontier.kernels._compressed_tensors import (
    STRUCTURE_KEY,
    base_files,
    compressed_tensors_config,
    read_layer,
    save_compressed_tensors,
    slice_quantized,
)
from frontier.kernels._config import CompressionConfig
from frontier.kernels._prune import StructuredPruneConfig, cut_paths, is_encoder_layer, slice_linear
from frontier.kernels._qlinear import QuantizedLinear
from frontier.kernels._select import get_submodule, select_modules, set_submodule
from frontier.kernels._size import avg_bits, masked_fraction, model_size_bytes, weight_counts
from frontier.kernels._sparsity import WandaSparsityConfig

__all__ = [
    "compress_pretrained",
    "compressed_tensors_config",
    "load_pretrained_compressed",
    "needs_calibration",
]


def needs_calibration(recipe: CompressionRecipe | CompressionConfig) -> bool:
    """Whether applying ``recipe`` needs activation norms (Wanda, or ``importance="activation"``)."""
    configs = (
        [c for _, cs in recipe.items() for c in cs] if isinstance(recipe, CompressionRecipe) else [recipe]
    )
    return any(
        isinstance(c, WandaSparsityConfig) or getattr(c, "importance", "magnitude") == "activation"
        for c in configs
    )


def _check_model_dir(model_dir: str | os.PathLike[str]) -> Path:
    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise ValueError(
            f"The model directory must be a local transformers model directory with a config.json. "
            f"Got {str(path)!r} (no config.json there)."
        )
    return path


def compress_pretrained(
    model_dir: str | os.PathLike[str],
    recipe: CompressionRecipe,
    out_dir: str | os.PathLike[str],
    *,
    calibration_texts: Sequence[str] | None = None,
    calibration_batches: Sequence[Any] | None = None,
    max_length: int = 128,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Compress the transformers model in ``model_dir`` with ``recipe`` and write ``out_dir``.

    The model is loaded with ``transformers.AutoModel`` from local files only and without remote code.
    Activation-aware configs are calibrated on ``calibration_batches`` (model inputs, e.g. a study
    evaluator's own calibration batches, so that Wanda masks and pruned channels come out as in the study)
    or else on ``calibration_texts`` with the model's own tokenizer.

    Returns:
        A summary: ``causal_lm`` (loaded as ``AutoModelForCausalLM``); bytes before and after; average
        weight bits and masked sparsity over the modules the recipe targets (the figures a compression
        study reports); the files written; and the largest
        difference between the compressed model's outputs and those of the model reloaded from ``out_dir``
        (on a fixed probe input; 0.0 when the directory reproduces the model exactly).

    Raises:
        ValueError: ``model_dir`` is not a model directory, or the recipe needs calibration and no texts
            were given (and every error :func:`~kernels.apply_` raises for a recipe that does not fit).
    """
    import transformers

    src = _check_model_dir(model_dir)
    if not isinstance(recipe, CompressionRecipe):
        raise TypeError(f"compress_pretrained expects a CompressionRecipe. Got {recipe!r} instead.")
    hf_config = transformers.AutoConfig.from_pretrained(src, local_files_only=True)
    auto = _auto_class(hf_config)
    model: Any  # a transformers PreTrainedModel
    if getattr(hf_config, _MOE_PLAN, None) is not None:
        # a MoE with per-layer expert counts: Frontier's loader applies the plan (no checkpoint code runs)
        from frontier.kernels.moe._prune import load_pruned_moe

        model = load_pruned_moe(src, local_files_only=True).eval()
    else:
        model = auto.from_pretrained(src, local_files_only=True, trust_remote_code=False).eval()
    base_config = copy.deepcopy(model.config)
    before = model_size_bytes(model)
    # the scope a study reports avg_bits and sparsity over: the modules the recipe allocates, and the
    # projections a structured pruning of a layer cuts
    targeted = sorted(
        {n for t, cs in recipe.items() for n in _scope(model, t, cs)} & set(weight_counts(model))
    )
    original = weight_counts(model, targeted)
    calibration = None
    if needs_calibration(recipe) and calibration_batches:
        calibration = calibrate(model, [dict(b) for b in calibration_batches])
    elif needs_calibration(recipe):
        if not calibration_texts:
            raise ValueError(
                "This recipe has activation-aware configs (Wanda or importance='activation'), which need "
                "calibration_batches or calibration_texts. Got neither."
            )
        tokenizer = transformers.AutoTokenizer.from_pretrained(src, local_files_only=True)
        texts = list(calibration_texts)
        batches = [
            tokenizer(
                texts[i : i + batch_size],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            for i in range(0, len(texts), batch_size)
        ]
        calibration = calibrate(model, [dict(b) for b in batches])
    with torch.no_grad():
        model = apply_(model, recipe, calibration=calibration)
    written = write_compressed(
        model, out_dir, base_dir=src, targets=targeted, original=original, base_config=base_config.to_dict()
    )
    return {
        "model": str(src),
        **written,
        "causal_lm": auto is transformers.AutoModelForCausalLM,
        "bytes_before": before,
    }


def write_compressed(
    model: nn.Module,
    out_dir: str | os.PathLike[str],
    *,
    base_dir: str | os.PathLike[str],
    targets: Sequence[str],
    original: dict[str, int] | None = None,
    base_config: dict[str, Any] | None = None,
    size_base: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Write a compressed transformers ``model`` (:func:`~kernels.apply_`'s output, e.g. the very model a
    trial evaluated) to ``out_dir`` in the compressed-tensors format, reload it and compare.

    Args:
        model: the compressed model.
        out_dir: the directory to write.
        base_dir: the model directory whose other files (tokenizer, a pruned MoE's ``frontier_moe.py``)
            are copied.
        targets: the modules ``avg_bits`` and ``sparsity`` are reported over.
        original: their weight counts before compression (structurally removed weights count as sparsity).
        base_config: the uncompressed model's config dict (see :func:`save_compressed_tensors`).
        size_base: the model directory ``base_disk_bytes`` is measured on (default ``base_dir``).

    Returns:
        ``reload_max_abs_diff`` (the largest output difference between ``model`` and the directory read
        back by :func:`load_pretrained_compressed`, on a fixed probe), ``out``, ``bytes_after``,
        ``disk_bytes``, ``base_disk_bytes``, ``avg_bits``, ``sparsity`` and ``files``.
    """
    src = Path(base_dir)
    out = Path(out_dir)
    files = save_compressed_tensors(model, out, base_dir=src, base_config=base_config)
    reloaded = load_pretrained_compressed(out)
    vocab = int(cast(Any, model).config.vocab_size)  # a PreTrainedModel (save_compressed_tensors checks)
    probe = {"input_ids": torch.randint(0, vocab, (2, 16), generator=torch.Generator().manual_seed(0))}
    with torch.inference_mode():
        expected = _hidden(model(**probe))
        got = _hidden(reloaded(**probe))
    sized = Path(size_base) if size_base is not None else src
    return {
        "reload_max_abs_diff": float((expected - got).abs().max()),
        "out": str(out),
        "bytes_after": model_size_bytes(model),
        "disk_bytes": _disk_bytes(out, files),
        "base_disk_bytes": model_dir_bytes(sized),
        "avg_bits": avg_bits(model, list(targets)),
        "sparsity": masked_fraction(model, list(targets), original=original),
        "files": files,
    }


def _disk_bytes(root: Path, files: Sequence[str]) -> int:
    return sum((root / f).stat().st_size for f in files)


def model_dir_bytes(path: str | os.PathLike[str]) -> int:
    """What a model directory takes on disk as transformers loads it: weight files, config, tokenizer."""
    src = Path(path)
    return _disk_bytes(src, [*_base_weight_files(src), *map(str, base_files(src))])


def _base_weight_files(src: Path) -> list[str]:
    """The weight files transformers loads from ``src`` (safetensors preferred, as it does), plus
    ``config.json``: what a written directory replaces."""
    for pattern in ("model*.safetensors", "pytorch_model*.bin"):
        found = sorted(p.name for p in src.glob(pattern))
        if found:
            index = sorted(p.name for p in src.glob(f"{pattern.split('*')[0]}*.index.json"))
            return ["config.json", *found, *index]
    return ["config.json"]


def _auto_class(config: Any) -> Any:
    """``AutoModelForCausalLM`` for a ``...ForCausalLM`` architecture (so its head is kept), else
    ``AutoModel``."""
    import transformers

    architectures = getattr(config, "architectures", None) or []
    if any(a.endswith("ForCausalLM") for a in architectures):
        return transformers.AutoModelForCausalLM
    return transformers.AutoModel


def _scope(model: nn.Module, target: str, configs: Sequence[CompressionConfig]) -> list[str]:
    """The modules ``target``'s configs change: the selected ones, and for structured pruning the
    projections it cuts in every encoder layer under them."""
    selected = select_modules(model, target)
    names = [n for n in selected if n]
    for config in (c for c in configs if isinstance(c, StructuredPruneConfig)):
        cut = cut_paths(config)
        for root, module in selected.items():
            for sub, layer in module.named_modules():
                if is_encoder_layer(layer):
                    prefix = ".".join(p for p in (root, sub) if p)
                    names += [f"{prefix}.{c}" if prefix else c for c in cut]
    return names


def _hidden(output: Any) -> torch.Tensor:
    if isinstance(output, tuple):
        return output[0]
    hidden = getattr(output, "last_hidden_state", None)
    return output.logits if hidden is None else hidden


def load_pretrained_compressed(path: str | os.PathLike[str]) -> nn.Module:
    """Read a directory written by :func:`compress_pretrained` (compressed-tensors ``pack-quantized``) into
    Frontier's own modules: every quantized Linear a :class:`~kernels.QuantizedLinear` holding the same codes
    and scales, and structurally pruned layers sliced back to their pruned widths, so its outputs equal those
    of the model that was written.

    Raises:
        ValueError: ``path`` has no ``config.json``, or its quantization is not Frontier's (symmetric integer
            ``pack-quantized`` weights targeted by module name).
    """
    import transformers
    from safetensors.torch import load_file

    src = _check_model_dir(path)
    raw = json.loads((src / "config.json").read_text())
    qconfig = raw.pop("quantization_config", None) or {}
    structure = raw.pop(STRUCTURE_KEY, None) or {}
    raw.pop("auto_map", None)  # a pruned MoE's custom code is never run: its plan is applied below
    config = transformers.AutoConfig.for_model(**raw)
    model = _auto_class(config).from_config(config).eval()
    plan = raw.get(_MOE_PLAN)
    if plan is not None:
        from frontier.kernels.moe._prune import _shrink_blocks

        _shrink_blocks(model, plan["kept"], plan["top_k_per_layer"])
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(src.glob("model*.safetensors")):
        state.update(load_file(shard))
    _fuse_experts(state, set(model.state_dict()))
    replaced: list[str] = []
    for group_name, group in (qconfig.get("config_groups") or {}).items():
        weights = group.get("weights") or {}
        if (
            qconfig.get("format") != "pack-quantized"
            or weights.get("type") != "int"
            or not weights.get("symmetric", True)
        ):
            raise ValueError(
                f"{src / 'config.json'}: quantization_config group '{group_name}' must be symmetric int "
                f"weights in the pack-quantized format (what compress_pretrained writes). Got "
                f"format={qconfig.get('format')!r}, weights={weights!r}."
            )
        for name in group["targets"]:
            tensors = {p: state.pop(f"{name}.{p}") for p in ("weight_packed", "weight_scale", "weight_shape")}
            bias = state.pop(f"{name}.bias", None)
            if bias is not None:
                tensors["bias"] = bias
            layer = read_layer(
                tensors, bits=weights["num_bits"], group_size=weights.get("group_size"), bias=bias is not None
            )
            set_submodule(model, name, layer)
            replaced.append(f"{name}.")
    missing, unexpected = model.load_state_dict(state, strict=False)
    # the QuantizedLinear layers are filled already; tied weights are shared with the saved ones
    tied = set(getattr(model, "all_tied_weights_keys", None) or {})
    missing = [k for k in missing if not k.startswith(tuple(replaced)) and k not in tied]
    if unexpected or missing:
        raise ValueError(
            f"{src}: the weights do not fit the architecture in its config.json: missing "
            f"{sorted(missing)}, unexpected {sorted(unexpected)}."
        )
    if structure:
        _unpad(model, structure)
    return model


_MOE_PLAN = "frontier_moe"  # kernels.moe._prune.PLAN_KEY, not imported: that module is loaded lazily
# a routed expert's projections as save_pretrained writes them (hub layout): Qwen2/3-MoE, Mixtral
_EXPERT_KEY = re.compile(
    r"^(?P<layer>.+)\.(?:mlp|block_sparse_moe)\.experts\.(?P<j>\d+)\."
    r"(?P<proj>gate_proj|up_proj|down_proj|w1|w3|w2)\.weight$"
)
_EXPERT_ROLE = {
    "gate_proj": "gate",
    "w1": "gate",
    "up_proj": "up",
    "w3": "up",
    "down_proj": "down",
    "w2": "down",
}


def _fuse_experts(state: dict[str, torch.Tensor], expected: set[str]) -> None:
    """In place: per-expert weights (the layout ``save_pretrained`` writes) -> the fused 3-D parameters
    transformers 5 builds (``experts.gate_up_proj`` ``[E, 2*I, hidden]``, gate rows first, and
    ``experts.down_proj``), and Mixtral's hub ``block_sparse_moe`` -> ``mlp``, as transformers' own loading
    conversion does for these families; ``expected`` are the model's own keys."""
    for key in [k for k in state if ".block_sparse_moe." in k]:
        renamed = key.replace(".block_sparse_moe.", ".mlp.")
        if renamed in expected and key not in expected:
            state[renamed] = state.pop(key)
    found: dict[str, dict[str, dict[int, torch.Tensor]]] = {}
    for key in [k for k in state if ".experts." in k]:
        if m := _EXPERT_KEY.match(key):
            role = found.setdefault(m["layer"], {}).setdefault(_EXPERT_ROLE[m["proj"]], {})
            role[int(m["j"])] = state.pop(key)
    for layer, roles in found.items():
        ids = sorted(roles["down"])
        state[f"{layer}.mlp.experts.gate_up_proj"] = torch.cat(
            [torch.stack([roles["gate"][j] for j in ids]), torch.stack([roles["up"][j] for j in ids])], dim=1
        )
        state[f"{layer}.mlp.experts.down_proj"] = torch.stack([roles["down"][j] for j in ids])


def _unpad(model: nn.Module, structure: dict[str, Any]) -> None:
    """Slice the zero-padded heads and FFN channels back off (they are the last ones of each layer)."""

    def cut(name: str, *, rows: int | None = None, cols: int | None = None) -> None:
        module = get_submodule(model, name)
        if isinstance(module, QuantizedLinear):
            new: nn.Module = slice_quantized(module, rows=rows, cols=cols)
        else:
            assert isinstance(module, nn.Linear)
            index = torch.arange(rows if rows is not None else cols or 0)
            new = slice_linear(module, index, 0 if rows is not None else 1)
        set_submodule(model, name, new)

    pruned: dict[int, list[int]] = {}
    for layer_name, spec in (structure.get("attention_heads") or {}).items():
        attn: Any = get_submodule(model, f"{layer_name}.attention.self")
        width = int(spec["kept"]) * int(attn.attention_head_size)
        for p in ("query", "key", "value"):
            cut(f"{layer_name}.attention.self.{p}", rows=width)
        cut(f"{layer_name}.attention.output.dense", cols=width)
        attn.num_attention_heads = int(spec["kept"])
        attn.all_head_size = width
        attention: Any = get_submodule(model, f"{layer_name}.attention")
        attention.pruned_heads = set(spec["pruned"])
        if isinstance(getattr(attn, "layer_idx", None), int):
            pruned[attn.layer_idx] = list(spec["pruned"])
    widths = structure.get("ffn_widths") or {}
    for layer_name, width in widths.items():
        cut(f"{layer_name}.intermediate.dense", rows=int(width))
        cut(f"{layer_name}.output.dense", cols=int(width))
    config = getattr(model, "config", None)
    if config is not None:
        if pruned:
            config.pruned_heads = pruned
        if len(set(widths.values())) == 1:
            config.intermediate_size = next(iter(widths.values()))
