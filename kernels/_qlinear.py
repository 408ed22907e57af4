"""``QuantizedLinear``: an ``nn.Linear`` replacement holding packed integer weights, and its apply handler."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from frontier.kernels._config import ApplyContext, register_handler
from frontier.kernels._linear_kernels import LinearKernel, get_linear_kernel, select_kernel
from frontier.kernels._masks import MASK_BUFFER, get_mask, mask_nbytes
from frontier.kernels._quant import (
    WeightOnlyQuantConfig,
    check_layer_shape,
    dequantize_codes,
    pack_codes,
    packed_row_bytes,
    quantize_weight,
    unpack_codes,
)


class QuantizedLinear(nn.Module):
    """A linear layer whose weight lives as packed 2..8-bit codes plus per-channel or per-group scales.

    The forward runs on the packed weight: numba kernels on CPU for float32 inputs of up to
    ``FAST_MAX_ROWS`` rows (``numba-int8``/``-int4``/``-int2``, and ``numba-dense`` for 3/5/6/7 bits), a
    Triton kernel on CUDA for 8/4/2 bits (``triton-int8``, ...); more rows on CPU decode the weight with
    numba and multiply with MKL (``numba-dequant-matmul``); anything else (other dtypes or devices, 3/5/6/7
    bits on CUDA, autograd) takes the reference ``dequant-matmul``. ``kernel`` names the path the last
    forward took, so evaluators can tag metrics with it.

    Buffers (all in ``state_dict``):
        weight_packed: uint8 ``[out_features, in_features * bits / 8]``: every code takes exactly ``bits``
            bits; see ``kernels._quant`` for the layout.
        scales: float32 ``[out_features, groups]``.
        zero_points: uint8 ``[out_features, groups]``, asymmetric layers only.
        weight_mask_bits: uint8, 1 bit per weight, only when the source layer was pruned with a mask.

    Args:
        in_features: input width.
        out_features: output width.
        bits: code width, 2..8.
        group_size: input features per scale, or ``None`` for one scale per output channel.
        symmetric: whether the grid is symmetric (no stored zero points).
        bias: whether the layer has a bias (a float parameter; ``requires_grad`` is off by default).
        masked: allocate a ``weight_mask_bits`` buffer (for loading a pruned layer's state dict).

    Attributes:
        kernel: name of the forward path last taken (initially the CPU batch-1 path).
        cache_dequantized: keep the dequantized float weight after the first matmul-path call (default
            False: the cache costs ``4 * in * out`` bytes and is not part of the state dict).
    """

    weight_packed: torch.Tensor
    scales: torch.Tensor
    zero_points: torch.Tensor | None
    bias: nn.Parameter | None

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        bits: int = 8,
        group_size: int | None = None,
        symmetric: bool = True,
        bias: bool = True,
        masked: bool = False,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        WeightOnlyQuantConfig(bits, group_size=group_size, symmetric=symmetric)  # validates the three
        check_layer_shape(in_features, bits=bits, group_size=group_size)
        self.in_features = in_features
        self.out_features = out_features
        self.bits = bits
        self.group_size = group_size
        self.symmetric = symmetric
        groups = 1 if group_size is None else in_features // group_size
        packed_cols = packed_row_bytes(in_features, bits)
        self.register_buffer(
            "weight_packed", torch.zeros(out_features, packed_cols, dtype=torch.uint8, device=device)
        )
        self.register_buffer("scales", torch.ones(out_features, groups, dtype=torch.float32, device=device))
        if symmetric:
            self.register_buffer("zero_points", None)
        else:
            self.register_buffer(
                "zero_points", torch.zeros(out_features, groups, dtype=torch.uint8, device=device)
            )
        if masked:
            nbytes = mask_nbytes(in_features * out_features)
            self.register_buffer(MASK_BUFFER, torch.full((nbytes,), 255, dtype=torch.uint8, device=device))
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_features, device=device), requires_grad=False)
        else:
            self.register_parameter("bias", None)
        self.kernel = f"numba-int{bits}" if bits in (2, 4, 8) else "numba-dense"
        self.cache_dequantized = False
        self._dequant_cache: torch.Tensor | None = None
        self._dispatch_cache: dict[tuple[Any, ...], LinearKernel] = {}
        self._kernel_state: dict[str, Any] = {}

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, config: WeightOnlyQuantConfig, *, name: str = "the layer"
    ) -> QuantizedLinear:
        """Quantize ``linear``'s weight per ``config`` (``name`` is used in error messages)."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(
                f"QuantizedLinear.from_linear expects an nn.Linear. Got {type(linear).__name__} instead."
            )
        if not isinstance(config, WeightOnlyQuantConfig):
            raise TypeError(
                f"QuantizedLinear.from_linear expects a WeightOnlyQuantConfig. Got {config!r} instead."
            )
        check_layer_shape(
            linear.in_features, bits=config.bits, group_size=config.group_size, module=f"'{name}'"
        )
        weight = linear.weight.detach()
        mask = get_mask(linear, weight.shape)
        if mask is not None:
            weight = weight * mask.to(weight.dtype)
        codes, scales, zero_points = quantize_weight(
            weight, bits=config.bits, group_size=config.group_size, symmetric=config.symmetric
        )
        layer = cls(
            linear.in_features,
            linear.out_features,
            bits=config.bits,
            group_size=config.group_size,
            symmetric=config.symmetric,
            bias=linear.bias is not None,
            masked=mask is not None,
            device=weight.device,
        )
        layer.weight_packed.copy_(pack_codes(codes, config.bits))
        layer.scales.copy_(scales)
        if zero_points is not None:
            assert layer.zero_points is not None
            layer.zero_points.copy_(zero_points)
        if mask is not None:
            getattr(layer, MASK_BUFFER).copy_(getattr(linear, MASK_BUFFER))
        if linear.bias is not None:
            assert layer.bias is not None
            layer.bias.data.copy_(linear.bias.detach().to(torch.float32))
        return layer

    @property
    def config(self) -> WeightOnlyQuantConfig:
        """The config this layer's format corresponds to."""
        return WeightOnlyQuantConfig(self.bits, group_size=self.group_size, symmetric=self.symmetric)

    def codes(self) -> torch.Tensor:
        """Unpacked uint8 codes ``[out_features, in_features]``."""
        return unpack_codes(self.weight_packed, self.bits, self.in_features)

    def dequantize(self) -> torch.Tensor:
        """The float32 weight ``[out_features, in_features]`` the packed codes stand for."""
        return dequantize_codes(self.codes(), self.scales, self.zero_points, bits=self.bits)

    def dequantized_weight(self, *, cache: bool = False) -> torch.Tensor:
        if self._dequant_cache is not None:
            return self._dequant_cache
        weight = self.dequantize()
        if cache:
            self._dequant_cache = weight
        return weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"QuantizedLinear expects inputs with last dimension in_features={self.in_features}. "
                f"Got shape {tuple(x.shape)} instead."
            )
        x2 = x.reshape(-1, self.in_features)
        kernel = select_kernel(self, x2)
        self.__dict__["kernel"] = kernel.name  # plain attribute; skips nn.Module.__setattr__ on the hot path
        return kernel(self, x2).reshape(*x.shape[:-1], self.out_features)

    def forward_with(self, kernel: str, x: torch.Tensor) -> torch.Tensor:
        """Run the named kernel (e.g. ``"dequant-matmul"``, the reference) whatever dispatch would pick."""
        k = get_linear_kernel(kernel)
        x2 = x.reshape(-1, self.in_features)
        if not k.supports(self, x2):
            raise ValueError(f"Linear kernel '{kernel}' does not support this layer and input.")
        return k(self, x2).reshape(*x.shape[:-1], self.out_features)

    def _drop_caches(self) -> None:
        self._dequant_cache = None
        self._dispatch_cache.clear()
        self._kernel_state.clear()

    def _apply(self, fn: Any, recurse: bool = True) -> QuantizedLinear:
        self._drop_caches()
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._drop_caches()
        super()._load_from_state_dict(*args, **kwargs)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, "
            f"group_size={self.group_size}, symmetric={self.symmetric}, bias={self.bias is not None}, "
            f"kernel={self.kernel!r}"
        )


def is_plain_linear(module: nn.Module) -> bool:
    """``nn.Linear`` layers whose owner only calls them (not MultiheadAttention's out_proj, read raw)."""
    return isinstance(module, nn.Linear) and not isinstance(
        module, nn.modules.linear.NonDynamicallyQuantizableLinear
    )


def is_linear_like(module: nn.Module) -> bool:
    return is_plain_linear(module) or isinstance(module, QuantizedLinear)


@register_handler(WeightOnlyQuantConfig, accepts=is_linear_like)
def _quantize(module: nn.Module, config: WeightOnlyQuantConfig, ctx: ApplyContext) -> nn.Module:
    if isinstance(module, QuantizedLinear):
        raise ValueError(
            f"Module '{ctx.name}' is already a QuantizedLinear ({module.bits}-bit); a module is quantized "
            "once. "
            "Check the recipe for two targets that both match it."
        )
    assert isinstance(module, nn.Linear)
    return QuantizedLinear.from_linear(module, config, name=ctx.name)
