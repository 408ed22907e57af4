"""Saving a compressed model and loading it back into a fresh base model.

A directory holds ``recipe.json`` (what was applied, for provenance and for re-applying in production),
``manifest.json`` (the resulting structure: quantized layers' formats, pruned layer shapes, masks, head
counts) and ``state_dict.pt``. Loading rebuilds the structure from the manifest on a fresh base model and
then loads the state dict strictly, so it needs neither the calibration data nor the original weights'
importance scores, and gives bit-identical outputs.

Manifest versions: 2 stores every ``bits``-bit code in exactly ``bits`` bits (see ``kernels._quant``);
1 stored 3-bit codes in 4-bit nibbles and 5/6/7-bit codes in whole bytes. A version-1 directory still
loads: its 3/5/6/7-bit layers are repacked on load (they need ``in_features`` a multiple of 8, else the
directory must be rewritten with ``frontier apply``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from frontier.kernels._apply import CompressionRecipe
from frontier.kernels._config import CompressionConfig, config_from_dict
from frontier.kernels._masks import MASK_BUFFER, mask_nbytes
from frontier.kernels._qlinear import QuantizedLinear
from frontier.kernels._quant import codes_per_unit, pack_codes
from frontier.kernels._select import get_submodule, set_submodule

FORMAT = "frontier-compressed"
FORMAT_VERSION = 2
_READABLE_VERSIONS = (1, 2)
_STRUCT_ATTRS = ("num_attention_heads", "all_head_size")
_CONFIG_ATTRS = ("pruned_heads", "intermediate_size")


def _manifest(model: nn.Module) -> dict[str, Any]:
    modules: dict[str, dict[str, Any]] = {}
    for name, module in model.named_modules():
        entry: dict[str, Any] = {}
        if isinstance(module, QuantizedLinear):
            entry = {
                "kind": "QuantizedLinear",
                "in_features": module.in_features,
                "out_features": module.out_features,
                "bits": module.bits,
                "group_size": module.group_size,
                "symmetric": module.symmetric,
                "bias": module.bias is not None,
                "masked": MASK_BUFFER in module._buffers,
            }
        elif isinstance(module, nn.Linear):
            entry = {
                "kind": "Linear",
                "in_features": module.in_features,
                "out_features": module.out_features,
                "bias": module.bias is not None,
                "masked": MASK_BUFFER in module._buffers,
            }
        attrs = {a: getattr(module, a) for a in _STRUCT_ATTRS if isinstance(getattr(module, a, None), int)}
        if isinstance(getattr(module, "pruned_heads", None), set):
            attrs["pruned_heads"] = sorted(module.pruned_heads)
        if attrs:
            entry["attrs"] = attrs
        if entry:
            modules[name] = entry
    out: dict[str, Any] = {"format": FORMAT, "version": FORMAT_VERSION, "modules": modules}
    config = getattr(model, "config", None)
    if config is not None:
        values = {a: getattr(config, a) for a in _CONFIG_ATTRS if getattr(config, a, None) is not None}
        out["config"] = {
            a: ({str(k): v for k, v in val.items()} if isinstance(val, dict) else val)
            for a, val in values.items()
        }
    return out


def save_compressed(
    model: nn.Module, recipe: CompressionRecipe | CompressionConfig, path: str | os.PathLike[str]
) -> Path:
    """Write ``model`` (already compressed with ``recipe``) to directory ``path``; returns the path."""
    if not isinstance(recipe, CompressionRecipe | CompressionConfig):
        raise TypeError(
            f"save_compressed expects a CompressionRecipe or CompressionConfig. Got {recipe!r} instead."
        )
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    kind = "recipe" if isinstance(recipe, CompressionRecipe) else "config"
    (out / "recipe.json").write_text(json.dumps({kind: recipe.to_dict()}, indent=2))
    (out / "manifest.json").write_text(json.dumps(_manifest(model), indent=2))
    torch.save(model.state_dict(), out / "state_dict.pt")
    return out


def load_recipe(path: str | os.PathLike[str]) -> CompressionRecipe | CompressionConfig:
    """The recipe (or single config) a directory written by :func:`save_compressed` was made with."""
    data = json.loads((Path(path) / "recipe.json").read_text())
    if "recipe" in data:
        return CompressionRecipe.from_dict(data["recipe"])
    return config_from_dict(data["config"])


def _rebuild(model: nn.Module, name: str, spec: dict[str, Any]) -> nn.Module:
    current = get_submodule(model, name)
    kind = spec.get("kind")
    new: nn.Module = current
    if kind == "QuantizedLinear":
        new = QuantizedLinear(
            spec["in_features"],
            spec["out_features"],
            bits=spec["bits"],
            group_size=spec["group_size"],
            symmetric=spec["symmetric"],
            bias=spec["bias"],
            masked=spec["masked"],
        )
    elif kind == "Linear":
        if not isinstance(current, nn.Linear):
            raise ValueError(f"The base model has no Linear at '{name}' (found {type(current).__name__}).")
        shape = (spec["out_features"], spec["in_features"])
        if tuple(current.weight.shape) != shape or (current.bias is not None) != spec["bias"]:
            new = nn.Linear(
                spec["in_features"], spec["out_features"], bias=spec["bias"], dtype=current.weight.dtype
            )
        if spec["masked"]:
            nbytes = mask_nbytes(shape[0] * shape[1])
            new.register_buffer(MASK_BUFFER, torch.zeros(nbytes, dtype=torch.uint8))
    for attr, value in spec.get("attrs", {}).items():
        setattr(new, attr, set(value) if attr == "pruned_heads" else value)
    if new is not current:
        if name == "":
            return new
        set_submodule(model, name, new)
    return model


def load_compressed(
    base: Callable[[], nn.Module] | str | os.PathLike[str], path: str | os.PathLike[str]
) -> nn.Module:
    """Rebuild a model saved by :func:`save_compressed`.

    Args:
        base: a zero-argument factory returning a fresh uncompressed model of the same architecture, or
            a transformers model directory / hub id (loaded with ``transformers.AutoModel``).
        path: the directory :func:`save_compressed` wrote. A version-1 directory (3-bit codes in 4-bit
            nibbles, 5/6/7-bit codes in bytes) loads too: those layers are repacked densely.
    """
    src = Path(path)
    manifest = json.loads((src / "manifest.json").read_text())
    if manifest.get("format") != FORMAT or manifest.get("version") not in _READABLE_VERSIONS:
        raise ValueError(
            f"{src / 'manifest.json'} must be a '{FORMAT}' manifest of version "
            f"{' or '.join(map(str, _READABLE_VERSIONS))}. "
            f"Got format={manifest.get('format')!r}, version={manifest.get('version')!r} instead."
        )
    old_dense = _version_1_dense_layers(manifest, src)
    if isinstance(base, str | os.PathLike):
        import transformers

        model: nn.Module = transformers.AutoModel.from_pretrained(base)
    elif callable(base):
        model = base()
    else:
        raise TypeError(
            f"load_compressed expects a model factory or a model directory. Got {base!r} instead."
        )
    for name, spec in manifest["modules"].items():
        model = _rebuild(model, name, spec)
    config = getattr(model, "config", None)
    for attr, value in manifest.get("config", {}).items():
        if config is not None:
            setattr(config, attr, {int(k): v for k, v in value.items()} if isinstance(value, dict) else value)
    state = torch.load(src / "state_dict.pt", map_location="cpu", weights_only=True)
    for name, bits in old_dense.items():
        key = f"{name}.weight_packed" if name else "weight_packed"
        state[key] = _repack_version_1(state[key], bits)
    model.load_state_dict(state, strict=True)
    return model


def _version_1_dense_layers(manifest: dict[str, Any], src: Path) -> dict[str, int]:
    """``{name: bits}`` of the layers a version-1 manifest stored in containers (3/5/6/7 bits)."""
    if manifest["version"] != 1:
        return {}
    out: dict[str, int] = {}
    for name, spec in manifest["modules"].items():
        bits = spec.get("bits")
        if spec.get("kind") != "QuantizedLinear" or bits in (2, 4, 8):
            continue  # 2-, 4- and 8-bit layouts did not change
        in_features = spec["in_features"]
        if in_features % codes_per_unit(bits):
            raise ValueError(
                f"{src} was written by an older Frontier (manifest version 1), and its {bits}-bit layer "
                f"'{name}' has in_features={in_features}, which dense {bits}-bit packing cannot hold "
                f"(it needs a multiple of {codes_per_unit(bits)}). Re-run `frontier apply` (or "
                "kernels.save_compressed) to rewrite the directory with another bit width for that layer."
            )
        out[name] = bits
    return out


def _repack_version_1(old: torch.Tensor, bits: int) -> torch.Tensor:
    """Version-1 ``weight_packed`` (3-bit codes two per byte, 5/6/7-bit one per byte) packed densely."""
    if bits == 3:  # the lower nibble first
        return pack_codes(torch.stack((old & 0xF, old >> 4), dim=-1).reshape(old.shape[0], -1), bits)
    return pack_codes(old, bits)
