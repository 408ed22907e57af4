"""FLOPs proxies: a latency baseline that needs no measurement (multiply-accumulates, in millions).

Counted as ``k*k * C_in * C_out / groups * H_out * W_out`` per convolution; the fixed stem and head are
included where they are cheap to state, batch norm, activations, pooling and squeeze-excite are not.
Only the ranking matters for the benchmark, so approximations that scale every candidate alike are fine.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
_NB201_KERNEL = {"nor_conv_1x1": 1, "nor_conv_3x3": 3}


def nasbench201_flops(arch_str: str) -> float:
    """MACs (millions) of the convolutions in a NAS-Bench-201 network's 15 cells.

    NAS-Bench-201 (Dong & Yang, ICLR 2020) stacks 5 cells at each of 3 stages (16, 32, 64 channels on
    32x32, 16x16, 8x8 maps for CIFAR). Each ``nor_conv_KxK`` edge is ReLU-Conv-BN with C in and C out
    channels, so a 3x3 convolution costs 9x a 1x1 one; ``none``, ``skip_connect`` and ``avg_pool_3x3``
    count as 0. The stem and the residual reduction blocks are the same for every architecture and are
    left out. The result is ``3.93 * (9 * n_conv3x3 + n_conv1x1)``.

    Args:
        arch_str: ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``.

    Raises:
        ValueError: the string does not have 6 edges of known ops.
    """
    ops = re.findall(r"\|([^|~]+)~\d+", arch_str) if isinstance(arch_str, str) else []
    if len(ops) != 6 or any(op not in _NB201_OPS for op in ops):
        raise ValueError(
            "The 'arch_str' parameter of nasbench201_flops must be a NAS-Bench-201 cell string with 6 edges "
            f"'|op~0|+|op~0|op~1|+|op~0|op~1|op~2|', ops in {list(_NB201_OPS)}. Got {arch_str!r} instead."
        )
    total = 0
    for channels, side in ((16, 32), (32, 16), (64, 8)):
        per_cell = sum(_NB201_KERNEL.get(op, 0) ** 2 * channels * channels * side * side for op in ops)
        total += 5 * per_cell
    return total / 1e6


# FBNet macro-architecture (Wu et al., "FBNet", CVPR 2019, table 1), 224x224 input: (out channels, stride)
# of the 22 searchable layers; a 3x3 stride-2 stem to 16 channels precedes, a 1x1 conv to 1984 follows.
_FBNET_LAYERS = (
    [(16, 1)]
    + [(24, 2)] + [(24, 1)] * 3
    + [(32, 2)] + [(32, 1)] * 3
    + [(64, 2)] + [(64, 1)] * 3
    + [(112, 1)] * 4
    + [(184, 2)] + [(184, 1)] * 3
    + [(352, 1)]
)  # fmt: skip
_FBNET_OP = re.compile(r"^k(\d+)_e(\d+)(?:_g(\d+))?$")


def fbnet_flops(ops: Sequence[str]) -> float:
    """MACs (millions) of an FBNet-space network (22 layers, each ``k{3,5}_e{1,3,6}[_g2]`` or ``skip``).

    A block ``kK_eE_gG`` is a 1x1 group conv to E times the input channels, a KxK depthwise conv (with the
    layer's stride) and a 1x1 group conv to the output channels. ``skip`` is free where shapes match and
    counted as a strided 1x1 conv where they do not (an assumption: the source does not say).
    """
    if isinstance(ops, str) or len(ops) != len(_FBNET_LAYERS):
        raise ValueError(
            f"The 'ops' parameter of fbnet_flops must be a sequence of {len(_FBNET_LAYERS)} op names. "
            f"Got {ops!r} instead."
        )
    side = 112
    macs = 3 * 3 * 3 * 16 * side * side
    c_in = 16
    for op, (c_out, stride) in zip(ops, _FBNET_LAYERS, strict=True):
        out_side = -(-side // stride)
        if op == "skip":
            if c_in != c_out or stride != 1:
                macs += c_in * c_out * out_side * out_side
        else:
            m = _FBNET_OP.match(op)
            if m is None:
                raise ValueError(
                    f"The 'ops' parameter of fbnet_flops must hold 'kK_eE[_gG]' or 'skip' names. "
                    f"Got {op!r} instead."
                )
            k, e, g = int(m[1]), int(m[2]), int(m[3] or 1)
            mid = c_in * e
            macs += (
                c_in * mid // g * side * side
                + mid * k * k * out_side * out_side
                + mid * c_out // g * out_side**2
            )
        c_in, side = c_out, out_side
    macs += c_in * 1984 * side * side + 1984 * 1000
    return macs / 1e6


# Once-for-All MobileNetV3 (Cai et al., "Once-for-All", ICLR 2020), width 1.0: 5 stages of up to 4 blocks.
_OFA_WIDTHS = (24, 40, 80, 112, 160)
_OFA_STRIDES = (2, 2, 2, 1, 2)


def _make_divisible(v: float, divisor: int = 8) -> int:
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def ofa_flops(ks: Sequence[int], e: Sequence[int], d: Sequence[int], resolution: int) -> float:
    """MACs (millions) of a Once-for-All MobileNetV3 subnet.

    Args:
        ks: 20 kernel sizes (4 per stage; only the first ``d[stage]`` of a stage are used).
        e: 20 expand ratios, likewise.
        d: 5 stage depths in 1..4.
        resolution: input side in pixels.

    Stem (3x3, stride 2, 16 channels), the fixed first block and the head (1x1 to 960, 960 -> 1280 ->
    1000) are counted; squeeze-excite is not.
    """
    if len(ks) != 20 or len(e) != 20 or len(d) != 5 or any(not 1 <= int(x) <= 4 for x in d) or resolution < 8:
        raise ValueError(
            "The parameters of ofa_flops must be 20 kernel sizes 'ks', 20 expand ratios 'e', 5 depths 'd' in "
            f"1..4 and a resolution >= 8. Got len(ks)={len(ks)}, len(e)={len(e)}, d={list(d)}, "
            f"resolution={resolution} instead."
        )
    side = -(-int(resolution) // 2)
    macs = 3 * 3 * 3 * 16 * side * side + (3 * 3 * 16 + 16 * 16) * side * side
    c_in = 16
    for stage, (c_out, stride) in enumerate(zip(_OFA_WIDTHS, _OFA_STRIDES, strict=True)):
        for b in range(int(d[stage])):
            k, ratio = int(ks[4 * stage + b]), int(e[4 * stage + b])
            s = stride if b == 0 else 1
            out_side = -(-side // s)
            mid = _make_divisible(c_in * ratio)
            macs += c_in * mid * side * side + mid * k * k * out_side**2 + mid * c_out * out_side**2
            c_in, side = c_out, out_side
    macs += c_in * 960 * side * side + 960 * 1280 + 1280 * 1000
    return macs / 1e6
