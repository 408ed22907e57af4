"""``family: experts``: how many routed experts each MoE layer of a pretrained MoE causal LM keeps (and,
optionally, its top-k), decoded into an :class:`ExpertPlan`.

Example::

    {kind: family, name: experts, family: experts,
     options: {num_experts: 8, num_layers: 4, choices: [2, 4, 6, 8], group_by: layer}}

The family describes the model (``spaces`` never imports torch, so it cannot look at it); the evaluator
(``hf-moe-perplexity``) checks the description against the loaded model and fails with the real layout
when they differ. *Which* experts a layer keeps is not a search parameter: the evaluator keeps the
highest-scoring ones by router statistics on calibration data (frequency x mean gate weight, SEER-MoE,
arXiv:2404.05089; see :mod:`frontier.kernels.moe`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from frontier.spaces._families import SpaceFamily, register_family
from frontier.spaces._family_compress import _choices
from frontier.spaces._family_compress import _fail as _family_fail
from frontier.spaces._params import FamilyParam

FAMILY = "experts"
MAX_EXPERTS = 4096
MAX_LAYERS = 1024
DEFAULT_FRACTIONS = (0.25, 0.5, 0.75, 1.0)
GROUP_BY = ("layer", "none", "all")


def _fail(option: str, rule: str, value: Any) -> ValueError:
    return _family_fail(FAMILY, option, rule, value)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int_list(option: str, value: Any, *, low: int, high: int) -> list[int]:
    return _choices(FAMILY, value, ints=True, low=low, high=high, option=option)


@dataclass(frozen=True)
class ExpertPlan:
    """Routed experts kept per MoE layer (and top-k per layer), as a candidate of ``family: experts`` says.

    Attributes:
        num_experts: the unpruned model's routed experts per MoE layer.
        experts_per_layer: MoE layer index -> experts kept.
        top_k_per_layer: MoE layer index -> experts per token after pruning; ``None``: the model's top-k,
            clamped to the kept count (the evaluator resolves it).
    """

    num_experts: int
    experts_per_layer: Mapping[int, int]
    top_k_per_layer: Mapping[int, int] | None = None

    @property
    def uniform(self) -> bool:
        """Every layer keeps the same count (and the same top-k): a stock ``transformers`` checkpoint."""
        ks = set((self.top_k_per_layer or {}).values())
        return len(set(self.experts_per_layer.values())) <= 1 and len(ks) <= 1

    @property
    def expert_fraction(self) -> float:
        """Kept routed experts over the unpruned model's, summed over the MoE layers."""
        return sum(self.experts_per_layer.values()) / (self.num_experts * len(self.experts_per_layer))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: layer keys become strings."""
        ks = self.top_k_per_layer
        return {
            "num_experts": self.num_experts,
            "experts_per_layer": {str(i): n for i, n in sorted(self.experts_per_layer.items())},
            "top_k_per_layer": None if ks is None else {str(i): k for i, k in sorted(ks.items())},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExpertPlan:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: a key is missing or unknown.
        """
        keys = {"num_experts", "experts_per_layer", "top_k_per_layer"}
        if set(data) - keys or "num_experts" not in data or "experts_per_layer" not in data:
            raise ValueError(
                f"An ExpertPlan dict has keys 'num_experts', 'experts_per_layer' and optionally "
                f"'top_k_per_layer'. Got keys {sorted(data)} instead."
            )
        ks = data.get("top_k_per_layer")
        return cls(
            num_experts=int(data["num_experts"]),
            experts_per_layer={int(i): int(n) for i, n in data["experts_per_layer"].items()},
            top_k_per_layer=None if ks is None else {int(i): int(k) for i, k in ks.items()},
        )


