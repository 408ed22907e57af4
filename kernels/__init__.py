"""Compression and MoE compute. This module: quantization, sparsity and structured pruning applied as
``apply_(model, config)``; Mixture-of-Experts layers live in :mod:`kernels.moe`.

Configs are small frozen, versioned dataclasses; a :class:`CompressionRecipe` maps module targets to
configs and applies in one call; a compressed model saves and reloads with its recipe. ``import kernels``
imports torch (this is the compute package) but never ray, mlflow or optuna; numba and Triton are imported
only when a quantized layer first runs on CPU or CUDA.
"""

from frontier.kernels import _prune, _sparsity  # noqa: F401  (handler registration)
from frontier.kernels._apply import CompressionRecipe, apply_
from frontier.kernels._calibrate import calibrate
from frontier.kernels._compressed_tensors import (
    CT_VERSION,
    compressed_tensors_config,
    from_ct_packed,
    save_compressed_tensors,
    to_ct_packed,
)
from frontier.kernels._config import (
    ApplyContext,
    CompressionConfig,
    Stage,
    available_configs,
    register_handler,
)
from frontier.kernels._hf import compress_pretrained, load_pretrained_compressed, needs_calibration
from frontier.kernels._io import load_compressed, load_recipe, save_compressed
from frontier.kernels._linear_kernels import LinearKernel, available_linear_kernels, register_linear_kernel
from frontier.kernels._masks import reapply_masks
from frontier.kernels._prune import StructuredPruneConfig
from frontier.kernels._qlinear import QuantizedLinear
from frontier.kernels._quant import WeightOnlyQuantConfig
from frontier.kernels._select import select_modules
from frontier.kernels._size import (
    ModuleSize,
    avg_bits,
    mask_ratio,
    masked_fraction,
    model_size_bytes,
    size_breakdown,
    sparsity,
    weight_counts,
)
from frontier.kernels._sparsity import MagnitudeSparsityConfig, NMSparsityConfig, WandaSparsityConfig

__all__ = [
    "CT_VERSION",
    "ApplyContext",
    "CompressionConfig",
    "CompressionRecipe",
    "LinearKernel",
    "MagnitudeSparsityConfig",
    "ModuleSize",
    "NMSparsityConfig",
    "QuantizedLinear",
    "Stage",
    "StructuredPruneConfig",
    "WandaSparsityConfig",
    "WeightOnlyQuantConfig",
    "apply_",
    "available_configs",
    "available_linear_kernels",
    "avg_bits",
    "calibrate",
    "compress_pretrained",
    "compressed_tensors_config",
    "from_ct_packed",
    "load_compressed",
    "load_pretrained_compressed",
    "load_recipe",
    "mask_ratio",
    "masked_fraction",
    "model_size_bytes",
    "needs_calibration",
    "reapply_masks",
    "register_handler",
    "register_linear_kernel",
    "save_compressed",
    "save_compressed_tensors",
    "select_modules",
    "size_breakdown",
    "sparsity",
    "to_ct_packed",
    "weight_counts",
]
