"""``digits-classifier``: a real (small) NAS task on scikit-learn's bundled 8x8 digits."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from frontier.evaluators._base import EvalContext, Evaluator, EvaluatorOptions
from frontier.evaluators._registry import register_evaluator
from frontier.spaces import Candidate

if TYPE_CHECKING:
    from pathlib import Path

    import torch

_KNOWN = ("arch", "depth", "width", "kernel", "activation", "dropout", "lr", "batch_size")
# Parameters that change the inference computation; the rest (lr, dropout, batch_size) only change training.
_ARCHITECTURE = ("arch", "depth", "width", "kernel", "activation")


class DigitsOptions(EvaluatorOptions):
    epochs: int = Field(default=10, ge=1, le=1000)
    test_fraction: float = Field(default=0.3, gt=0.05, lt=0.9)
    split_seed: int = 0
    default_arch: Literal["mlp", "cnn"] = "mlp"
    latency_time_cap_s: float = Field(default=1.0, gt=0)


def _param(c: Candidate, name: str, layer: int | None, default: Any) -> Any:
    """Per-layer ``name_i`` wins over a shared ``name``; then the default."""
    if layer is not None and f"{name}_{layer}" in c.params:
        return c.params[f"{name}_{layer}"]
    return c.params.get(name, default)


@register_evaluator("digits-classifier")
class DigitsClassifier(Evaluator):
    """Train the candidate network on ``load_digits`` and measure it.

    Parameters it understands (each may be per layer as ``NAME_i``): ``arch`` (mlp|cnn), ``depth``,
    ``width``, ``kernel`` (cnn), ``activation`` (relu|gelu|tanh|silu), ``dropout``, ``lr``, ``batch_size``.

    Metrics: ``accuracy`` (held-out split), ``latency_ms`` (inference at batch ``context.latency_batch_size``,
    default 1, median wall-clock time after warm-up, measured in the node's exclusive lane and through the
    latency cache), ``latency_norm_ms`` (the same at the machine's calibrated speed, see
    :meth:`~evaluators.latency.LatencyStats.metrics`), ``latency_ci_ms`` (half-width of the latter's 95 % CI),
    ``latency_cv``, ``params``, ``flops`` (multiply-adds x 2).
    """

    Options = DigitsOptions
    options: DigitsOptions

    @classmethod
    def tiny_spec(cls, workdir: Path) -> dict[str, Any]:
        """A small study spec this evaluator runs in seconds (the conformance suite runs it; files under
        ``workdir``)."""
        return {
            "name": "tiny-digits",
            "evaluator": {"kind": "digits-classifier", "options": {"epochs": 1, "latency_time_cap_s": 0.05}},
            "space": [
                {"kind": "int", "name": "depth", "low": 1, "high": 2},
                {"kind": "ordinal", "name": "width", "choices": [8, 16]},
            ],
            "objectives": [{"name": "accuracy", "direction": "maximize"}],
        }

    def metrics(self) -> tuple[str, ...]:
        return ("accuracy", "latency_ms", "latency_norm_ms", "latency_ci_ms", "latency_cv", "params", "flops")

    def check_params(self, names: set[str]) -> None:
        unknown = sorted(n for n in names if n not in _KNOWN and n.rsplit("_", 1)[0] not in _KNOWN)
        if unknown:
            raise ValueError(
                f"digits-classifier does not use parameters {unknown}. It understands {list(_KNOWN)} "
                "(optionally per layer as NAME_i)"
            )

    def latency_signature(self, candidate: Candidate) -> dict[str, Any]:
        """The architecture parameters, plus its ``flops`` at batch 1 (a cost proxy the predictors use)."""
        import torch

        params = {k: v for k, v in candidate.params.items() if k.rsplit("_", 1)[0] in _ARCHITECTURE}
        params.setdefault("arch", self.options.default_arch)
        params["flops"] = _count_flops(self.build(candidate), torch.zeros(1, 64))
        return params

    def latency(self, candidate: Candidate, context: EvalContext) -> dict[str, float]:
        import torch

        from frontier.evaluators.latency import fixed_threads

        if context.latency_input is not None and tuple(context.latency_input) != (64,):
            raise ValueError(
                "digits-classifier: latency.input_shape must be [64] (an 8x8 digit), or left out. "
                f"Got {list(context.latency_input)} instead."
            )
        batch = context.latency_batch_size or 1
        model = self.build(candidate).eval()
        sample = torch.from_numpy(self._data[1][:batch])
        with fixed_threads(context.threads), torch.inference_mode():
            stats = context.measure_latency(
                lambda: model(sample),
                signature={"evaluator": self.name, "params": self.latency_signature(candidate)},
                input_shape=tuple(sample.shape),
                time_cap_s=self.options.latency_time_cap_s,
            )
        return stats.metrics()

    def setup(self) -> None:
        import numpy as np
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        x, y = load_digits(return_X_y=True)
        x = (x / 16.0).astype(np.float32)
        self._data = train_test_split(
            x, y, test_size=self.options.test_fraction, random_state=self.options.split_seed, stratify=y
        )

    def build(self, c: Candidate) -> torch.nn.Module:
        import torch
        from torch import nn

        acts = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}
        arch = c.params.get("arch", self.options.default_arch)
        depth = int(c.params.get("depth", 2))
        layers: list[nn.Module] = []
        if arch == "cnn":
            channels, size = 1, 8
            layers.append(nn.Unflatten(1, (1, 8, 8)))
            for i in range(1, depth + 1):
                width, k = int(_param(c, "width", i, 16)), int(_param(c, "kernel", i, 3))
                act = acts[_param(c, "activation", i, "relu")]
                layers += [nn.Conv2d(channels, width, k, padding=k // 2), act()]
                if size > 2:
                    layers.append(nn.MaxPool2d(2))
                    size //= 2
                channels = width
            layers += [nn.Flatten(), nn.Dropout(float(c.params.get("dropout", 0.0)))]
            layers.append(nn.Linear(channels * size * size, 10))
        elif arch == "mlp":
            features = 64
            for i in range(1, depth + 1):
                width = int(_param(c, "width", i, 64))
                act = acts[_param(c, "activation", i, "relu")]
                layers += [nn.Linear(features, width), act(), nn.Dropout(float(_param(c, "dropout", i, 0.0)))]
                features = width
            layers.append(nn.Linear(features, 10))
        else:
            raise ValueError(f"digits-classifier: arch must be one of ['mlp', 'cnn'], but got {arch!r}")
        torch.manual_seed(0)
        return nn.Sequential(*layers)

    def evaluate(self, candidate: Candidate, context: EvalContext) -> dict[str, float]:
        import torch

        from frontier.evaluators.latency import fixed_threads

        x_tr, x_te, y_tr, y_te = self._data
        torch.manual_seed(context.seed)
        model = self.build(candidate)
        lr = float(candidate.params.get("lr", 3e-3))
        batch = int(candidate.params.get("batch_size", 64))
        xt, yt = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
        xv, yv = torch.from_numpy(x_te), torch.from_numpy(y_te)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        gen = torch.Generator().manual_seed(context.seed)
        accuracy = 0.0
        with fixed_threads(context.threads):
            for epoch in range(1, self.options.epochs + 1):
                with context.training():  # no latency measurement on this node meanwhile
                    model.train()
                    for idx in torch.randperm(len(xt), generator=gen).split(batch):
                        opt.zero_grad()
                        loss = torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx])
                        loss.backward()
                        opt.step()
                    model.eval()
                    with torch.no_grad():
                        accuracy = float((model(xv).argmax(1) == yv).float().mean())
                context.report(epoch, {"accuracy": accuracy})
            params = sum(p.numel() for p in model.parameters())
            flops = _count_flops(model, xv[:1])
        metrics = {"accuracy": accuracy, "params": float(params), "flops": float(flops)}
        if not context.skip_latency:
            metrics.update(self.latency(candidate, context))
        return metrics


def _count_flops(model: torch.nn.Module, sample: torch.Tensor) -> int:
    """Multiply-adds x 2 of Linear and Conv2d layers for one forward pass of ``sample``."""
    import torch
    from torch import nn

    total = 0

    def hook(mod: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.Linear):
            total += 2 * mod.in_features * mod.out_features * (out.numel() // mod.out_features)
        elif isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1] * (mod.in_channels // mod.groups)
            total += 2 * k * out.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    try:
        with torch.no_grad():
            model.eval()(sample)
    finally:
        for h in handles:
            h.remove()
    return total
