"""``hf-moe-perplexity``: prune the routed experts of a local ``transformers`` MoE causal LM (Qwen2-MoE,
Qwen3-MoE, Mixtral) by a ``family: experts`` candidate, optionally compress its Linear modules with
``bits``/``sparsity`` families in the same study, and measure held-out perplexity, parameters, memory and
raw decode latency."""

from __future__ import annotations

import copy
import fcntl
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from frontier.evaluators._base import EvalContext, InitialCandidate
from frontier.evaluators._hf_causal_lm import HFCausalLMOptions, HFCausalLMPerplexity
from frontier.evaluators._hf_compress import _mildest, unique_candidates
from frontier.evaluators._registry import register_evaluator
from frontier.spaces import Candidate, ExpertPlan, StudySpec, expert_plan
from frontier.spaces._family_compress import check_allocations
from frontier.spaces._family_experts import ExpertsFamily, experts_items

if TYPE_CHECKING:
    from torch import nn

    from frontier.kernels.moe import RouterStats

MOE_METRICS = (
    "perplexity",
    "perplexity_ratio",
    "total_params",
    "active_params",
    "expert_fraction",
    "resident_mb",
    "peak_memory_mb",
    "size_mb",
)
LATENCY_METRICS = ("latency_ms", "latency_norm_ms", "latency_ci_ms", "latency_cv")
COMPRESSION_METRICS = ("avg_bits", "sparsity", "target_size_mb")


class HFMoEOptions(HFCausalLMOptions):
    """Options of ``hf-moe-perplexity`` (those of ``hf-causal-lm-perplexity`` plus the ones below).

    Attributes:
        model: a local ``transformers`` MoE causal LM directory (Qwen2-MoE, Qwen3-MoE or Mixtral layout).
        build_if_missing: ``tiny-moe``: when ``model`` is not a directory yet, build Frontier's tiny
            pretrained Qwen2-MoE there (:func:`evaluators._tiny_moe.build_tiny_moe`: 4 layers x 8 experts,
            top-2, trained once on the training side of this evaluator's text split, ~2-3 min on one core;
            concurrent workers wait on a lock file instead of training twice). ``null`` (default): a missing
            model is an error.
        latency_context: tokens in the KV cache before the timed decode step (``latency_ms`` is one token
            at batch 1 after them). ``latency_seq_len`` does not apply here.
        warm_start: as for the compression evaluators; default ``baselines`` (the uniform expert counts);
            ``sensitivity`` adds the bits/sparsity greedy walk (with every expert kept).
    """

    build_if_missing: Literal["tiny-moe"] | None = None
    latency_context: int = Field(default=32, ge=1, le=65_536)
    warm_start: Literal["off", "baselines", "sensitivity"] = "baselines"


