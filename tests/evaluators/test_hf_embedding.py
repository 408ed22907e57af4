"""hf-embedding-fidelity on a tiny BertModel saved to disk: metrics, recipes, warm start, errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from frontier.evaluators import EvalContext, make_evaluator
from frontier.evaluators._hf_compress import _Probe
from frontier.evaluators._hf_embedding import prose_sentences, split_sentences, topk_agreement
from frontier.evaluators._tiny import save_tiny_model
from frontier.spaces import (
    Candidate,
    DecodedRecipe,
    MagnitudeSparsity,
    NMSparsity,
    SpecError,
    StructuredPrune,
    WandaSparsity,
    WeightOnlyQuant,
    spec_from_dict,
)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

FAST = {"eval_sentences": 24, "calibration_sentences": 8, "max_length": 24, "latency_time_cap_s": 0.05}


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 2-layer BERT (hidden 32) with a character-level WordPiece vocabulary, saved like a hub model."""
    return str(save_tiny_model(tmp_path_factory.mktemp("tiny-bert"), "bert"))


def spec(model: str, space: list[dict[str, Any]], **extra: Any) -> Any:
    return spec_from_dict(
        {
            "name": "tiny-compress",
            "evaluator": {"kind": "hf-embedding-fidelity", "options": {"model": model, **FAST}},
            "space": space,
            "objectives": [
                {"name": "fidelity", "direction": "maximize"},
                {"name": "size_mb", "direction": "minimize"},
            ],
            **extra,
        }
    )


BITS = {
    "kind": "family",
    "name": "q",
    "family": "bits",
    "options": {"num_layers": 2, "targets": ["encoder.layer.*.**"], "group_by": "layer", "group_size": 16},
}
SPARSE = {
    "kind": "family",
    "name": "s",
    "family": "sparsity",
    "options": {"num_layers": 2, "targets": ["re:.*(intermediate|output)\\.dense"], "kind": "magnitude"},
}


@pytest.fixture(scope="module")
def evaluator(encoder_dir: str) -> Any:
    s = spec(encoder_dir, [BITS, SPARSE])
    ev = make_evaluator(s.evaluator.kind, s.evaluator.options)
    ev.check_params({p.name for p in s.params})
    ev.bind_spec(s)
    ev.load()
    return ev


def test_uncompressed_candidate_has_fidelity_one_and_two_bits_less(evaluator: Any) -> None:
    ctx = EvalContext(threads=1)
    base = evaluator.evaluate(Candidate({}), ctx)
    assert set(evaluator.metrics()) <= set(base)
    assert base["fidelity"] == pytest.approx(1.0, abs=1e-5)
    assert base["top10_agreement"] == pytest.approx(1.0)
    assert base["avg_bits"] == 32.0 and base["sparsity"] == 0.0 and base["latency_ms"] > 0
    eight = evaluator.evaluate(Candidate({"q.layer_0": 8, "q.layer_1": 8}), ctx)
    two = evaluator.evaluate(Candidate({"q.layer_0": 2, "q.layer_1": 2}), ctx)
    assert eight["avg_bits"] == 8.0 and two["avg_bits"] == 2.0
    assert 0.99 < eight["fidelity"] <= 1.0 + 1e-6
    assert two["fidelity"] < eight["fidelity"] and two["top10_agreement"] <= eight["top10_agreement"]
    assert two["size_mb"] < eight["size_mb"] < base["size_mb"]
    assert two["target_size_mb"] < eight["target_size_mb"] < base["target_size_mb"]


def test_sparsity_metric_is_the_masked_share_of_the_targets(evaluator: Any) -> None:
    m = evaluator.evaluate(
        Candidate({"q.layer_0": 8, "q.layer_1": 8, "s.layer_0": 0.5, "s.layer_1": 0.5}),
        EvalContext(threads=1),
    )
    # the regex also matches attention.output.dense: 32*32 + 2 * 32*64 of each layer's 4 * 32*32 + 2 * 32*64
    share = (32 * 32 + 2 * 32 * 64) / (4 * 32 * 32 + 2 * 32 * 64)
    assert m["sparsity"] == pytest.approx(0.5 * share, abs=1e-3)
    assert m["avg_bits"] == 8.0