@register_family(FAMILY)
class ExpertsFamily(SpaceFamily):
    """Routed experts kept per MoE layer of a pretrained MoE causal LM, optionally with its top-k.

    Options:

    - ``num_experts`` (required): the model's routed experts per MoE layer (an int >= 2);
    - the MoE layers: ``moe_layers`` (their indices) *or* ``num_layers`` (every layer 0..n-1 is MoE);
    - the kept counts: ``choices`` (ints in [1, num_experts]) *or* ``fraction`` (kept shares in (0, 1],
      each becoming ``max(1, round(f * num_experts))`` experts; repeats merge), not both. Default:
      ``fraction: [0.25, 0.5, 0.75, 1.0]`` (a quarter of the experts up to all of them);
    - ``top_k`` (optional): top-k choices, each at most the smallest kept count, so every combination is a
      legal model. Absent: the model's own top-k, clamped to the kept count (the evaluator reads it from
      the model). One value fixes it without a parameter;
    - ``group_by``: ``layer`` (default) and ``none``: one parameter per MoE layer, ``PREFIX.layer_I`` (and
      ``PREFIX.layer_I.top_k``); ``all``: one for every layer, ``PREFIX.all`` (and ``PREFIX.all.top_k``),
      a uniform allocation, which exports as a stock checkpoint.

    Parameters are ordinal over the kept counts. **Budgets** are not options: the evaluator reports
    ``expert_fraction`` (kept experts over the original, all MoE layers), ``total_params`` and
    ``active_params``, and a spec bounds them with ordinary constraints (``{metric: expert_fraction, op:
    "<=", value: 0.75}``), as ``bits`` does with ``avg_bits``.
    """

    num_experts: int
    moe_layers: tuple[int, ...] | None = None
    num_layers: int | None = None
    choices: tuple[int, ...] | None = None
    fraction: tuple[float, ...] | None = None
    top_k: tuple[int, ...] | None = None
    group_by: Literal["layer", "none", "all"] = "layer"

    @classmethod
    def normalize(cls, options: dict[str, Any]) -> dict[str, Any]:
        out = dict(options)
        if "num_experts" not in options:
            raise ValueError(
                f"Family '{FAMILY}' needs 'num_experts': the model's routed experts per MoE layer "
                "(config num_experts, or num_local_experts for Mixtral). Got none."
            )
        e = options["num_experts"]
        if not _is_int(e) or not 2 <= e <= MAX_EXPERTS:
            raise _fail("num_experts", f"must be an int in [2, {MAX_EXPERTS}]", e)
        if ("moe_layers" in options) == ("num_layers" in options):
            raise ValueError(
                f"Family '{FAMILY}' needs the MoE layers: give either 'moe_layers' (their indices) or "
                f"'num_layers' (every layer is MoE), not both and not neither. Got options {sorted(options)} "
                "instead."
            )
        if "num_layers" in options:
            n = options["num_layers"]
            if not _is_int(n) or not 1 <= n <= MAX_LAYERS:
                raise _fail("num_layers", f"must be an int in [1, {MAX_LAYERS}]", n)
        else:
            out["moe_layers"] = _int_list("moe_layers", options["moe_layers"], low=0, high=MAX_LAYERS - 1)
        if "choices" in options and "fraction" in options:
            raise ValueError(
                f"Family '{FAMILY}' takes the kept counts as 'choices' (expert counts) or 'fraction' (kept "
                f"shares), not both. Got choices={options['choices']!r} and fraction={options['fraction']!r}."
            )
        if "choices" in options:
            out["choices"] = _int_list("choices", options["choices"], low=1, high=e)
        else:
            fractions = options.get("fraction", list(DEFAULT_FRACTIONS))
            rule = "must be a non-empty list of distinct numbers in (0, 1]"
            if isinstance(fractions, str) or not isinstance(fractions, Sequence) or not fractions:
                raise _fail("fraction", rule, fractions)
            if any(
                isinstance(f, bool) or not isinstance(f, int | float) or not 0 < f <= 1 for f in fractions
            ):
                raise _fail("fraction", rule, fractions)
            if len(set(fractions)) != len(fractions):
                raise _fail("fraction", rule, fractions)
            out["fraction"] = sorted(float(f) for f in fractions)
        counts = _counts(e, out.get("choices"), out.get("fraction"))
        if "top_k" in options:
            out["top_k"] = _int_list("top_k", options["top_k"], low=1, high=e)
            if max(out["top_k"]) > min(counts):
                raise _fail(
                    "top_k",
                    f"must hold values <= the smallest kept count ({min(counts)}), so that every combination "
                    "is a legal model; lower top_k or raise the smallest choice",
                    options["top_k"],
                )
        group_by = options.get("group_by", "layer")
        if group_by in ("block", "module_type"):
            raise _fail(
                "group_by",
                "must be 'layer', 'none' or 'all' (an MoE layer's experts form one group; 'block' and "
                "'module_type' apply to the Linear modules of 'bits'/'sparsity')",
                group_by,
            )
        if group_by not in GROUP_BY:
            raise _fail("group_by", f"must be one of {list(GROUP_BY)}", group_by)
        return out

    @property
    def layers(self) -> list[int]:
        """The MoE layer indices the description names."""
        if self.moe_layers is not None:
            return list(self.moe_layers)
        return list(range(self.num_layers or 0))

    @property
    def counts(self) -> list[int]:
        """The kept-expert counts a layer may take, ascending."""
        return _counts(self.num_experts, self.choices, self.fraction)

    def groups(self, prefix: str) -> dict[str, list[int]]:
        """Parameter name -> the MoE layers it sets."""
        if self.group_by == "all":
            return {f"{prefix}.all": self.layers}
        return {f"{prefix}.layer_{i}": [i] for i in self.layers}

    def expand(self, prefix: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for group in self.groups(prefix):
            out.append({"name": group, "kind": "ordinal", "choices": self.counts})
            if self.top_k is not None and len(self.top_k) > 1:
                out.append({"name": f"{group}.top_k", "kind": "ordinal", "choices": list(self.top_k)})
        return out

    def decode(self, prefix: str, params: Mapping[str, Any]) -> ExpertPlan:
        """The plan a candidate stands for; a missing parameter keeps all of its layers' experts.

        Raises:
            ValueError: a value is not one of the family's choices.
        """
        kept: dict[int, int] = {}
        ks: dict[int, int] | None = None if self.top_k is None else {}
        for group, layers in self.groups(prefix).items():
            n = params.get(group, self.num_experts)
            if n != self.num_experts and n not in self.counts:
                raise ValueError(f"parameter '{group}' must be one of {self.counts}, but got {n!r}")
            k: Any = None
            if self.top_k is not None:
                k = params.get(f"{group}.top_k", self.top_k[-1]) if len(self.top_k) > 1 else self.top_k[0]
                if k not in self.top_k:
                    raise ValueError(
                        f"parameter '{group}.top_k' must be one of {list(self.top_k)}, but got {k!r}"
                    )
            for i in layers:
                kept[i] = int(n)
                if ks is not None:
                    ks[i] = int(k)
        return ExpertPlan(self.num_experts, kept, ks)


def _counts(num_experts: int, choices: Sequence[int] | None, fraction: Sequence[float] | None) -> list[int]:
    if choices is not None:
        return sorted(choices)
    fractions = fraction if fraction is not None else DEFAULT_FRACTIONS
    return sorted({max(1, round(f * num_experts)) for f in fractions})


def experts_items(space: Iterable[Any]) -> list[tuple[str, ExpertsFamily]]:
    """``(name, compiled options)`` of the space's ``experts`` family items (a :class:`StudySpec` or its
    ``space``)."""
    out = []
    for item in getattr(space, "space", space):
        if isinstance(item, FamilyParam) and item.family == FAMILY:
            compiled = item.compile()
            assert isinstance(compiled, ExpertsFamily)  # registered as FAMILY
            out.append((item.name, compiled))
    return out


def expert_plan(space: Iterable[Any], params: Mapping[str, Any]) -> ExpertPlan | None:
    """Decode a candidate's ``experts`` parameters into the :class:`ExpertPlan` they stand for (no torch).

    Args:
        space: a :class:`~spaces.StudySpec` or its ``space`` items.
        params: the candidate's parameter values (``Candidate.params``).

    Returns:
        The plan, or ``None`` when the space has no ``experts`` family.

    Raises:
        ValueError: the space has more than one ``experts`` family, or a value is not a choice.
    """
    items = experts_items(space)
    if not items:
        return None
    if len(items) > 1:
        raise ValueError(
            f"A space may hold one 'experts' family (one per model). Got {len(items)}: "
            f"{[name for name, _ in items]}; merge them into one item."
        )
    name, compiled = items[0]
    return compiled.decode(name, params)
