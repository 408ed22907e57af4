"""A Frontier-compressed transformers model as a compressed-tensors ``pack-quantized`` directory.

Pinned to **compressed-tensors 0.20.0** (:data:`CT_VERSION`, the ``version`` the written config carries):
stock ``transformers`` with that release installed loads the directory with ``AutoModel.from_pretrained``
(no Frontier needed). The layout, as the pinned release packs it:

* ``config.json``: the model's config plus a ``quantization_config`` (``quant_method: compressed-tensors``,
  ``format: pack-quantized``, ``quantization_status: compressed``), one ``config_groups`` entry per
  distinct (bits, group size) whose ``targets`` are exact module names (compressed-tensors matches a target
  by exact name, by ``re:`` regex or by class name; exact names keep every float Linear, e.g. a pooler or an
  ``lm_head``, float, and those are also listed in ``ignore``).
* ``model.safetensors``: per quantized Linear ``weight_packed`` (int32 ``[out, ceil(in * bits / 32)]``),
  ``weight_scale`` (``[out, in / group_size]`` or ``[out, 1]``, the model's float dtype), ``weight_shape``
  (int64 ``[2]``) and the bias; every other tensor dense, keyed and de-duplicated (tied weights) by
  transformers' own ``save_pretrained``.

Packing. compressed-tensors 0.20 (``pack_to_int32``) puts element ``i`` of a row at global bit ``i * bits``
of a little-endian stream of int32 words, codes offset by ``2**(bits-1)``. Frontier's packing
(``kernels._quant``) is the same bit stream in uint8 bytes with the same offset, so a row converts by
zero-padding it to whole 4-byte words and reinterpreting them as int32: no requantization. (3/5/6/7-bit
packing changed in compressed-tensors 0.18, 0.17 padded each int32; 2/4/8-bit did not, so those also load
with 0.17.)

What the format cannot say, and how it is handled:

* asymmetric weights: transformers cannot load their zero points today, so writing them is an error;
* masks (unstructured or N:M sparsity) ship as exact zeros inside the packed weights, and the
  ``sparsity_config`` says ``format: dense`` (no current runtime serves sparse compressed weights);
* structured pruning: FFN widths that are the same in every layer are ``intermediate_size`` (a genuinely
  smaller model). Different widths, and pruned attention heads (transformers 5 no longer honours
  ``pruned_heads``), are written in an exactly equivalent dense layout: the kept channels / heads first, then
  zero ones (zero rows and bias in the producing projections, zero columns in the consuming one, which for a
  group-quantized consumer are whole zero groups, so no scale changes). The widths are recorded under
  ``frontier_structure`` in ``config.json`` so that :func:`~kernels.load_pretrained_compressed` rebuilds the
  smaller model exactly; a layout that cannot be padded exactly is refused.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from frontier.kernels._masks import MASK_BUFFER, get_mask
from frontier.kernels._prune import is_encoder_layer
from frontier.kernels._qlinear import QuantizedLinear, is_linear_like
from frontier.kernels._quant import codes_per_unit, pack_codes, packed_row_bytes, unpack_codes
from frontier.kernels._size import masked_fraction

CT_VERSION = "0.20.0"
STRUCTURE_KEY = "frontier_structure"
WEIGHTS_NAME = "model.safetensors"
# the base directory's own weights (and exports of them) are replaced, never copied
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".gguf")
_WEIGHT_DIRS = ("onnx", "openvino", ".git", ".cache")
_WEIGHT_INDEXES = (".safetensors.index.json", ".bin.index.json")
_OWN_FILES = ("config.json", "quantization_config.json", "recipe.json", "manifest.json")
_FUSED_EXPERTS = (".experts.gate_up_proj", ".experts.down_proj")  # transformers 5 MoE blocks


def to_ct_packed(packed: torch.Tensor) -> torch.Tensor:
    """Frontier's uint8 ``weight_packed`` ``[out, in * bits / 8]`` as compressed-tensors' int32 words.

    Each row is zero-padded to whole 4-byte words and reinterpreted as little-endian int32: the bit stream
    (code ``i`` at bit ``i * bits``) is the one ``pack_to_int32`` writes.
    """
    rows, nbytes = packed.shape
    pad = (-nbytes) % 4
    padded = torch.nn.functional.pad(packed.to(torch.uint8), (0, pad)) if pad else packed.to(torch.uint8)
    words = padded.contiguous().view(torch.int32)
    if not _little_endian():
        words = padded.reshape(rows, -1, 4).flip(-1).contiguous().view(torch.int32).reshape(rows, -1)
    return words.clone()  # never a view of the caller's uint8 buffer


def from_ct_packed(words: torch.Tensor, *, bits: int, in_features: int) -> torch.Tensor:
    """Inverse of :func:`to_ct_packed`: Frontier's uint8 rows of ``in_features`` ``bits``-bit codes."""
    rows = words.shape[0]
    data = words.to(torch.int32).contiguous()
    raw = data.view(torch.uint8).reshape(rows, -1)
    if not _little_endian():
        raw = raw.reshape(rows, -1, 4).flip(-1).reshape(rows, -1)
    return raw[:, : packed_row_bytes(in_features, bits)].contiguous()


