"""How a :class:`~kernels.QuantizedLinear` computes its forward: one :class:`LinearKernel` per path.

Dispatch walks the registered kernels in priority order and runs the first whose ``supports`` says yes;
``dequant-matmul`` supports everything, so there is always one. The chosen kernel's name is written to
``QuantizedLinear.kernel`` so evaluators can tag their metrics with it.
"""

from __future__ import annotations

import abc
import functools
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from frontier.spaces._registry import Registry

if TYPE_CHECKING:
    from frontier.kernels._qlinear import QuantizedLinear

FAST_MAX_ROWS = 16
"""The numba kernels take inputs of at most this many rows (tokens x batch); larger ones use a matmul."""

SERIAL_MAX_BYTES = 96 * 1024
"""Packed weights up to this size run the single-threaded numba kernel (thread start-up costs more)."""


class LinearKernel(abc.ABC):
    """One way to compute ``x @ W.T + b`` for a :class:`~kernels.QuantizedLinear`.

    Lifecycle: kernels are registered once with :func:`register_linear_kernel`; on a forward the layer
    asks ``supports(layer, x)`` of each kernel, highest ``priority`` first, and calls the first that
    accepts with ``x`` flattened to 2-D ``[rows, in_features]``; the result is ``[rows, out_features]``.
    The choice is cached per layer under :func:`dispatch_key`, so ``supports`` must depend only on the
    layer's format and on what that key holds (device, dtype, rows, autograd state).
    """

    name: ClassVar[str]
    priority: ClassVar[int]

    @abc.abstractmethod
    def supports(self, layer: QuantizedLinear, x: torch.Tensor) -> bool:
        """Whether this kernel can run ``layer`` on ``x`` (device, dtype, rows, autograd, bit width)."""

    @abc.abstractmethod
    def __call__(self, layer: QuantizedLinear, x: torch.Tensor) -> torch.Tensor:
        """``x @ dequant(W).T + bias`` for 2-D ``x``."""


KERNELS: Registry[LinearKernel] = Registry("linear kernel")
"""Kernel instances by name. The built-in ones are defined below, in this module, so nothing is lazy."""
_ORDER: tuple[int, list[LinearKernel]] = (-1, [])
K = TypeVar("K", bound=type[LinearKernel])


def register_linear_kernel(cls: K) -> K:
    """Class decorator: make a :class:`LinearKernel` available to dispatch under ``cls.name``.

    Raises:
        ValueError: another kernel already holds the name.
    """
    KERNELS.add(cls.name, cls())
    return cls


def _dispatch_order() -> list[LinearKernel]:
    """Registered kernels, highest ``priority`` first (ties by name), rebuilt when the registry changes."""
    global _ORDER
    version, order = _ORDER
    if version != KERNELS.version:
        order = sorted((k for _, k in KERNELS.items()), key=lambda k: (-k.priority, k.name))
        _ORDER = (KERNELS.version, order)
    return order


def available_linear_kernels() -> list[str]:
    """Kernel names in dispatch order."""
    return [k.name for k in _dispatch_order()]


def dispatch_key(layer: QuantizedLinear, x: torch.Tensor) -> tuple[Any, ...]:
    """What a kernel choice may depend on besides the layer's (fixed) format."""
    grad = torch.is_grad_enabled() and (
        x.requires_grad or (layer.bias is not None and layer.bias.requires_grad)
    )
    return (x.device, x.dtype, x.shape[0], grad, KERNELS.version)


def select_kernel(layer: QuantizedLinear, x: torch.Tensor) -> LinearKernel:
    """The first registered kernel that supports ``layer`` on 2-D ``x`` (cached per layer)."""
    cache = layer._dispatch_cache
    key = dispatch_key(layer, x)
    kernel = cache.get(key)
    if kernel is None:
        kernel = next((k for k in _dispatch_order() if k.supports(layer, x)), None)
        if kernel is None:
            raise RuntimeError("No linear kernel accepted the input; 'dequant-matmul' should always accept.")
        if len(cache) > 256:  # many distinct row counts: keep the cache bounded
            cache.clear()
        cache[key] = kernel
    return kernel