def test_candidate_to_recipe(evaluator: Any) -> None:
    from frontier import kernels

    recipe = evaluator.recipe(Candidate({"q.layer_0": 4, "q.layer_1": 8, "s.layer_1": 0.25}))
    entries = dict(recipe.entries)
    assert entries["encoder.layer.0.attention.self.query"] == (
        kernels.WeightOnlyQuantConfig(4, group_size=16),
    )
    assert entries["encoder.layer.1.output.dense"] == (
        kernels.MagnitudeSparsityConfig(0.25),
        kernels.WeightOnlyQuantConfig(8, group_size=16),
    )
    assert len(entries) == 12
    assert kernels.CompressionRecipe.from_dict(recipe.to_dict()) == recipe
    # every torch-free config a candidate decodes to is its kernels config, field for field
    decoded = [
        WandaSparsity(0.5),
        NMSparsity(2, 4),
        MagnitudeSparsity(0.25),
        WeightOnlyQuant(3, symmetric=False),
    ]
    decoded.append(StructuredPrune(ffn_ratio=0.25, importance="activation", round_to=32))
    wanda = kernels.CompressionRecipe.from_dict(DecodedRecipe({"a": decoded[:1], "b": decoded[1:]}).to_dict())
    assert dict(wanda.entries) == {
        "a": (kernels.WandaSparsityConfig(0.5),),
        "b": (
            kernels.NMSparsityConfig(2, 4),
            kernels.MagnitudeSparsityConfig(0.25),
            kernels.WeightOnlyQuantConfig(3, symmetric=False),
            kernels.StructuredPruneConfig(0, ffn_ratio=0.25, importance="activation", round_to=32),
        ),
    }
    assert [c.to_dict() for c in wanda.entries["b"]] == [c.to_dict() for c in decoded[1:]]


def test_wanda_and_two_four_run_with_calibration(encoder_dir: str) -> None:
    space = [
        {**SPARSE, "options": {**SPARSE["options"], "kind": "wanda", "group_by": "all"}},
        {**SPARSE, "name": "nm", "options": {"num_layers": 2, "targets": ["re:.*query"], "kind": "2:4"}},
    ]
    s = spec(encoder_dir, space)
    ev = make_evaluator(s.evaluator.kind, {**s.evaluator.options, "warm_start": "off"})
    ev.bind_spec(s)
    ev.load()
    m = ev.evaluate(Candidate({"s.all": 0.5, "nm.layer_0": 0.5, "nm.layer_1": 0}), EvalContext(threads=1))
    assert 0 < m["sparsity"] < 0.5 and m["fidelity"] < 1.0 and m["avg_bits"] == 32.0
    assert ev.initial_candidates(s) == []


def test_baselines_and_greedy_warm_start_meet_the_budget(evaluator: Any, encoder_dir: str) -> None:
    s = spec(
        encoder_dir,
        [BITS, SPARSE],
        constraints=[{"metric": "avg_bits", "op": "<=", "value": 4.5}],
    )
    initial = evaluator.initial_candidates(s)
    labels = [c.label for c in initial]
    assert labels[:6] == [
        "uniform-8bit",
        "uniform-4bit",
        "uniform-3bit",
        "uniform-sparsity-0.25",
        "uniform-sparsity-0.5",
        "uniform-sparsity-0.75",
    ]
    assert all(c.baseline for c in initial[:6]) and not any(c.baseline for c in initial[6:])
    assert initial[1].params == {"q.layer_0": 4, "q.layer_1": 4, "s.layer_0": 0, "s.layer_1": 0}
    assert initial[3].params == {"q.layer_0": 8, "q.layer_1": 8, "s.layer_0": 0.25, "s.layer_1": 0.25}
    greedy = [c for c in initial if not c.baseline]
    assert greedy and all(c.label.startswith(("sensitivity-greedy-", "sensitivity-swap-")) for c in greedy)
    for c in greedy:  # both layers have equal size: avg_bits is the mean of the two choices
        assert (c.params["q.layer_0"] + c.params["q.layer_1"]) / 2 <= 4.5
    sens = evaluator.sensitivities()
    assert sens["q.layer_0"][8] == 0.0 and sens["q.layer_0"][2] > sens["q.layer_0"][4] >= 0


