"""Hand-off to production: compress a transformers model directory with a recipe, write a self-contained
directory, and describe the allocation in the Hugging Face ``quantization_config`` layout.

The directory :func:`compress_pretrained` writes holds the *uncompressed* architecture's ``config.json`` and
the tokenizer (so nothing else is needed to rebuild it), :func:`~kernels.save_compressed`'s
``recipe.json`` / ``manifest.json`` / ``state_dict.pt``, and ``quantization_config.json``: the per-module
bit-widths, group sizes and sparsity in compressed-tensors' ``config_groups`` layout (the format
llm-compressor recipes and ``transformers``' ``quantization_config`` use), for tools that read the
allocation. The weights themselves are in Frontier's packed format; :func:`load_pretrained_compressed`
rebuilds the model from the directory alone.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from frontier.kernels._apply import CompressionRecipe, apply_
from frontier.kernels._calibrate import calibrate
from frontier.kernels._config import CompressionConfig
from frontier.kernels._io import load_compressed, save_compressed
from frontier.kernels._masks import MASK_BUFFER, get_mask
from frontier.kernels._prune import StructuredPruneConfig, cut_paths, is_encoder_layer
from frontier.kernels._qlinear import QuantizedLinear, is_linear_like
from frontier.kernels._select import select_modules
from frontier.kernels._size import avg_bits, masked_fraction, model_size_bytes, weight_counts
from frontier.kernels._sparsity import WandaSparsityConfig

QUANTIZATION_CONFIG = "quantization_config.json"
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
)


def needs_calibration(recipe: CompressionRecipe | CompressionConfig) -> bool:
    """Whether applying ``recipe`` needs activation norms (Wanda, or ``importance="activation"``)."""
    configs = (
        [c for _, cs in recipe.items() for c in cs] if isinstance(recipe, CompressionRecipe) else [recipe]
    )
    return any(
        isinstance(c, WandaSparsityConfig) or getattr(c, "importance", "magnitude") == "activation"
        for c in configs
    )


def compressed_tensors_config(model: nn.Module) -> dict[str, Any] | None:
    """The compressed model's allocation as an HF ``quantization_config`` (compressed-tensors layout).

    One ``config_groups`` entry per distinct (bits, group size, symmetry), targeting its modules by
    qualified name; float Linear layers go to ``ignore``; masked layers to a ``sparsity_config``
    (``"2:4"`` when every mask keeps exactly 2 of each 4 consecutive weights, else ``"unstructured"``).

    Returns:
        The dict, or ``None`` when the model has neither quantized nor masked Linear layers.
    """
    groups: dict[tuple[int, int | None, bool], list[str]] = {}
    floats: list[str] = []
    masked: dict[str, bool] = {}  # name -> whether its mask is 2:4
    for name, module in model.named_modules():
        if isinstance(module, QuantizedLinear):
            groups.setdefault((module.bits, module.group_size, module.symmetric), []).append(name)
        elif is_linear_like(module):
            floats.append(name)
        if is_linear_like(module) and MASK_BUFFER in module._buffers:
            masked[name] = _is_two_four(module)
    if not groups and not masked:
        return None
    out: dict[str, Any] = {
        "quant_method": "compressed-tensors",
        "format": "pack-quantized" if groups else "dense",
        "quantization_status": "compressed" if groups else "frozen",
        "config_groups": {},
        "ignore": sorted(floats),
    }
    for i, ((bits, group_size, symmetric), names) in enumerate(sorted(groups.items(), key=_group_order)):
        out["config_groups"][f"group_{i}"] = {
            "targets": sorted(names),
            "weights": {
                "num_bits": bits,
                "type": "int",
                "symmetric": symmetric,
                "strategy": "channel" if group_size is None else "group",
                "group_size": group_size,
                "dynamic": False,
                "observer": "minmax",
            },
            "input_activations": None,
            "output_activations": None,
        }
    if masked:
        two_four = all(masked.values())
        out["sparsity_config"] = {
            "format": "dense",
            "sparsity_structure": "2:4" if two_four else "unstructured",
            "global_sparsity": round(masked_fraction(model, sorted(masked)), 6),
            "targets": sorted(masked),
            "ignore": [],
        }
    return out


def _is_two_four(module: nn.Module) -> bool:
    """Whether the module's mask keeps exactly 2 of every 4 consecutive input weights."""
    out_features, in_features = getattr(module, "out_features", 0), getattr(module, "in_features", 0)
    shape = (int(out_features), int(in_features))
    mask = get_mask(module, shape)
    if mask is None or shape[1] % 4:
        return False
    return bool((mask.reshape(shape[0], -1, 4).sum(dim=-1) == 2).all())


def _group_order(item: tuple[tuple[int, int | None, bool], list[str]]) -> tuple[int, int, bool]:
    (bits, group_size, symmetric), _ = item
    return bits, group_size or 0, symmetric


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
        A summary: bytes before and after; average weight bits and masked sparsity over the modules the recipe
        targets (the figures a compression study reports); the files written; and the largest
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
    model = transformers.AutoModel.from_pretrained(src, local_files_only=True, trust_remote_code=False).eval()
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
    out = save_compressed(model, recipe, out_dir)
    base_config.save_pretrained(out)
    for name in _TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, out / name)
    files = sorted(p.name for p in out.iterdir())
    qconfig = compressed_tensors_config(model)
    if qconfig is not None:
        (out / QUANTIZATION_CONFIG).write_text(json.dumps(qconfig, indent=2))
        files = sorted({*files, QUANTIZATION_CONFIG})
    reloaded = load_pretrained_compressed(out)
    probe = {
        "input_ids": torch.randint(
            0, base_config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0)
        )
    }
    with torch.inference_mode():
        expected = _hidden(model(**probe))
        got = _hidden(reloaded(**probe))
    return {
        "model": str(src),
        "reload_max_abs_diff": float((expected - got).abs().max()),
        "out": str(out),
        "bytes_before": before,
        "bytes_after": model_size_bytes(model),
        "avg_bits": avg_bits(model, targeted),
        "sparsity": masked_fraction(model, targeted, original=original),
        "files": files,
    }


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
    return output[0] if isinstance(output, tuple) else output.last_hidden_state


def load_pretrained_compressed(path: str | os.PathLike[str]) -> nn.Module:
    """Rebuild a model from a directory written by :func:`compress_pretrained`, with nothing else."""
    import transformers

    src = _check_model_dir(path)
    config = transformers.AutoConfig.from_pretrained(src, local_files_only=True, trust_remote_code=False)

    def fresh() -> nn.Module:
        return transformers.AutoModel.from_config(config).eval()

    return load_compressed(fresh, src).eval()
