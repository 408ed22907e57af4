"""What compression evaluators share: a candidate of a ``bits``/``sparsity`` space decoded into a recipe
(:func:`spaces.compression_recipe`) and applied with ``kernels.apply_``, the compression metrics, uniform
baselines and the sensitivity-guided warm start.

A subclass loads its base model and reference outputs once per worker (``setup``) and implements
:meth:`CompressionEvaluator.quality` (metrics of a compressed copy) and
:meth:`CompressionEvaluator.distortion` (a cheap quality loss on *calibration* data, 0 for the base model,
used only to rank targets by sensitivity).
"""

from __future__ import annotations

import abc
import copy
import hashlib
import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from frontier.evaluators._base import EvalContext, Evaluator, EvaluatorOptions, InitialCandidate
from frontier.spaces import Candidate, DecodedRecipe, StudySpec, compression_recipe
from frontier.spaces._family_compress import Allocation, check_allocations

if TYPE_CHECKING:
    import torch
    from torch import nn

    from frontier import kernels

UNIFORM_BITS = (8, 4, 3)
UNIFORM_SPARSITY = (0.25, 0.5, 0.75)
FLOAT_BITS = 32
METRICS = (
    "avg_bits",
    "sparsity",
    "size_mb",
    "target_size_mb",
    "latency_ms",
    "latency_norm_ms",
    "latency_ci_ms",
    "latency_cv",
)


class CompressionOptions(EvaluatorOptions):
    """Options every compression evaluator has.

    Attributes:
        warm_start: what a fresh study evaluates before its sampler's own candidates: ``off`` (nothing),
            ``baselines`` (the uniform baselines), ``sensitivity`` (the baselines, then greedy-by-sensitivity
            candidates that meet the budgets; measuring sensitivity costs one quality probe per group and
            choice, on the driver, before the search starts).
        latency_time_cap_s: time cap of each latency measurement.
    """

    warm_start: Literal["off", "baselines", "sensitivity"] = "sensitivity"
    latency_time_cap_s: float = Field(default=1.0, gt=0)