def test_sentences_are_disjoint_and_topk_agreement() -> None:
    sentences = prose_sentences()
    assert len(sentences) > 500 and len(set(sentences)) == len(sentences)
    ev, cal = split_sentences(sentences, n_eval=96, n_calib=32, salt="x")
    assert len(ev) == 96 and len(cal) == 32 and not set(ev) & set(cal)
    with pytest.raises(ValueError, match="eval_sentences \\+ calibration_sentences must be <="):
        split_sentences(sentences, n_eval=len(sentences), n_calib=1, salt="x")
    e = torch.nn.functional.normalize(torch.randn(20, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    assert topk_agreement(e, e, 10) == 1.0
    shuffled = e[torch.randperm(20, generator=torch.Generator().manual_seed(1))]
    assert topk_agreement(e, shuffled, 10) < 1.0


def test_spec_errors(encoder_dir: str) -> None:
    with pytest.raises(SpecError, match="every parameter must come from a 'bits' or 'sparsity' family"):
        from frontier.search import check_spec

        check_spec(spec(encoder_dir, [BITS, {"name": "lr", "kind": "float", "low": 0.1, "high": 1.0}]))
    s = spec(encoder_dir, [BITS])
    ev = make_evaluator(s.evaluator.kind, s.evaluator.options)
    with pytest.raises(RuntimeError, match="bind_spec\\(spec\\) must be called before evaluating"):
        ev.decode(Candidate({"q.layer_0": 4}))
    llama = {**BITS, "options": {**BITS["options"], "layout": "llama", "targets": ["**"]}}
    ev.bind_spec(spec(encoder_dir, [llama]))
    with pytest.raises(ValueError, match="targets modules that are not Linear layers of the model"):
        ev.load()
    with pytest.raises(ValueError, match="must be a local transformers model directory"):
        bad = make_evaluator(s.evaluator.kind, {"model": str(Path(encoder_dir) / "nope")})
        bad.bind_spec(s)
        bad.load()
    with pytest.raises(ValueError, match="needs a 'bits' and/or 'sparsity' family in the space; it has none"):
        ev.check_params(set())
    with pytest.raises(
        ValueError,
        match=r"The 'kind' option of family 'sparsity' must be one of \['magnitude', 'wanda', '2:4'",
    ):
        spec(encoder_dir, [{**SPARSE, "options": {**SPARSE["options"], "kind": "random"}}])
    with pytest.raises(SpecError, match=r"evaluator\.options\.warm_start"):
        make_evaluator(s.evaluator.kind, {"warm_start": "always"})


CHANNELS = {
    "kind": "family",
    "name": "p",
    "family": "sparsity",
    "options": {
        "num_layers": 2,
        "targets": ["encoder.layer.*.intermediate.dense"],
        "kind": "channels",
        "choices": [0, 0.25, 0.5],
    },
}


def test_channel_pruning_shrinks_the_ffn_and_counts_removed_weights(encoder_dir: str) -> None:
    from frontier import kernels

    s = spec(encoder_dir, [BITS, CHANNELS])
    ev = make_evaluator(s.evaluator.kind, {**s.evaluator.options, "warm_start": "off"})
    ev.bind_spec(s)
    ev.load()
    params = {"q.layer_0": 4, "q.layer_1": 8, "p.layer_0": 0.5, "p.layer_1": 0}
    entries = dict(ev.recipe(Candidate(params)).entries)
    # the kept width stays a whole number of the down-projection's 16-input quantization groups
    assert entries["encoder.layer.0"] == (
        kernels.StructuredPruneConfig(0, ffn_ratio=0.5, importance="activation", round_to=16),
    )
    model = ev.compress(ev.decode(Candidate(params)))
    layer0, layer1 = model.encoder.layer
    assert (layer0.intermediate.dense.out_features, layer0.output.dense.in_features) == (32, 32)
    assert layer1.intermediate.dense.out_features == 64
    m = ev.evaluate(Candidate(params), EvalContext(threads=1))
    # each layer: q, k, v, o 32x32 and up/down 32x64; layer 0 loses half of up and down (2 * 1024 weights)
    assert m["sparsity"] == pytest.approx(2048 / (2 * 8192))
    assert m["avg_bits"] == pytest.approx((6144 * 4 + 8192 * 8) / (6144 + 8192))  # over the weights left
    unpruned = ev.evaluate(Candidate({**params, "p.layer_0": 0}), EvalContext(threads=1))
    assert m["size_mb"] < unpruned["size_mb"] and m["fidelity"] < unpruned["fidelity"]
    sens = ev.sensitivities()
    assert sens["p.layer_0"][0] == 0.0 and sens["p.layer_0"][0.5] > sens["p.layer_0"][0.25] > 0


def test_prune_swaps_spend_freed_bits_where_sensitivity_is_highest(encoder_dir: str) -> None:
    s = spec(
        encoder_dir,
        [{**BITS, "options": {**BITS["options"], "group_by": "block", "choices": [3, 4, 5]}}, CHANNELS],
        constraints=[{"metric": "avg_bits", "op": "<=", "value": 4.5}],
    )
    ev = make_evaluator(s.evaluator.kind, s.evaluator.options)
    ev.bind_spec(s)
    ev.load()
    numel = {n: m.in_features * m.out_features for n, m in ev.base.named_modules() if n in set(ev.targets)}
    # layer 1's attention gains most from a 5th bit; layer 0's FFN channels are cheap to remove
    sens: dict[str, dict[Any, float]] = {}
    for i in (0, 1):
        sens[f"q.layer_{i}.attention"] = {5: 0.0, 4: 0.01 if i else 0.001, 3: 0.05}
        sens[f"q.layer_{i}.ffn"] = {5: 0.0, 4: 0.002, 3: 0.02}
        sens[f"p.layer_{i}"] = {0: 0.0, 0.25: 0.002 if i == 0 else 0.05, 0.5: 0.03 if i == 0 else 0.2}
    uniform = {**{g: 4 for g in sens if g.startswith("q.")}, "p.layer_0": 0, "p.layer_1": 0}
    walk = ev._prune_swaps(_Probe(sens, numel, sum(numel.values()), 4.5), uniform)
    # removing 25 % of layer 0's FFN (1024 of its 4096 weights, 4 bits each) pays for a 5th bit on layer
    # 1's attention (4096 weights): net predicted gain 0.01 - 0.002; never more weight bits than uniform 4
    assert walk and walk[0]["p.layer_0"] == 0.25 and walk[0]["p.layer_1"] == 0
    assert walk[0]["q.layer_1.attention"] == 5
    size = {"attention": 4096, "ffn": 4096}
    kept = {"q.layer_0.ffn": 0.75}
    stored = sum(
        size[g.rsplit(".", 1)[1]] * kept.get(g, 1.0) * walk[0][g] for g in uniform if g.startswith("q.")
    )
    assert stored <= 4 * 4 * 4096
    # nothing to gain: no prune step is taken
    flat = {g: {c: 0.0 for c in v} if g.startswith("q.") else v for g, v in sens.items()}
    assert ev._prune_swaps(_Probe(flat, numel, sum(numel.values()), 4.5), uniform) == []


def test_swap_trades_bits_between_groups_without_adding_stored_bytes(encoder_dir: str) -> None:
    targets = ["encoder.layer.0.attention.self.query", "encoder.layer.0.intermediate.dense"]
    bits = {**BITS, "options": {**BITS["options"], "targets": targets, "group_by": "none"}}
    s = spec(encoder_dir, [bits])
    ev = make_evaluator(s.evaluator.kind, s.evaluator.options)
    ev.bind_spec(s)
    gq, gi = (f"q.{t}" for t in targets)
    numel = {targets[0]: 32 * 32, targets[1]: 32 * 64}
    sens = {gq: {8: 0.0, 4: 0.5, 3: 0.6, 2: 0.9}, gi: {8: 0.0, 4: 0.01, 3: 0.015, 2: 0.02}}
    # query 4 -> 8 (+4 bits x 1024) paid by intermediate 4 -> 2 (-2 bits x 2048): same bytes, 4.0 bits
    assert ev._swap(_Probe(sens, numel, 3072, 4.5), {gq: 4, gi: 4}) == {gq: 8, gi: 2}
    assert ev._swap(_Probe(sens, numel, 3072, 3.9), {gq: 4, gi: 4}) is None  # the baseline breaks the budget
    flat = {gq: {8: 0.0, 4: 0.01, 2: 0.02}, gi: {8: 0.0, 4: 0.01, 2: 0.5}}
    assert ev._swap(_Probe(flat, numel, 3072, 4.5), {gq: 4, gi: 4}) is None  # no predicted gain


def test_frontier_apply_of_a_pruning_export_calibrates_as_the_study_did(
    encoder_dir: str, tmp_path: Path
) -> None:
    import json

    import yaml
    from typer.testing import CliRunner

    from frontier import kernels
    from frontier.search._results import compression_export
    from frontier.services._cli import app

    s = spec(encoder_dir, [BITS, CHANNELS])
    ev = make_evaluator(s.evaluator.kind, {**s.evaluator.options, "warm_start": "off"})
    ev.bind_spec(s)
    ev.load()
    params = {"q.layer_0": 4, "q.layer_1": 8, "p.layer_0": 0.25, "p.layer_1": 0.5}
    trial = ev.evaluate(Candidate(params), EvalContext(threads=1))
    # what `frontier export` writes for such a point: the recipe, and the study's spec as provenance
    doc = {"evaluator": {"kind": s.evaluator.kind, "options": dict(s.evaluator.options)}, "params": params}
    doc |= {"provenance": {"spec": s.to_dict()}, **compression_export(s, params)}
    export = tmp_path / "point.yaml"
    export.write_text(yaml.safe_dump(doc))
    result = CliRunner().invoke(app, ["apply", str(export), "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "calibrated on the study's 1 calibration batch," in result.output
    assert f"sparsity {trial['sparsity']:.3f}" in result.output
    # a compressed-tensors directory: the per-layer FFN widths are padded with exact zero channels there,
    # and Frontier's loader slices them back off
    written = json.loads((tmp_path / "out" / "config.json").read_text())
    assert written["quantization_config"]["format"] == "pack-quantized"
    assert written["frontier_structure"]["ffn_widths"]["encoder.layer.1"] == 32
    reloaded = kernels.load_pretrained_compressed(tmp_path / "out")
    assert reloaded.encoder.layer[1].intermediate.dense.out_features == 32
    # the same channels were removed as in the trial: the same fidelity
    assert ev.quality(reloaded)["fidelity"] == pytest.approx(trial["fidelity"], abs=1e-6)
