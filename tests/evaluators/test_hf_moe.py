"""hf-moe-perplexity on a tiny untrained Qwen2-MoE (2 layers x 4 experts, top-2) saved to tmp_path: pruning
measured, build() against the router-masking reference, experts + bits in one study, description errors."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from frontier.evaluators import EvalContext, for_spec
from frontier.spaces import Candidate, SpecError, spec_from_dict

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

FAST = {"seq_len": 32, "eval_windows": 2, "calibration_windows": 2, "latency_time_cap_s": 0.05}
BITS = {
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
}


@pytest.fixture(scope="module")
def moe_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    from frontier.evaluators._hf_moe import save_tiny_moe

    return str(save_tiny_moe(tmp_path_factory.mktemp("tiny-qwen2-moe")))


def spec(model: str, *extra: dict[str, Any], experts: dict[str, Any] | None = None) -> Any:
    options = experts or {"num_experts": 4, "num_layers": 2, "choices": [1, 2, 4]}
    return spec_from_dict(
        {
            "name": "tiny-moe",
            "evaluator": {"kind": "hf-moe-perplexity", "options": {"model": model, **FAST}},
            "space": [{"kind": "family", "name": "ex", "family": "experts", "options": options}, *extra],
            "objectives": [{"name": "perplexity", "direction": "minimize"}],
            "constraints": [{"metric": "expert_fraction", "op": "<=", "value": 0.75}],
        }
    )


def test_experts_and_bits_in_one_study_measure_the_drop(moe_dir: str) -> None:
    study = spec(moe_dir, BITS)
    ev: Any = for_spec(study)
    ctx = EvalContext(seed=0, threads=1)
    full = ev.evaluate(Candidate({"ex.layer_0": 4, "ex.layer_1": 4, "q.all": 8}), ctx)
    pruned = ev.evaluate(Candidate({"ex.layer_0": 2, "ex.layer_1": 1, "q.all": 8}), ctx)
    assert set(ev.metrics()) <= set(full) and set(ev.metrics()) <= set(pruned)
    # one routed expert: gate_up [2 * 32, 32] + down [32, 32] floats, plus its router row of 32
    expert, row = 3 * 32 * 32, 32
    assert full["total_params"] - pruned["total_params"] == 5 * (expert + row)  # 2 + 3 experts dropped
    # active: top-k experts per token; layer 1 keeps one, so its top-k drops to one expert
    assert full["active_params"] - pruned["active_params"] == 5 * row + expert
    assert full["resident_mb"] - pruned["resident_mb"] == pytest.approx(5 * (expert + row) * 4 / 1e6)
    assert pruned["expert_fraction"] == 3 / 8 and full["expert_fraction"] == 1.0
    assert pruned["avg_bits"] == full["avg_bits"] == 8.0  # attention + shared expert at 8 bits
    assert full["perplexity_ratio"] == pytest.approx(1.0, abs=0.01)  # 8-bit attention, every expert
    assert pruned["latency_ms"] > 0 and pruned["peak_memory_mb"] >= 0
    # quantizing keeps the weights (packed codes count as parameters) and drops bytes
    four = ev.evaluate(Candidate({"ex.layer_0": 4, "ex.layer_1": 4, "q.all": 4}), ctx)
    dense = for_spec(spec(moe_dir)).evaluate(Candidate({"ex.layer_0": 4, "ex.layer_1": 4}), ctx)
    assert four["total_params"] == full["total_params"] == dense["total_params"]
    assert four["size_mb"] < full["size_mb"] < dense["size_mb"]
    labels = [c.label for c in ev.initial_candidates(study)]
    assert labels[:3] == ["uniform-experts-1", "uniform-experts-2", "uniform-experts-4"]
    assert labels[3:] == ["uniform-4bit"]  # uniform-8bit with every expert is uniform-experts-4: merged


def test_build_equals_router_masking_of_the_same_experts(moe_dir: str) -> None:
    from frontier.kernels.moe import masked_router_reference

    options = {"num_experts": 4, "num_layers": 2, "choices": [2, 3, 4], "top_k": [1, 2]}
    ev: Any = for_spec(spec(moe_dir, experts=options))
    candidate = Candidate({"ex.layer_0": 3, "ex.layer_0.top_k": 2, "ex.layer_1": 2, "ex.layer_1.top_k": 1})
    before = {k: v.clone() for k, v in ev.base.state_dict().items()}
    model = ev.build(candidate)
    plan = ev.plan(candidate)
    kept = ev.kept_ids(plan)
    assert [len(kept[0]), len(kept[1])] == [3, 2]
    ids = ev._eval[:2]
    with torch.inference_mode():
        got = model(input_ids=ids, use_cache=False).logits
        with masked_router_reference(ev.base, kept, top_k=dict(plan.top_k_per_layer)) as reference:
            want = reference(input_ids=ids, use_cache=False).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    after = ev.base.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the base is untouched


def test_a_description_that_does_not_match_the_model_names_the_real_layout(moe_dir: str) -> None:
    ev: Any = for_spec(spec(moe_dir, experts={"num_experts": 8, "num_layers": 2}), setup=False)
    with pytest.raises(
        ValueError,
        match=re.escape("has num_experts=4, top_k=2 and MoE layers [0, 1]; set the family's 'num_experts'"),
    ):
        ev.ensure_setup()
    study = spec(moe_dir).to_dict()
    study["evaluator"]["options"]["latency_context"] = 64  # 2 windows x 32 tokens held out
    with pytest.raises(
        ValueError, match=r"'latency_context' option of hf-moe-perplexity must be below .* = 64\)"
    ):
        for_spec(spec_from_dict(study))


def test_a_space_without_experts_or_with_other_parameters_is_refused(moe_dir: str, tmp_path: Path) -> None:
    base = spec(moe_dir).to_dict()
    no_experts = {**base, "space": [BITS], "constraints": []}
    with pytest.raises(
        SpecError, match=r"space: hf-moe-perplexity needs exactly one 'experts' family.*Got 0"
    ):
        for_spec(spec_from_dict(no_experts), setup=False)
    stray = {**base, "space": [*base["space"], {"kind": "ordinal", "name": "lr", "choices": [1, 2]}]}
    with pytest.raises(SpecError, match=re.escape("Got other parameters ['lr']")):
        for_spec(spec_from_dict(stray), setup=False)
    missing = {
        **base,
        "evaluator": {"kind": "hf-moe-perplexity", "options": {"model": str(tmp_path / "nope")}},
    }
    with pytest.raises(ValueError, match="must be a local transformers model directory"):
        for_spec(spec_from_dict(missing))


def test_a_missing_model_is_built_on_the_driver_with_progress_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """build_if_missing: run_study's driver step (_prepare -> Evaluator.prepare_study) builds the model once
    and says so, before any worker starts; a second study finds it and says nothing."""
    from frontier.evaluators import _tiny_moe
    from frontier.search._engine import _prepare

    monkeypatch.setitem(_tiny_moe.RECIPE, "steps", 2)  # the real recipe trains for minutes
    model = tmp_path / "runs" / "tiny-moe"
    study = spec(str(model), experts={"num_experts": 8, "num_layers": 4, "choices": [2, 8]})
    study = study.model_copy(
        update={
            "evaluator": study.evaluator.model_copy(
                update={"options": {**study.evaluator.options, "build_if_missing": "tiny-moe"}}
            )
        }
    )
    lines: list[str] = []
    _prepare(study, lines.append)
    assert lines[0] == f"training the tiny pretrained MoE at {model}: 2 steps, 1 thread(s), once"
    assert lines[-1].startswith(f"  saved {model}: trained in") and (model / "config.json").is_file()
    lines.clear()
    _prepare(study, lines.append)
    assert lines == []