@register_evaluator("hf-moe-perplexity")
class HFMoEPerplexity(HFCausalLMPerplexity):
    """Prune a pretrained MoE causal LM's routed experts per layer (``family: experts``), optionally compress
    its Linear modules (``bits``/``sparsity`` families: attention, Qwen2-MoE's shared expert), and score it.

    Per worker, once: the base model, the held-out and calibration windows (the text and split of
    ``hf-causal-lm-perplexity``), and router statistics on the calibration windows. The model is checked
    against the ``experts`` family's description (expert count, MoE layers) and a mismatch fails naming
    the real layout. Which experts a layer keeps: the highest-scoring ones by routing frequency x mean gate
    weight on the calibration windows (SEER-MoE, arXiv:2404.05089; :class:`~kernels.moe.RouterStats`); the
    router's rows for the dropped experts go, so routing renormalises over the kept ones.

    Metrics:

    - ``perplexity``: exp of the mean token NLL on the held-out windows; ``perplexity_ratio``: to the
      unpruned, uncompressed model's;
    - ``total_params``, ``active_params``: counted from the built model's tensors (active: minus the experts
      a token does not use, (kept - top_k) per MoE layer; :func:`~kernels.moe.count_moe_params`);
    - ``expert_fraction``: kept routed experts over the original, all MoE layers (the plan's);
    - ``resident_mb``: bytes of the distinct storages behind the model's parameters and buffers / 1e6
      (:func:`~kernels.moe.resident_bytes`, measured from storages, so a slice that kept the dropped
      experts alive would show no drop); ``size_mb``: stored bytes with packed codes
      (:func:`kernels.model_size_bytes`);
    - ``peak_memory_mb``: peak resident-set growth of the process while the candidate is built and run
      (decode timing and the perplexity pass), MB; Linux ``/proc`` high-water mark, reset per trial
      (CPU only: the base model loads on the CPU);
    - ``latency_ms`` (+ ``latency_norm_ms``, ``latency_ci_ms``, ``latency_cv``): one decode step, one token
      at batch 1 after a KV cache of ``latency_context`` tokens, timed through ``context.measure_latency``
      (measurement lane, latency cache, reference normalisation);
    - with ``bits``/``sparsity`` families: ``avg_bits``, ``sparsity``, ``target_size_mb`` over their
      targets, as in ``hf-causal-lm-perplexity``.

    Budgets are constraints on these (``expert_fraction <= 0.75``, ``total_params <= B``). The bits/sparsity
    recipe is applied after pruning; Wanda calibration uses the unpruned model's input norms.
    """

    Options = HFMoEOptions
    options: HFMoEOptions
    _experts: tuple[str, ExpertsFamily] | None = None
    _stats: RouterStats

    @classmethod
    def tiny_spec(cls, workdir: Path) -> dict[str, Any]:
        model = save_tiny_moe(workdir / "tiny-qwen2-moe")
        fast = {"seq_len": 32, "eval_windows": 2, "calibration_windows": 2, "latency_time_cap_s": 0.05}
        return {
            "name": "tiny-moe-experts",
            "evaluator": {"kind": "hf-moe-perplexity", "options": {"model": str(model), **fast}},
            "space": [
                {
                    "kind": "family",
                    "name": "experts",
                    "family": "experts",
                    "options": {"num_experts": 4, "num_layers": 2, "choices": [2, 4]},
                },
                {
                    "kind": "family",
                    "name": "q",
                    "family": "bits",
                    "options": {
                        "num_layers": 2,
                        "layout": "qwen2_moe",
                        "targets": ["**"],
                        "group_by": "all",
                        "choices": [4, 8],
                    },
                },
            ],
            "objectives": [{"name": "perplexity", "direction": "minimize"}],
            "constraints": [{"metric": "expert_fraction", "op": "<=", "value": 0.75}],
        }

    # -- the spec ---------------------------------------------------------------------------------------
    def check_params(self, names: set[str]) -> None:
        if not names:
            raise ValueError(f"{self.name} needs an 'experts' family in the space; it has none")

    def bind_spec(self, spec: StudySpec) -> None:
        items = experts_items(spec)
        if len(items) != 1:
            raise ValueError(
                f"{self.name} needs exactly one 'experts' family (kind: family, family: experts) in the "
                f"space, optionally with bits/sparsity families. Got {len(items)}: {[n for n, _ in items]}"
            )
        allocs = check_allocations(spec)
        name, family = items[0]
        owned = {g for a in allocs for g in a.groups} | {p["name"] for p in family.expand(name)}
        stray = sorted(p.name for p in spec.params if p.name not in owned)
        if stray:
            raise ValueError(
                f"{self.name} searches expert counts and compression allocations only: every parameter must "
                f"come from the 'experts' family or a 'bits'/'sparsity' family. Got other parameters {stray}"
            )
        self._experts = items[0]
        self._allocs = allocs
        self._spec_space = tuple(spec.space)

    def metrics(self) -> tuple[str, ...]:
        compression = COMPRESSION_METRICS if self._allocs else ()
        return (*MOE_METRICS, *LATENCY_METRICS, *compression)

    def plan(self, candidate: Candidate) -> ExpertPlan | None:
        """The candidate's expert plan (kept experts and top-k per MoE layer); ``None`` without one."""
        self.allocations  # noqa: B018 - raises when unbound
        return expert_plan(self._spec_space, candidate.params)

    def kept_ids(self, plan: ExpertPlan) -> dict[int, list[int]]:
        """Which experts each MoE layer keeps under ``plan``: the highest-scoring ones by the router
        statistics on the calibration windows, ascending ids (loads the base model on first use)."""
        self.load()
        return self._stats.select(dict(plan.experts_per_layer))

    def pruned(self, plan: ExpertPlan | None) -> nn.Module:
        """A copy of the base with the experts ``plan`` drops removed (never copied) and its top-k; the
        whole base for ``None``. The base stays untouched."""
        from frontier.kernels.moe import pruned_copy

        self.load()
        if plan is None:
            return copy.deepcopy(self.base)
        ks = None if plan.top_k_per_layer is None else dict(plan.top_k_per_layer)
        return pruned_copy(self.base, self.kept_ids(plan), top_k=ks)[0]

    def build(self, candidate: Candidate) -> nn.Module:
        """Exactly the model a trial of ``candidate`` evaluates: :meth:`pruned` by its plan, then the
        bits/sparsity recipe applied; the base stays untouched."""
        from frontier import kernels

        model = self.pruned(self.plan(candidate))
        decoded = self.decode(candidate)
        if decoded:
            recipe = kernels.CompressionRecipe.from_dict(decoded.to_dict())
            calib = self.calibration() if kernels.needs_calibration(recipe) else None
            model = kernels.apply_(model, recipe, calibration=calib)
        return model.eval()

    def latency_signature(self, candidate: Candidate) -> dict[str, Any]:
        plan = self.plan(candidate)
        blob = json.dumps(
            {
                "recipe": self.decode(candidate).to_dict(),
                "experts": None if plan is None else plan.to_dict(),
                "context": self.options.latency_context,
            },
            sort_keys=True,
        )
        return {"model": self.model_id(), "candidate": hashlib.sha256(blob.encode()).hexdigest()[:16]}

    # -- loading ------------------------------------------------------------------------------------------
    def prepare_study(self, progress: Callable[[str], None]) -> None:
        """``build_if_missing``: build the model once on the driver, with progress lines, before the workers
        start (they would otherwise wait on the build in silence)."""
        self._build_if_missing(progress)

    def _build_if_missing(self, progress: Callable[[str], None] | None = None) -> None:
        path = Path(self.options.model)
        if self.options.build_if_missing is None or (path / "config.json").is_file():
            return
        from frontier.evaluators._tiny_moe import build_tiny_moe

        path.parent.mkdir(parents=True, exist_ok=True)
        # Workers of one study start together: one trains, the others wait, then all load it.
        with open(path.parent / f".{path.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                build_tiny_moe(path, progress=progress)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def load_base(self) -> nn.Module:
        self._build_if_missing()  # a worker of a study started without run_study (prepare_study)
        return super().load_base()

    def prepare(self) -> None:
        from frontier.kernels.moe import collect_router_stats, detect_moe_layout

        layout = detect_moe_layout(self.base)
        assert self._experts is not None  # load() runs after bind_spec (allocations checks it)
        name, family = self._experts
        if family.num_experts != layout.num_experts or sorted(family.layers) != list(layout.moe_layers):
            raise ValueError(
                f"{self.name}: the 'experts' family '{name}' describes num_experts={family.num_experts} and "
                f"MoE layers {family.layers}, but the model at {self.model_id()!r} ({layout.model_type}) has "
                f"num_experts={layout.num_experts}, top_k={layout.top_k} and MoE layers "
                f"{list(layout.moe_layers)}; set the family's 'num_experts' and 'moe_layers' (or "
                "'num_layers') to match"
            )
        super().prepare()
        if self._eval.numel() <= self.options.latency_context:
            raise ValueError(
                f"The 'latency_context' option of {self.name} must be below the held-out tokens "
                f"(eval_windows x seq_len = {self._eval.numel()}), which supply the decoded context. Got "
                f"{self.options.latency_context} instead; lower it or raise eval_windows."
            )
        self._stats = collect_router_stats(self.base, [row[None] for row in self._calib])

    # -- evaluation ---------------------------------------------------------------------------------------
    def decode_latency(
        self, model: nn.Module, context: EvalContext, signature: dict[str, Any]
    ) -> dict[str, float]:
        """The latency metrics of one decode step of ``model``: one token at batch 1 after a KV cache of
        ``latency_context`` held-out tokens, through ``context.measure_latency``."""
        from frontier.evaluators._lm_train import _Runner

        ids = self._eval.flatten()
        n = self.options.latency_context
        step = _Runner(model, hf=True).decode_step(ids[:n][None], ids[n : n + 1][None])
        stats = context.measure_latency(
            step, signature=signature, input_shape=(1, 1), time_cap_s=self.options.latency_time_cap_s
        )
        return stats.metrics()

    @staticmethod
    def size_metrics(model: nn.Module) -> dict[str, float]:
        """``total_params``, ``active_params``, ``resident_mb`` and ``size_mb``, counted from ``model``."""
        from frontier import kernels
        from frontier.kernels.moe import count_moe_params, resident_bytes

        counts = count_moe_params(model)
        return {
            "total_params": float(counts.total),
            "active_params": float(counts.active),
            "resident_mb": resident_bytes(model) / 1e6,
            "size_mb": kernels.model_size_bytes(model) / 1e6,
        }

    def evaluate(self, candidate: Candidate, context: EvalContext) -> dict[str, float]:
        import torch

        from frontier.evaluators._lm_train import _PeakRSS
        from frontier.evaluators.latency import fixed_threads

        metrics: dict[str, float] = {}
        with fixed_threads(context.threads), torch.inference_mode():
            with context.training():
                self.load()
                peak = _PeakRSS()
                model = self.build(candidate)
            if not context.skip_latency:
                signature = {"evaluator": self.name, **self.latency_signature(candidate)}
                metrics.update(self.decode_latency(model, context, signature))
            with context.training():
                metrics.update(self.quality(model))
                plan = self.plan(candidate)
                metrics.update(
                    self.size_metrics(model), expert_fraction=1.0 if plan is None else plan.expert_fraction
                )
                if self._allocs:
                    metrics.update(self.compression_metrics(model))
                metrics["peak_memory_mb"] = peak.growth_mb()
        return metrics

    # -- baselines ----------------------------------------------------------------------------------------
    def initial_candidates(self, spec: StudySpec) -> list[InitialCandidate]:
        """Uniform expert counts (every MoE layer keeps the same number, for each choice; every
        bits/sparsity group at its mildest setting) as baselines; then the compression evaluators' own
        warm start (uniform bit-widths/sparsities, and with ``warm_start: sensitivity`` the greedy walk)
        with every expert kept."""
        if self.options.warm_start == "off" or self._experts is None:
            return []
        name, family = self._experts
        mild = {g: _mildest(a) for a in self.allocations for g in a.groups}
        groups = family.groups(name)
        top_k = (
            {f"{g}.top_k": family.top_k[-1] for g in groups} if family.top_k and len(family.top_k) > 1 else {}
        )

        def experts(count: int) -> dict[str, Any]:
            return {**{g: count for g in groups}, **top_k}

        out = [
            InitialCandidate({**mild, **experts(c)}, f"uniform-experts-{c}", baseline=True)
            for c in family.counts
        ]
        if self.allocations:
            full = experts(family.counts[-1])
            for c in super().initial_candidates(spec):
                out.append(InitialCandidate({**c.params, **full}, c.label, baseline=c.baseline))
        return unique_candidates(out)


def save_tiny_moe(path: Path) -> Path:
    """A 2-layer, 4-expert, top-2 Qwen2-MoE with the character tokenizer and seeded random (untrained)
    weights, for ``tiny_spec`` and tests; seconds to build."""
    from frontier.evaluators._tiny import save_tiny_model

    return save_tiny_model(path, "qwen2_moe")