class CompressionEvaluator(Evaluator):
    """Base of evaluators that compress a pretrained model with a ``bits``/``sparsity`` candidate.

    Lifecycle: ``bind_spec`` reads the space's allocation families (which modules each parameter covers);
    the first ``evaluate`` (or warm start) calls :meth:`load`: the base model (:meth:`load_base`), then the
    subclass's reference outputs (:meth:`prepare`); ``evaluate`` deep-copies the base, applies the
    candidate's recipe, and reports :meth:`quality` plus ``avg_bits`` and ``sparsity`` (over every module
    an allocation targets, weighted by parameter count; an unquantized module counts 32 bits; ``avg_bits``
    is over the weights that remain, ``sparsity`` counts masked and structurally removed weights against
    the uncompressed model's count), ``size_mb``
    (the whole model's stored bytes / 1e6: packed codes, scales, zero points, masks, every float tensor),
    ``target_size_mb`` (the targeted modules only) and the latency of :meth:`latency_input` (batch 1,
    median after warm-up, fixed threads, in the node's measurement lane and through the latency cache).
    """

    Options: ClassVar[type[EvaluatorOptions]] = CompressionOptions
    options: CompressionOptions
    _allocs: list[Allocation] | None = None
    _loaded = False
    _spec_space: tuple[Any, ...] = ()
    base: nn.Module

    # -- the spec ---------------------------------------------------------------------------------------
    def check_params(self, names: set[str]) -> None:
        if not names:
            raise ValueError(f"{self.name} needs a 'bits' and/or 'sparsity' family in the space; it has none")

    def bind_spec(self, spec: StudySpec) -> None:
        allocs = check_allocations(spec)
        owned = {g for a in allocs for g in a.groups}
        stray = sorted(p.name for p in spec.params if p.name not in owned)
        if stray or not allocs:
            raise ValueError(
                f"{self.name} searches compression allocations only: every parameter must come from a "
                f"'bits' or 'sparsity' family (kind: family). Got other parameters {stray} "
                f"({len(allocs)} allocation families)"
            )
        self._allocs = allocs
        self._spec_space = tuple(spec.space)

    @property
    def allocations(self) -> list[Allocation]:
        if self._allocs is None:
            raise RuntimeError(
                f"{self.name}: bind_spec(spec) must be called before evaluating: a parameter's modules come "
                "from the spec's bits/sparsity families"
            )
        return self._allocs

    @property
    def targets(self) -> list[str]:
        """Every module some allocation covers (the scope of ``avg_bits`` and ``sparsity``)."""
        return sorted({m for a in self.allocations for m in a.covers})

    def decode(self, candidate: Candidate) -> DecodedRecipe:
        """The candidate as the recipe it stands for (what the export re-creates)."""
        self.allocations  # noqa: B018 - raises when unbound
        return compression_recipe(self._spec_space, candidate.params)

    def recipe(self, candidate: Candidate) -> kernels.CompressionRecipe:
        from frontier import kernels

        return kernels.CompressionRecipe.from_dict(self.decode(candidate).to_dict())

    def latency_signature(self, candidate: Candidate) -> dict[str, Any]:
        blob = json.dumps(self.decode(candidate).to_dict(), sort_keys=True)
        return {"model": self.model_id(), "recipe": hashlib.sha256(blob.encode()).hexdigest()[:16]}

    # -- what subclasses provide -------------------------------------------------------------------------
    @abc.abstractmethod
    def load_base(self) -> nn.Module:
        """The uncompressed model, in eval mode."""

    @abc.abstractmethod
    def model_id(self) -> str:
        """Identifies the base model in latency-cache keys."""

    @abc.abstractmethod
    def calibration_batches(self) -> list[Any]:
        """Model inputs for Wanda calibration and sensitivity (disjoint from the evaluation data)."""

    @abc.abstractmethod
    def latency_input(self, context: EvalContext) -> dict[str, torch.Tensor]:
        """The batch-1 input whose forward pass is timed."""

    @abc.abstractmethod
    def quality(self, model: nn.Module) -> dict[str, float]:
        """Quality metrics of a compressed copy of the base model, on the evaluation data."""

    @abc.abstractmethod
    def distortion(self, model: nn.Module) -> float:
        """Quality loss on calibration data (0 for the base model); ranks targets by sensitivity."""

    def prepare(self) -> None:
        """Compute what every trial compares against (reference outputs), once, after the base loads."""

    # -- evaluation ---------------------------------------------------------------------------------------
    def setup(self) -> None:
        """Load the base model (:meth:`load`) and prepare the numba kernels of the space's bit-widths
        (:func:`kernels._cpu_kernels.warm_up`), once per worker and before its first trial, so neither
        counts in a trial's time. A study's worker holds the node's measurement lane shared meanwhile, so
        loading never runs while another worker times a candidate."""
        import torch

        self.load()
        widths = sorted({int(c) for a in self.allocations if a.family == "bits" for c in a.choices})
        if widths:
            from frontier.kernels._cpu_kernels import warm_up

            warm_up(widths, threads=torch.get_num_threads())

    def load(self) -> None:
        """Load the base model, check the targets against it, and :meth:`prepare` (once per worker)."""
        import torch

        if self._loaded:
            return
        self.base = self.load_base().eval()
        modules = dict(self.base.named_modules())
        bad = [m for m in self.targets if not isinstance(modules.get(m), torch.nn.Linear)]
        if bad:
            linear = [n for n, m in modules.items() if isinstance(m, torch.nn.Linear)]
            raise ValueError(
                f"{self.name}: the space targets modules that are not Linear layers of the model "
                f"({self.model_id()}): {bad[:5]}{'...' if len(bad) > 5 else ''}. Its Linear layers: "
                f"{linear[:6]}... ({len(linear)}); fix the family's 'modules'/'num_layers'/'layout'"
            )
        self._calibration: dict[str, torch.Tensor] | None = None
        self.prepare()
        self._loaded = True

    def calibration(self) -> dict[str, torch.Tensor]:
        """Per-Linear input norms of the base model on the calibration batches (computed once)."""
        from frontier import kernels

        if self._calibration is None:
            self._calibration = kernels.calibrate(self.base, self.calibration_batches(), self.targets)
        return self._calibration

    def compress(self, decoded: DecodedRecipe) -> nn.Module:
        """A compressed deep copy of the base model (the base stays untouched)."""
        from frontier import kernels

        model = copy.deepcopy(self.base)
        if not decoded:
            return model
        recipe = kernels.CompressionRecipe.from_dict(decoded.to_dict())
        calib = self.calibration() if kernels.needs_calibration(recipe) else None
        return kernels.apply_(model, recipe, calibration=calib).eval()

    def compression_metrics(self, model: nn.Module) -> dict[str, float]:
        from frontier import kernels

        sizes = kernels.size_breakdown(model)
        targets = self.targets
        original = kernels.weight_counts(self.base, targets)  # structurally removed weights count too
        return {
            "avg_bits": kernels.avg_bits(model, targets),
            "sparsity": kernels.masked_fraction(model, targets, original=original),
            "size_mb": kernels.model_size_bytes(model) / 1e6,
            "target_size_mb": sum(sizes[t].total_bytes for t in targets if t in sizes) / 1e6,
        }

    def evaluate(self, candidate: Candidate, context: EvalContext) -> dict[str, float]:
        import torch

        from frontier.evaluators.latency import fixed_threads

        decoded = self.decode(candidate)
        metrics: dict[str, float] = {}
        with fixed_threads(context.threads), torch.inference_mode():
            with context.training():  # loading and compressing is work, not a measurement
                self.load()
                model = self.compress(decoded)
            if not context.skip_latency:
                # Timed before the quality pass: right after a process first ran the large-batch
                # dequantize-matmul path, the next batch-1 measurement on the packed kernels was ~25x slower
                # (448 ms vs 17 ms on MiniLM), which made every worker's first trial look slow.
                batch = self.latency_input(context)
                stats = context.measure_latency(
                    lambda: model(**batch),
                    signature={"evaluator": self.name, **self.latency_signature(candidate)},
                    input_shape=tuple(next(iter(batch.values())).shape),
                    time_cap_s=self.options.latency_time_cap_s,
                )
                metrics.update(stats.metrics())
            with context.training():
                metrics.update(self.quality(model))
                metrics.update(self.compression_metrics(model))
        return metrics

    # -- baselines and warm start -------------------------------------------------------------------------
    def initial_candidates(self, spec: StudySpec) -> list[InitialCandidate]:
        """Uniform baselines (8/4/3 bits; sparsity 0.25/0.5/0.75, where they are choices), then a few
        greedy-by-sensitivity candidates that meet the spec's ``avg_bits``/``sparsity`` budgets.

        Sensitivity (as in HAWQ's per-layer ordering, with the measured output error instead of a Hessian
        proxy): for each group and each choice, :meth:`distortion` with only that group compressed. The
        greedy walk starts from the mildest setting and repeatedly takes the step with the least added
        distortion per bit (or per pruned weight) saved until every budget holds.
        """
        if self.options.warm_start == "off":
            return []
        bits = [a for a in self.allocations if a.family == "bits"]
        sparse = [a for a in self.allocations if a.family == "sparsity"]
        mild = {g: _mildest(a) for a in self.allocations for g in a.groups}
        out: list[InitialCandidate] = []
        for b in UNIFORM_BITS:
            if bits and all(b in a.choices for a in bits):
                params = {**mild, **{g: b for a in bits for g in a.groups}}
                out.append(InitialCandidate(params, f"uniform-{b}bit", baseline=True))
        for r in UNIFORM_SPARSITY:
            if sparse and all(r in a.choices for a in sparse):
                params = {**mild, **{g: r for a in sparse for g in a.groups}}
                out.append(InitialCandidate(params, f"uniform-sparsity-{r:g}", baseline=True))
        if self.options.warm_start == "sensitivity":
            for label, params in self.greedy_candidates(spec):
                out.append(InitialCandidate(params, label))
        return unique_candidates(out)

    def sensitivities(self) -> dict[str, dict[Any, float]]:
        """``{group: {choice: distortion with only that group at that choice}}`` (mildest choice: 0)."""
        import torch

        self.load()
        out: dict[str, dict[Any, float]] = {}
        with torch.inference_mode():
            for alloc in self.allocations:
                mild = _mildest(alloc)
                for group in alloc.groups:
                    out[group] = {mild: 0.0}
                    for choice in alloc.choices:
                        if choice == mild:
                            continue
                        if alloc.family == "sparsity" and choice == 0:
                            continue
                        # only this group's parameter: every other group stays float
                        alone = compression_recipe(self._spec_space, {group: choice})
                        out[group][choice] = float(self.distortion(self.compress(alone)))
        return out

    def greedy_candidates(self, spec: StudySpec, levels: int = 3) -> list[tuple[str, dict[str, Any]]]:
        """Allocations chosen by measured sensitivity, labelled.

        ``sensitivity-greedy-K``: up to ``levels`` allocations meeting ever tighter budgets, greedily.
        ``sensitivity-swap-uniform-Bbit``: the uniform ``B``-bit baseline improved by swaps that raise one
        group's bits and lower another's without adding weight bits (every code is stored in exactly its
        ``bits``, so these are the trades that keep the baseline's size) or breaking the ``avg_bits``
        budget, as long as the summed sensitivities predict a lower error.
        ``sensitivity-prune-swap-uniform-Bbit`` and ``sensitivity-prune-most-uniform-Bbit`` (spaces with a
        ``channels`` family): the uniform ``B``-bit baseline with FFN channels removed and the freed weight
        bits spent on the same kind of trades: no more weight bits than the baseline, smaller matrices (so
        less time), and a lower predicted error than the baseline's; ``prune-swap`` is the lowest predicted
        error found, ``prune-most`` the most channels removed while the prediction still beats the
        baseline (see :meth:`_prune_swaps`). Predictions sum the measured per-group sensitivities.
        """
        if not self.allocations:
            return []
        self.load()
        sens = self.sensitivities()
        numel = {n: _numel(m) for n, m in self.base.named_modules() if n in set(self.targets)}
        total = sum(numel.values())
        bits_budget = _budget(spec, "avg_bits", "<=")
        sparse_budget = _budget(spec, "sparsity", ">=")
        has_bits = any(a.family == "bits" for a in self.allocations)
        has_sparse = any(a.family == "sparsity" for a in self.allocations)
        bits_levels: list[float | None] = [None] * levels
        sparse_levels: list[float | None] = [None] * levels
        if has_bits:
            lo = min(min(a.choices) for a in self.allocations if a.family == "bits")
            start = bits_budget if bits_budget is not None else 5.0
            bits_levels = [max(lo, start - 0.5 * k) for k in range(levels)]
        if has_sparse:
            hi = max(max(a.choices) for a in self.allocations if a.family == "sparsity")
            start = sparse_budget if sparse_budget is not None else 0.3
            sparse_levels = [min(hi, start + 0.1 * k) for k in range(levels)]
        probe = _Probe(sens, numel, total, bits_budget)
        out: list[tuple[str, dict[str, Any]]] = []
        for b, s in zip(bits_levels, sparse_levels, strict=True):
            params = self._greedy(sens, numel, total, b, s)
            if params is not None and params not in [p for _, p in out]:
                out.append((f"sensitivity-greedy-{len(out) + 1}", params))
        bits_allocs = [a for a in self.allocations if a.family == "bits"]
        for b in UNIFORM_BITS:
            if bits_allocs and all(b in a.choices for a in bits_allocs):
                uniform = {g: _mildest(a) for a in self.allocations for g in a.groups}
                uniform.update({g: b for a in bits_allocs for g in a.groups})
                swapped = self._swap(probe, uniform)
                if swapped is not None and swapped not in [p for _, p in out]:
                    out.append((f"sensitivity-swap-uniform-{b}bit", swapped))
                walk = self._prune_swaps(probe, uniform)
                for label, pruned in zip(("prune-swap", "prune-most"), walk, strict=False):
                    if pruned not in [p for _, p in out]:
                        out.append((f"sensitivity-{label}-uniform-{b}bit", pruned))
        return out

    def _swap(self, probe: _Probe, start: Mapping[str, Any]) -> dict[str, Any] | None:
        traded = self._trade(probe, start, {})
        return traded[0] if traded is not None and traded[1] > 1e-9 else None

    def _prune_swaps(self, probe: _Probe, start: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Walk from ``start`` removing FFN channels one ratio step at a time (the step whose freed bits,
        spent by :meth:`_trade`, leave the best predicted net gain over ``start``) while the net gain stays
        positive; the path's best point and its last (most pruned, so fastest) point, when they differ."""
        sens = probe.sens
        channel = [(a, g) for a in self.allocations if a.kind == "channels" for g in a.groups]
        ratios: dict[str, Any] = {g: start[g] for _, g in channel}
        path: list[tuple[float, dict[str, Any]]] = []
        while True:
            best: tuple[float, dict[str, Any], dict[str, Any]] | None = None
            for a, group in channel:
                nxt = next((c for c in a.choices if c > ratios[group] and c in sens[group]), None)
                if nxt is None:
                    continue
                trial = {**ratios, group: nxt}
                pruned = {m: float(r) for b, g in channel if (r := trial[g]) for m in b.cuts[g]}
                traded = self._trade(probe, {**start, **trial}, pruned)
                if traded is None:
                    continue
                net = traded[1] - sum(sens[g][r] for g, r in trial.items() if r)
                if best is None or net > best[0]:
                    best = (net, trial, traded[0])
            if best is None or best[0] <= 1e-9:
                break
            ratios = best[1]
            path.append((best[0], best[2]))
        if not path:
            return []
        top, last = max(path, key=lambda p: p[0])[1], path[-1][1]
        return [top] if top == last else [top, last]

    def _trade(
        self, probe: _Probe, start: Mapping[str, Any], pruned: Mapping[str, float]
    ) -> tuple[dict[str, Any], float] | None:
        """Greedy bit trades from ``start`` (the best predicted gain first) that never store more weight
        bits than ``start`` does before ``pruned`` (``{module: ratio of its weights removed}``) takes its
        share away; ``(allocation, summed predicted gain)``, or ``None`` if ``start`` breaks the budget."""
        sens, numel, bits_target = probe.sens, probe.numel, probe.bits_target
        bits = [a for a in self.allocations if a.family == "bits"]
        kept = {m: n * (1.0 - pruned.get(m, 0.0)) for m, n in numel.items()}
        full = {g: sum(numel[m] for m in modules) for a in bits for g, modules in a.groups.items()}
        size = {g: sum(kept[m] for m in modules) for a in bits for g, modules in a.groups.items()}
        choices = {g: a.choices for a in bits for g in a.groups}
        state = dict(start)
        limit = sum(full[g] * state[g] for g in size)  # the unpruned start's weight bits
        covered = {m for a in bits for m in a.modules}
        float_bits = sum(n for m, n in kept.items() if m not in covered) * FLOAT_BITS
        remaining = probe.total - sum(numel[m] - kept[m] for m in numel)

        def within(spent: float) -> bool:
            over_budget = bits_target is not None and (spent + float_bits) / remaining > bits_target + 1e-9
            return spent <= limit + 1e-6 and not over_budget

        spent = sum(size[g] * state[g] for g in size)
        if not within(spent):
            return None  # the start itself breaks the budget
        gained = 0.0
        while True:
            best: tuple[float, float, str, Any, str | None, Any] | None = None
            for g in size:
                for up in (c for c in choices[g] if c > state[g] and c in sens[g]):
                    cost = size[g] * (up - state[g])
                    up_gain = sens[g][state[g]] - sens[g][up]
                    # raise g alone (paid by bits already freed), or paid by lowering another group h
                    moves: list[tuple[str | None, Any, float, float]] = [(None, None, up_gain, cost)]
                    for h in size:
                        if h == g:
                            continue
                        for down in (c for c in choices[h] if c < state[h] and c in sens[h]):
                            loss = sens[h][down] - sens[h][state[h]]
                            moves.append((h, down, up_gain - loss, cost - size[h] * (state[h] - down)))
                    for payer, lowered, gain, delta in moves:
                        if gain > 1e-9 and within(spent + delta) and (best is None or gain > best[0]):
                            best = (gain, delta, g, up, payer, lowered)
            if best is None:
                return state, gained
            gain, delta, raised, up, payer, lowered = best
            state[raised] = up
            if payer is not None:
                state[payer] = lowered
            spent += delta
            gained += gain

    def _greedy(
        self,
        sens: Mapping[str, Mapping[Any, float]],
        numel: Mapping[str, int],
        total: int,
        bits_target: float | None,
        sparse_target: float | None,
    ) -> dict[str, Any] | None:
        state: dict[str, Any] = {}
        alloc_of: dict[str, Allocation] = {}
        size: dict[str, int] = {}
        for a in self.allocations:
            for g, cut in a.cuts.items():
                state[g] = _mildest(a)
                alloc_of[g] = a
                size[g] = sum(numel[m] for m in cut)  # ``channels`` cuts the down-projection too
        covered_bits = {m for a in self.allocations if a.family == "bits" for m in a.modules}
        float_bits = sum(numel[m] for m in numel if m not in covered_bits) * FLOAT_BITS

        def avg_bits() -> float:
            q = sum(size[g] * state[g] for g in state if alloc_of[g].family == "bits")
            return (q + float_bits) / total

        def sparsity() -> float:
            return sum(size[g] * float(state[g]) for g in state if alloc_of[g].family == "sparsity") / total

        for _ in itertools.count():
            need_bits = bits_target is not None and avg_bits() > bits_target + 1e-9
            need_sparse = sparse_target is not None and sparsity() < sparse_target - 1e-9
            if not (need_bits or need_sparse):
                return dict(state)
            best: tuple[float, str, Any] | None = None
            for g, value in state.items():
                a = alloc_of[g]
                if (a.family == "bits" and not need_bits) or (a.family == "sparsity" and not need_sparse):
                    continue
                order = sorted(a.choices, reverse=a.family == "bits")  # mild -> harsh
                i = order.index(value)
                if i + 1 >= len(order):
                    continue
                nxt = order[i + 1]
                if nxt not in sens[g]:
                    continue
                gain = size[g] * abs(float(value) - float(nxt)) / total
                score = (sens[g][nxt] - sens[g].get(value, 0.0)) / max(gain, 1e-12)
                if best is None or score < best[0]:
                    best = (score, g, nxt)
            if best is None:
                return None  # the budget cannot be met within the choices
            state[best[1]] = best[2]
        return None


@dataclass(frozen=True)
class _Probe:
    """What the warm-start walks share: measured sensitivities (``{group: {choice: distortion}}``), the
    targeted modules' weight counts and their total, and the ``avg_bits`` budget (``None``: none)."""

    sens: Mapping[str, Mapping[Any, float]]
    numel: Mapping[str, int]
    total: int
    bits_target: float | None


def unique_candidates(candidates: list[InitialCandidate]) -> list[InitialCandidate]:
    """``candidates`` without repeats of the same parameters, the first (and its label) kept."""
    unique: list[InitialCandidate] = []
    seen: list[dict[str, Any]] = []
    for c in candidates:
        if dict(c.params) not in seen:
            seen.append(dict(c.params))
            unique.append(c)
    return unique


def _mildest(alloc: Allocation) -> Any:
    return max(alloc.choices) if alloc.family == "bits" else min(alloc.choices)


def _budget(spec: StudySpec, metric: str, op: str) -> float | None:
    values = [c.value for c in spec.constraints if c.metric == metric and c.op == op]
    if not values:
        return None
    return min(values) if op == "<=" else max(values)


def _numel(module: Any) -> int:
    if hasattr(module, "in_features") and hasattr(module, "out_features"):
        return int(module.in_features) * int(module.out_features)
    return 0