def get_linear_kernel(name: str) -> LinearKernel:
    """The kernel registered as ``name``.

    Raises:
        ValueError: ``Unknown linear kernel 'x'. Available: [...]``.
    """
    return KERNELS.get(name)


def _needs_grad(layer: QuantizedLinear, x: torch.Tensor) -> bool:
    """Fast kernels have no backward; autograd through the layer takes the matmul path."""
    bias_grad = layer.bias is not None and layer.bias.requires_grad
    return torch.is_grad_enabled() and (x.requires_grad or bias_grad)


# --- reference ------------------------------------------------------------------------------------
@register_linear_kernel
class DequantMatmul(LinearKernel):
    """The reference: dequantize with plain torch ops, then ``F.linear``. Also the path for whatever no
    other kernel takes (other dtypes or devices, autograd).

    With ``layer.cache_dequantized`` the float weight is kept (not in the state dict) after the first
    call, trading the memory saving for speed on large batches.
    """

    name = "dequant-matmul"
    priority = 0

    def supports(self, layer: QuantizedLinear, x: torch.Tensor) -> bool:
        return True

    def __call__(self, layer: QuantizedLinear, x: torch.Tensor) -> torch.Tensor:
        weight = layer.dequantized_weight(cache=layer.cache_dequantized).to(x.dtype)
        bias = None if layer.bias is None else layer.bias.to(x.dtype)
        return F.linear(x, weight, bias)


# --- numba ----------------------------------------------------------------------------------------
_NO_ZEROS = np.zeros((1, 1), np.uint8)
_NO_BIAS = np.zeros(0, np.float32)


@functools.cache
def _numba() -> Any:
    import numba

    from frontier.kernels import _cpu_kernels

    return numba, _cpu_kernels


def _weight_args(layer: QuantizedLinear) -> tuple[Any, ...]:
    """numpy views of the layer's tensors (they share memory), rebuilt only when a tensor is replaced."""
    buffers = layer._buffers  # direct dict reads: nn.Module.__getattr__ is slow on this hot path
    w, s, z, b = (
        buffers["weight_packed"],
        buffers["scales"],
        buffers.get("zero_points"),
        layer._parameters["bias"],
    )
    cached = layer._kernel_state.get("numba")
    if cached is not None:
        cw, cs, cz, cb = cached[0]
        if cw is w and cs is s and cz is z and cb is b:
            return cached[1]
    args = (
        np.ascontiguousarray(layer.weight_packed.numpy()),  # the tile decode reads rows as one buffer
        layer.scales.numpy(),
        _NO_ZEROS if layer.zero_points is None else layer.zero_points.numpy(),
        layer.zero_points is not None,
        np.float32(2 ** (layer.bits - 1)),
        layer.group_size or layer.in_features,
        layer.bits,
        _NO_BIAS if layer.bias is None else layer.bias.detach().numpy(),
        layer.bias is not None,
    )
    layer._kernel_state["numba"] = ((w, s, z, b), args)
    return args


class _NumbaKernel(LinearKernel):
    bits: ClassVar[tuple[int, ...]]
    entry: ClassVar[str] = "linear"  # numba functions ``{entry}_serial`` / ``{entry}_parallel``
    priority = 10

    def supports(self, layer: QuantizedLinear, x: torch.Tensor) -> bool:
        return (
            layer.bits in self.bits
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and x.shape[0] <= FAST_MAX_ROWS
            and not _needs_grad(layer, x)
        )

    def __call__(self, layer: QuantizedLinear, x: torch.Tensor) -> torch.Tensor:
        numba, ck = _numba()
        out = np.empty((x.shape[0], layer.out_features), np.float32)
        args = (x.detach().contiguous().numpy(), *_weight_args(layer), out)
        threads = min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)
        if threads == 1 or args[1].nbytes <= SERIAL_MAX_BYTES:
            getattr(ck, f"{self.entry}_serial")(*args)
        else:
            if numba.get_num_threads() != threads:
                numba.set_num_threads(threads)
            getattr(ck, f"{self.entry}_parallel")(*args, 4 * threads)
        return torch.from_numpy(out)


