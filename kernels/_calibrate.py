"""Calibration: per-input-feature activation norms of Linear layers, collected with forward hooks."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from frontier.kernels._qlinear import is_linear_like
from frontier.kernels._select import select_modules


def run_batch(model: nn.Module, batch: Any) -> Any:
    """Call ``model`` on one batch: a mapping as keyword arguments, a tuple/list as positional ones."""
    if isinstance(batch, Mapping):
        return model(**batch)
    if isinstance(batch, tuple | list):
        return model(*batch)
    return model(batch)


@torch.no_grad()
def calibrate(
    model: nn.Module, batches: Iterable[Any], modules: str | Sequence[str] | None = None
) -> dict[str, torch.Tensor]:
    """Run ``batches`` through ``model`` and return each selected Linear's input-feature L2 norms.

    For a layer with input ``X`` (all calibration tokens stacked, ``[tokens, in_features]``) the result is
    ``||X[:, j]||_2`` for each input feature ``j``: the activation statistic Wanda scores weights with, and
    that activation-based structured pruning ranks heads and FFN channels with.

    Args:
        model: the model, run in eval mode without gradients (its training flag is restored).
        batches: model inputs; a mapping is passed as keyword arguments, a tuple or list positionally.
        modules: target names or patterns (see :func:`~kernels.select_modules`); ``None`` for every Linear.

    Returns:
        ``{module name: float32 tensor [in_features]}``.

    Raises:
        ValueError: no batch was given, the targets select no Linear, or a selected Linear never ran.
    """
    if modules is None:
        selected = {n: m for n, m in model.named_modules() if is_linear_like(m)}
    else:
        selected = {n: m for n, m in select_modules(model, modules).items() if is_linear_like(m)}
    if not selected:
        raise ValueError(f"calibrate found no Linear module to observe among targets {modules!r}.")
    sums: dict[str, torch.Tensor] = {}

    def hook_for(name: str) -> Any:
        def hook(_module: nn.Module, args: tuple[Any, ...]) -> None:
            x = args[0].detach()
            sq = x.reshape(-1, x.shape[-1]).float().pow(2).sum(dim=0)
            sums[name] = sq if name not in sums else sums[name] + sq

        return hook

    handles = [m.register_forward_pre_hook(hook_for(n)) for n, m in selected.items()]
    was_training = model.training
    model.eval()
    seen = 0
    try:
        for batch in batches:
            run_batch(model, batch)
            seen += 1
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if seen == 0:
        raise ValueError("calibrate needs at least one batch. Got an empty iterable instead.")
    missing = [n for n in selected if n not in sums]
    if missing:
        raise ValueError(
            f"These modules received no input during calibration: {missing[:5]}. Check the targets."
        )
    return {n: sums[n].sqrt() for n in selected}