def _little_endian() -> bool:
    import sys

    return sys.byteorder == "little"


def _float_dtype(model: nn.Module) -> torch.dtype:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def compressed_tensors_config(model: nn.Module) -> dict[str, Any] | None:
    """The compressed model's allocation as an HF ``quantization_config`` (compressed-tensors layout).

    One ``config_groups`` entry per distinct (bits, group size), targeting its modules by exact qualified
    name; float Linear layers go to ``ignore``; masked layers to a ``sparsity_config`` with ``format: dense``
    (the zeros are stored in the weights; ``"2:4"`` when every mask keeps exactly 2 of each 4 consecutive
    weights, else ``"unstructured"``).

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
        "version": CT_VERSION,
        "config_groups": {},
        "ignore": sorted(floats),
        "kv_cache_scheme": None,
        "global_compression_ratio": None,
    }
    ordered = sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0, kv[0][2]))
    for i, ((bits, group_size, symmetric), names) in enumerate(ordered):
        out["config_groups"][f"group_{i}"] = {
            "targets": sorted(names),
            "weights": {
                "num_bits": bits,
                "type": "int",
                "symmetric": symmetric,
                "strategy": "channel" if group_size is None else "group",
                "group_size": group_size,
                "dynamic": False,
                "actorder": None,
                "observer": "minmax",
            },
            "input_activations": None,
            "output_activations": None,
            "format": "pack-quantized",
        }
    if masked:
        two_four = all(masked.values())
        out["sparsity_config"] = {
            # the masked weights are stored as exact zeros inside the (packed or float) weights: no runtime
            # today serves sparse compressed weights, so the zeros are dense
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


# --- a Linear as the tensors the directory holds, padded with zero rows / columns where needed ---


class _Layer:
    """One Linear's exported tensors: float ``weight`` or Frontier codes + float32 scales; and ``bias``."""

    def __init__(self, module: nn.Module) -> None:
        self.quantized = isinstance(module, QuantizedLinear)
        bias = getattr(module, "bias", None)
        self.bias: torch.Tensor | None = None if bias is None else bias.detach()
        if isinstance(module, QuantizedLinear):
            self.bits, self.group_size = module.bits, module.group_size
            self.codes: torch.Tensor = module.codes()
            self.scales: torch.Tensor = module.scales.detach()
        else:
            assert isinstance(module, nn.Linear)
            weight = module.weight.detach()
            mask = get_mask(module, weight.shape)
            self.weight = weight if mask is None else weight * mask.to(weight.dtype)

    @property
    def shape(self) -> tuple[int, int]:
        t = self.codes if self.quantized else self.weight
        return int(t.shape[0]), int(t.shape[1])

    def pad_rows(self, rows: int) -> None:
        """Append zero output rows (a zero weight row and bias)."""
        extra = rows - self.shape[0]
        if extra <= 0:
            return
        if self.quantized:
            zero = torch.full((extra, self.shape[1]), 2 ** (self.bits - 1), dtype=torch.uint8)
            self.codes = torch.cat([self.codes, zero])
            # Frontier's grid gives an all-zero row scale 1.0; the same here keeps a re-quantization stable
            self.scales = torch.cat([self.scales, self.scales.new_ones(extra, self.scales.shape[1])])
        else:
            self.weight = torch.cat([self.weight, self.weight.new_zeros(extra, self.shape[1])])
        if self.bias is not None:
            self.bias = torch.cat([self.bias, self.bias.new_zeros(extra)])

    def pad_cols(self, cols: int) -> str | None:
        """Append zero input columns; returns why not when that would change the layer's quantization."""
        extra = cols - self.shape[1]
        if extra <= 0:
            return None
        if not self.quantized:
            self.weight = torch.cat([self.weight, self.weight.new_zeros(self.shape[0], extra)], dim=1)
            return None
        unit = codes_per_unit(self.bits)
        if self.group_size is not None and (self.shape[1] % self.group_size or extra % self.group_size):
            return f"{self.bits}-bit, group_size={self.group_size}: {extra} zero columns are not whole groups"
        if cols % unit:
            return f"{self.bits}-bit codes need in_features a multiple of {unit}"
        zero = torch.full((self.shape[0], extra), 2 ** (self.bits - 1), dtype=torch.uint8)
        self.codes = torch.cat([self.codes, zero], dim=1)
        if self.group_size is not None:  # whole zero groups: scale 1.0, as Frontier's grid gives them
            self.scales = torch.cat(
                [self.scales, self.scales.new_ones(self.shape[0], extra // self.group_size)], dim=1
            )
        # per-channel: zero columns leave each row's absmax, so its scale and codes, unchanged
        return None

    def tensors(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        if self.quantized:
            out["weight_packed"] = to_ct_packed(pack_codes(self.codes, self.bits))
            out["weight_scale"] = self.scales.to(dtype).contiguous()
            out["weight_shape"] = torch.tensor(self.shape, dtype=torch.int64)
        else:
            out["weight"] = self.weight.contiguous()
        if self.bias is not None:
            out["bias"] = self.bias.to(dtype).contiguous()
        return out


def _encoder_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if is_encoder_layer(m)]


def _structure(model: nn.Module, base_config: dict[str, Any]) -> tuple[dict[str, _Layer], dict[str, Any]]:
    """The padded layers a structurally pruned model needs, and the ``frontier_structure`` record.

    Returns ``({module name: padded layer}, record)``; both empty for a model without pruned layers.
    """
    layers = _encoder_layers(model)
    if not layers:
        return {}, {}
    padded: dict[str, _Layer] = {}
    record: dict[str, Any] = {}
    problems: list[str] = []
    # heads: transformers 5 has no pruned_heads, so pad every layer back to the base head count
    n_heads = base_config.get("num_attention_heads")
    heads: dict[str, dict[str, Any]] = {}
    for name, layer in layers:
        attn: Any = layer.get_submodule("attention.self")
        kept = int(attn.num_attention_heads)
        if n_heads is None or kept == n_heads:
            continue
        head_dim = int(attn.attention_head_size)
        pruned = sorted(getattr(layer.get_submodule("attention"), "pruned_heads", set()))
        heads[name] = {"kept": kept, "pruned": pruned}
        for p in ("query", "key", "value"):
            lin = _Layer(layer.get_submodule(f"attention.self.{p}"))
            lin.pad_rows(n_heads * head_dim)
            padded[f"{name}.attention.self.{p}"] = lin
        out = _Layer(layer.get_submodule("attention.output.dense"))
        why = out.pad_cols(n_heads * head_dim)
        if why:
            problems.append(f"'{name}.attention.output.dense' ({kept} of {n_heads} heads kept; {why})")
        padded[f"{name}.attention.output.dense"] = out
    if heads:
        record["attention_heads"] = heads
    # FFN: one width is intermediate_size; several are padded to the widest (else to the base width)
    by_name = dict(layers)
    ups: dict[str, Any] = {name: layer.get_submodule("intermediate.dense") for name, layer in layers}
    widths = {name: int(up.out_features) for name, up in ups.items()}
    if len(set(widths.values())) > 1:
        candidates = sorted({max(widths.values()), int(base_config.get("intermediate_size") or 0)} - {0})
        chosen, why_not = None, []
        for width in candidates:
            trial = {n: _Layer(by_name[n].get_submodule("output.dense")) for n in widths}
            failed = [
                f"'{n}.output.dense' (width {widths[n]}: {w})"
                for n, t in trial.items()
                if (w := t.pad_cols(width))
            ]
            if not failed:
                chosen = width
                for n, t in trial.items():
                    up = _Layer(by_name[n].get_submodule("intermediate.dense"))
                    up.pad_rows(width)
                    padded[f"{n}.intermediate.dense"] = up
                    padded[f"{n}.output.dense"] = t
                break
            why_not.append(f"padded to {width}: " + "; ".join(failed))
        if chosen is None:
            problems.append(
                f"FFN widths {widths} differ between layers, and the zero channels that would make them one "
                "intermediate_size change the down projection's quantization groups ("
                + " | ".join(why_not)
                + ")"
            )
        else:
            record["intermediate_size"] = chosen
            record["ffn_widths"] = widths
    if problems:
        raise ValueError(
            "This structurally pruned model cannot be written exactly as a stock transformers model: "
            + "; ".join(problems)
            + ". Use the same FFN ratio in every layer, or a down-projection group size that divides the "
            "pruned widths' differences (or per-channel scales), or save it with kernels.save_compressed."
        )
    return padded, record


def _check_symmetric(model: nn.Module) -> None:
    asym = [n for n, m in model.named_modules() if isinstance(m, QuantizedLinear) and not m.symmetric]
    if asym:
        raise ValueError(
            f"Asymmetric quantized layers {asym} cannot be written in the compressed-tensors format: "
            "transformers does not load their zero points today (zero-point shape mismatch). "
            "Quantize them with WeightOnlyQuantConfig(symmetric=True), or save with kernels.save_compressed."
        )


def save_compressed_tensors(
    model: nn.Module,
    out_dir: str | os.PathLike[str],
    *,
    base_dir: str | os.PathLike[str] | None = None,
    base_config: dict[str, Any] | None = None,
) -> list[str]:
    """Write a Frontier-compressed transformers ``model`` to ``out_dir`` as a compressed-tensors
    ``pack-quantized`` directory that stock transformers (with compressed-tensors 0.20) loads.

    Args:
        model: a transformers ``PreTrainedModel`` compressed with :func:`~kernels.apply_`.
        out_dir: the directory to write (created; files of the same names are replaced).
        base_dir: the model directory it was loaded from: every file there that is not a weight file
            (tokenizer, sentence-transformers modules, README, ...) is copied, so the written directory is a
            drop-in replacement.
        base_config: the uncompressed model's config as a dict (for structurally pruned models: the head
            count and FFN width the padded layers go back to); default ``model.config``.

    Returns:
        The relative paths of the files written or copied, sorted.

    Raises:
        ValueError: asymmetric quantized layers, or a structural pruning that cannot be written exactly.
    """
    _check_symmetric(model)
    config = getattr(model, "config", None)
    if config is None or not hasattr(model, "save_pretrained"):
        raise TypeError(
            f"save_compressed_tensors expects a transformers PreTrainedModel. Got {type(model).__name__}."
        )
    base = dict(base_config) if base_config is not None else config.to_dict()
    padded, record = _structure(model, base)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    copied = _copy_base_files(Path(base_dir), out) if base_dir is not None else []

    dtype = _float_dtype(model)
    state: dict[str, torch.Tensor] = {}
    linear_names = {n for n, m in model.named_modules() if is_linear_like(m)}
    skip_prefixes = tuple(f"{n}." for n in linear_names if n)
    for key, value in model.state_dict().items():
        if not key.startswith(skip_prefixes) or key.rsplit(".", 1)[0] not in linear_names:
            state[key] = value
    for name in sorted(linear_names):
        module = model.get_submodule(name)
        layer = padded.get(name) or _Layer(module)
        if not layer.quantized and name not in padded and MASK_BUFFER not in module._buffers:
            # untouched float Linear: the module's own tensors (tied weights stay shared)
            assert isinstance(module, nn.Linear)
            state[f"{name}.weight"] = module.weight
            if module.bias is not None:
                state[f"{name}.bias"] = module.bias
            continue
        for param, tensor in layer.tensors(dtype).items():
            state[f"{name}.{param}"] = tensor
    state = {k: v for k, v in state.items() if not k.endswith(MASK_BUFFER)}
    hf: Any = model  # a transformers PreTrainedModel (checked above)
    # A MoE's routed experts (fused 3-D parameters, never quantized) stay in that layout: transformers
    # (5.25) with compressed-tensors does not load the per-expert hub layout save_pretrained writes by default
    # (its expert-merging converters are rewritten to dequantize first and receive nothing for float experts).
    fused = any(k.endswith(_FUSED_EXPERTS) for k in state)
    hf.save_pretrained(out, state_dict=state, **({"save_original_format": False} if fused else {}))

    written = json.loads((out / "config.json").read_text())
    if record:
        written.pop("pruned_heads", None)  # transformers 5 ignores it; the padded layout needs none
        if "intermediate_size" in record:
            written["intermediate_size"] = record["intermediate_size"]
        if "attention_heads" in record:
            written["num_attention_heads"] = base["num_attention_heads"]
        written[STRUCTURE_KEY] = record
    else:
        written.pop("pruned_heads", None)
    head = hf.get_output_embeddings() if hasattr(hf, "get_output_embeddings") else None
    if isinstance(head, QuantizedLinear) and written.get("tie_word_embeddings"):
        # a quantized head is no longer the input embedding's tensor: tied, the loader would overwrite one
        written["tie_word_embeddings"] = False
    qconfig = compressed_tensors_config(model)
    if qconfig is not None:
        written["quantization_config"] = qconfig
    if written.get("auto_map", "") is None:  # stock transformers reads a present auto_map as a mapping
        del written["auto_map"]
    if base_dir is not None:
        _keep_custom_code(written, Path(base_dir))
    (out / "config.json").write_text(json.dumps(written, indent=2, sort_keys=True) + "\n")
    own = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    return sorted(own | set(copied))


def _keep_custom_code(written: dict[str, Any], base_dir: Path) -> None:
    """A MoE whose layers keep different expert counts (``frontier_moe`` plan, see
    ``kernels.moe._prune``) loads in stock transformers only through the ``frontier_moe.py`` module its base
    directory ships (copied with the other files): keep the base's ``auto_map`` and ``architectures`` that
    point ``trust_remote_code=True`` at it, which ``save_pretrained`` of the in-memory model does not
    write."""
    if written.get("frontier_moe") is None or not (base_dir / "config.json").is_file():
        return
    base = json.loads((base_dir / "config.json").read_text())
    if base.get("auto_map"):
        written["auto_map"] = base["auto_map"]
        written["architectures"] = base.get("architectures", written.get("architectures"))


def _is_weight_file(rel: Path) -> bool:
    name = rel.name
    return (
        any(part in _WEIGHT_DIRS for part in rel.parts[:-1])
        or name.endswith(_WEIGHT_SUFFIXES)
        or name.endswith(_WEIGHT_INDEXES)
        or (len(rel.parts) == 1 and name in _OWN_FILES)  # a 1_Pooling/config.json is the base's own
    )


def base_files(base_dir: Path) -> Iterable[Path]:
    """The files of ``base_dir`` a written directory copies (relative paths): all but weights and config."""
    for path in sorted(base_dir.rglob("*")):
        rel = path.relative_to(base_dir)
        if path.is_file() and not _is_weight_file(rel):
            yield rel


def _copy_base_files(base_dir: Path, out: Path) -> list[str]:
    copied = []
    for rel in base_files(base_dir):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(base_dir / rel, out / rel)
        copied.append(rel.as_posix())
    return copied


def read_layer(
    tensors: dict[str, torch.Tensor], *, bits: int, group_size: int | None, bias: bool
) -> QuantizedLinear:
    """A :class:`~kernels.QuantizedLinear` from one module's compressed-tensors tensors (symmetric)."""
    out_features, in_features = (int(x) for x in tensors["weight_shape"].tolist())
    layer = QuantizedLinear(in_features, out_features, bits=bits, group_size=group_size, bias=bias)
    layer.weight_packed.copy_(from_ct_packed(tensors["weight_packed"], bits=bits, in_features=in_features))
    layer.scales.copy_(tensors["weight_scale"].to(torch.float32))
    if bias:
        assert layer.bias is not None
        layer.bias.data.copy_(tensors["bias"].to(torch.float32))
    return layer


def slice_quantized(
    layer: QuantizedLinear, *, rows: int | None = None, cols: int | None = None
) -> QuantizedLinear:
    """The first ``rows`` outputs / ``cols`` inputs of ``layer`` (undoes the zero padding exactly)."""
    rows = layer.out_features if rows is None else rows
    cols = layer.in_features if cols is None else cols
    codes = unpack_codes(layer.weight_packed, layer.bits, layer.in_features)[:rows, :cols]
    groups = 1 if layer.group_size is None else cols // layer.group_size
    new = QuantizedLinear(
        cols, rows, bits=layer.bits, group_size=layer.group_size, bias=layer.bias is not None
    )
    new.weight_packed.copy_(pack_codes(codes.contiguous(), layer.bits))
    new.scales.copy_(layer.scales[:rows, :groups])
    if layer.bias is not None:
        assert new.bias is not None
        new.bias.data.copy_(layer.bias[:rows])
    return new