@register_linear_kernel
class NumbaDequantMatmul(LinearKernel):
    """CPU float32 inputs with more rows than the direct kernels take: the weight is decoded by a parallel
    numba loop (one pass, bit-identical to the reference) and multiplied with ``F.linear`` (MKL).

    With ``layer.cache_dequantized`` the decoded weight is kept, so later calls are a plain float matmul.
    """

    name = "numba-dequant-matmul"
    priority = 5

    def supports(self, layer: QuantizedLinear, x: torch.Tensor) -> bool:
        return x.device.type == "cpu" and x.dtype == torch.float32 and not _needs_grad(layer, x)

    def __call__(self, layer: QuantizedLinear, x: torch.Tensor) -> torch.Tensor:
        weight = layer._dequant_cache
        if weight is None:
            numba, ck = _numba()
            w, scales, zeros, asym, zc, gs, bits, _, _ = _weight_args(layer)
            out = np.empty((layer.out_features, layer.in_features), np.float32)
            threads = min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)
            if numba.get_num_threads() != threads:
                numba.set_num_threads(threads)
            ck.dequantize_parallel(w, scales, zeros, asym, zc, gs, bits, out, 4 * threads)
            weight = torch.from_numpy(out)
            if layer.cache_dequantized:
                layer._dequant_cache = weight
        return F.linear(x, weight, None if layer.bias is None else layer.bias.detach())


@register_linear_kernel
class NumbaInt8(_NumbaKernel):
    """8-bit codes (one per byte) on CPU, few rows."""

    name = "numba-int8"
    bits = (8,)


@register_linear_kernel
class NumbaInt4(_NumbaKernel):
    """4-bit codes (two per byte) on CPU, few rows."""

    name = "numba-int4"
    bits = (4,)


@register_linear_kernel
class NumbaInt2(_NumbaKernel):
    """2-bit codes (four per byte) on CPU, few rows."""

    name = "numba-int2"
    bits = (2,)


@register_linear_kernel
class NumbaDense(_NumbaKernel):
    """Densely packed 3-, 5-, 6- and 7-bit codes (8 codes in ``bits`` bytes) on CPU, few rows."""

    name = "numba-dense"
    bits = (3, 5, 6, 7)
    entry = "dense_linear"


# --- triton ---------------------------------------------------------------------------------------
@functools.cache
def triton_available() -> bool:
    """Whether Triton imports and a CUDA device is present (checked once; Triton is imported lazily)."""
    if not torch.cuda.is_available():
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


class _TritonKernel(LinearKernel):
    bits: ClassVar[int]
    priority = 20

    def supports(self, layer: QuantizedLinear, x: torch.Tensor) -> bool:
        return (
            layer.bits == self.bits
            and x.is_cuda
            and x.dtype in (torch.float32, torch.float16, torch.bfloat16)
            and not _needs_grad(layer, x)
            and triton_available()
        )

    def __call__(self, layer: QuantizedLinear, x: torch.Tensor) -> torch.Tensor:
        from frontier.kernels._triton_kernels import packed_linear

        return packed_linear(
            x,
            layer.weight_packed,
            layer.scales,
            layer.zero_points,
            layer.bias,
            bits=layer.bits,
            in_features=layer.in_features,
            group_size=layer.group_size or layer.in_features,
        )


@register_linear_kernel
class TritonInt8(_TritonKernel):
    """8-bit codes on CUDA via Triton: tiles unpacked and dequantized in registers, ``tl.dot``."""

    name = "triton-int8"
    bits = 8


@register_linear_kernel
class TritonInt4(_TritonKernel):
    """4-bit codes on CUDA via Triton."""

    name = "triton-int4"
    bits = 4


@register_linear_kernel
class TritonInt2(_TritonKernel):
    """2-bit codes on CUDA via Triton."""

    name = "triton-int2"
    bits = 2
