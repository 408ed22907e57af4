"""Expert pruning of transformers MoE models: selection criterion, exactness against router masking,
measured size drops, export and reload, errors."""

from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers

from frontier.kernels.moe._prune import (
    collect_router_stats,
    count_moe_params,
    detect_moe_layout,
    export_pruned_moe,
    load_pruned_moe,
    masked_router_reference,
    measure_load_memory_mb,
    prune_experts,
    resident_bytes,
)

KINDS = ["qwen2_moe", "qwen3_moe", "mixtral"]


def make_moe(
    kind: str, *, experts: int = 6, layers: int = 3, hidden: int = 32, ffn: int = 16, **kw: Any
) -> Any:
    """A tiny, seeded, eval-mode MoE causal LM of the given layout (random weights)."""
    torch.manual_seed(0)
    common: dict[str, Any] = {
        "vocab_size": 64,
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "num_experts_per_tok": 2,
    }
    common.update(kw)
    if kind == "qwen2_moe":
        config: Any = transformers.Qwen2MoeConfig(
            **common,
            intermediate_size=64,
            moe_intermediate_size=ffn,
            shared_expert_intermediate_size=32,
            num_experts=experts,
        )
    elif kind == "qwen3_moe":
        config = transformers.Qwen3MoeConfig(
            **common,
            intermediate_size=64,
            moe_intermediate_size=ffn,
            num_experts=experts,
            head_dim=hidden // 4,
        )
    else:
        config = transformers.MixtralConfig(**common, intermediate_size=ffn, num_local_experts=experts)
    return transformers.AutoModelForCausalLM.from_config(config).eval()


def _ids(seed: int = 1, shape: tuple[int, int] = (2, 12)) -> torch.Tensor:
    return torch.randint(0, 64, shape, generator=torch.Generator().manual_seed(seed))


def _logits(model: Any, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


@pytest.mark.parametrize("norm_topk_prob", [False, True])
def test_rigged_routing_selects_by_frequency_times_gate_weight(norm_topk_prob: bool) -> None:
    # One Qwen3-MoE layer whose router input is +-sqrt(H) e_0 exactly: token 0 embeds to +c e_0, token 1 to
    # -c e_0, attention writes nothing (o_proj = 0), and RMSNorm maps +-c e_0 to +-sqrt(H) e_0. Router row j
    # is s_j e_0, so token 0 picks experts {1, 0} and token 1 picks {2, 3}, with known softmax weights.
    hidden, experts = 32, 6
    model = make_moe("qwen3_moe", layers=1, hidden=hidden, experts=experts, norm_topk_prob=norm_topk_prob)
    s = torch.tensor([1.0, 2.0, -2.0, -1.0, 0.0, 0.0]) * 0.3
    with torch.no_grad():
        emb = model.model.embed_tokens.weight
        emb.zero_()
        emb[0, 0], emb[1, 0] = 5.0, -5.0
        layer = model.model.layers[0]
        layer.self_attn.o_proj.weight.zero_()
        layer.post_attention_layernorm.weight.fill_(1.0)
        layer.mlp.gate.weight.zero_()
        layer.mlp.gate.weight[:, 0] = s
    n_a, n_b = 30, 10  # token 0 three times as frequent as token 1
    ids = torch.tensor([[0] * n_a + [1] * n_b])
    stats = collect_router_stats(model, [ids])

    r = math.sqrt(hidden)
    p_a, p_b = torch.softmax(r * s, 0), torch.softmax(-r * s, 0)
    w = {1: p_a[1], 0: p_a[0], 2: p_b[2], 3: p_b[3]}
    if norm_topk_prob:
        w = {
            1: w[1] / (w[1] + w[0]),
            0: w[0] / (w[1] + w[0]),
            2: w[2] / (w[2] + w[3]),
            3: w[3] / (w[2] + w[3]),
        }
    n = n_a + n_b
    freq = torch.tensor([n_a, n_a, n_b, n_b, 0, 0], dtype=torch.float64) / n
    mean_w = torch.tensor([w[0], w[1], w[2], w[3], 0.0, 0.0], dtype=torch.float64)
    assert stats.tokens == n
    torch.testing.assert_close(stats.frequency(0), freq)
    torch.testing.assert_close(stats.mean_gate_weight(0), mean_w, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(stats.scores(0), freq * mean_w, atol=1e-5, rtol=1e-5)
    # Expected ranking from the rigged weights: frequency alone would keep {0, 1} (both 3/4 of tokens);
    # weighting by the gate keeps expert 2 (1/4 of tokens but gate weight ~0.9) over expert 0 (~0.1).
    ranking = sorted(range(experts), key=lambda j: (-float(freq[j] * mean_w[j]), j))
    assert ranking[:2] == [1, 2]
    assert stats.select({0: 2}) == {0: [1, 2]}
    assert stats.select({0: 4}) == {0: sorted(ranking[:4])}
    assert stats.select({0: 5}) == {0: [0, 1, 2, 3, 4]}  # experts 4 and 5 tie at 0: the lower id stays


def test_padding_tokens_are_not_counted() -> None:
    model = make_moe("mixtral")
    ids = _ids()
    plain = collect_router_stats(model, [ids[:1, :8]])
    mask = torch.ones(1, 12, dtype=torch.long)
    mask[0, 8:] = 0
    padded = collect_router_stats(model, [{"input_ids": ids[:1], "attention_mask": mask}])
    assert padded.tokens == plain.tokens == 8
    for layer in plain.counts:
        torch.testing.assert_close(padded.counts[layer], plain.counts[layer])


@pytest.mark.parametrize("kind", KINDS)
def test_pruned_model_equals_router_masking_reference(kind: str) -> None:
    ids = _ids(shape=(3, 16))
    reference = make_moe(kind)
    for keep, top_k in (([3, 5, 2], None), ({0: [0, 5], 2: [1, 2, 4]}, 1), (4, {1: 3})):
        model = make_moe(kind)
        stats = collect_router_stats(model, [_ids(seed=2, shape=(4, 16))])
        kept = prune_experts(model, keep, stats=stats, top_k=top_k)
        with masked_router_reference(reference, kept, top_k=top_k):
            expected = _logits(reference, ids)
        torch.testing.assert_close(_logits(model, ids), expected, atol=1e-5, rtol=0)
        # The reference is the full model again on exit.
        assert reference.model.layers[0].mlp.gate.weight.shape[0] == 6
    assert not torch.allclose(_logits(make_moe(kind), ids), _logits(model, ids), atol=1e-3)


def test_parameter_and_resident_memory_drop_are_measured() -> None:
    model = make_moe("qwen2_moe", experts=8)
    before, bytes_before = count_moe_params(model), resident_bytes(model)
    stats = collect_router_stats(model, [_ids()])
    prune_experts(model, [2, 5, 8], stats=stats)
    after, bytes_after = count_moe_params(model), resident_bytes(model)
    per_expert = 3 * 32 * 16  # gate, up and down projections of one expert (hidden 32, width 16)
    dropped = per_expert * (6 + 3 + 0) + 32 * 9  # the experts and their router rows
    assert before.total - after.total == dropped
    assert before.experts - after.experts == per_expert * 9
    # Top-2 still runs two experts per token in every layer: of the active set only the router rows go.
    assert before.active - after.active == 32 * 9
    # Storage accounting: the dropped experts' memory is really released (copies, not views of the old).
    assert bytes_before - bytes_after == 4 * dropped
    assert detect_moe_layout(model).moe_layers == (0, 1, 2)


def test_top_k_lowers_active_parameters() -> None:
    model = make_moe("qwen3_moe")
    before = count_moe_params(model)
    prune_experts(model, {0: [0, 1, 2]}, top_k=1)
    after = count_moe_params(model)
    # Layer 0 runs one expert per token, not two, and lost three router rows.
    assert before.active - after.active == 3 * 32 * 16 + 3 * 32
    assert model.model.layers[0].mlp.gate.top_k == 1 and model.model.layers[1].mlp.gate.top_k == 2


@pytest.mark.parametrize("kind", KINDS)
def test_uniform_export_reloads_in_stock_transformers(kind: str, tmp_path: Path) -> None:
    model = make_moe(kind)
    stats = collect_router_stats(model, [_ids()])
    prune_experts(model, 0.5, stats=stats, top_k=1)
    result = export_pruned_moe(model, tmp_path / "ckpt")
    assert result["stock"] is True
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["num_experts_per_tok"] == 1 and "frontier_moe" not in config and "auto_map" not in config
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt").eval()
    layout = detect_moe_layout(reloaded)
    assert (layout.num_experts, layout.top_k) == (3, 1)
    ids = _ids()
    torch.testing.assert_close(_logits(reloaded, ids), _logits(model, ids), atol=1e-6, rtol=0)
    assert count_moe_params(reloaded) == count_moe_params(model)


def test_non_uniform_export_needs_frontier_loader_or_remote_code(tmp_path: Path) -> None:
    model = make_moe("qwen2_moe")
    stats = collect_router_stats(model, [_ids()])
    prune_experts(model, [2, 6, 4], stats=stats, top_k={2: 1})
    out = tmp_path / "ckpt"
    with pytest.warns(UserWarning, match=r"different numbers of experts.*needs Frontier's loader"):
        result = export_pruned_moe(model, out)
    assert result["stock"] is False and "trust_remote_code=True" in result["load"]
    plan = json.loads((out / "config.json").read_text())["frontier_moe"]
    assert plan["experts_per_layer"] == {"0": 2, "1": 6, "2": 4} and plan["top_k_per_layer"]["2"] == 1
    assert getattr(model.config, "auto_map", None) is None  # export does not change the live model's config
    ids = _ids()
    expected = _logits(model, ids)
    torch.testing.assert_close(_logits(load_pruned_moe(out).eval(), ids), expected, atol=1e-6, rtol=0)
    # Stock transformers: the documented custom-code route loads it; without it, a size-mismatch refusal.
    remote = transformers.AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
    torch.testing.assert_close(_logits(remote, ids), expected, atol=1e-6, rtol=0)
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
        transformers.AutoModelForCausalLM.from_pretrained(out)


def test_unsupported_model_type_is_named() -> None:
    llama = transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
        )
    )
    with pytest.raises(
        ValueError, match=r"model_type in \['mixtral', 'qwen2_moe', 'qwen3_moe'\]. Got model_type='llama'"
    ):
        detect_moe_layout(llama)
    with pytest.raises(ValueError, match="model_type='llama'"):
        prune_experts(llama, 1)


@pytest.mark.parametrize(
    ("keep", "top_k", "error", "match"),
    [
        (
            7,
            None,
            ValueError,
            r"keep\[0\] \(experts kept in layer 0\) must be between 1 and the 6 experts .* Got 7",
        ),
        (0, None, ValueError, r"must be between 1 and the 6 experts the layer has. Got 0 instead"),
        (3, 4, ValueError, r"top_k for layer 0 must be between 1 and the 3 experts kept there. Got top_k=4"),
        ([2, 2], None, ValueError, r"one entry per MoE layer \(3: layers \[0, 1, 2\]\). Got 2 entries"),
        ({5: 2}, None, ValueError, r"names layer 5, which is not an MoE layer; MoE layers are \[0, 1, 2\]"),
        ({0: [1, 1]}, None, ValueError, r"keep\[0\] must list distinct expert ids in \[0, 6\).*Got \[1, 1\]"),
        ({0: [6]}, None, ValueError, r"distinct expert ids in \[0, 6\)"),
        (1.5, None, ValueError, r"as a fraction, must be in \(0, 1\]. Got 1.5"),
        ("half", None, TypeError, r"must be an int, a fraction, .* Got str instead"),
        (True, None, TypeError, r"Got True"),
    ],
)
def test_bad_keep_and_top_k_are_rejected(keep: Any, top_k: Any, error: type[Exception], match: str) -> None:
    model = make_moe("mixtral")
    stats = collect_router_stats(model, [_ids()])
    with pytest.raises(error, match=match):
        prune_experts(model, keep, stats=stats, top_k=top_k)
    assert model.model.layers[0].mlp.gate.weight.shape[0] == 6  # nothing was pruned


def test_models_without_moe_layers_are_named() -> None:
    dense = make_moe("qwen2_moe", mlp_only_layers=[0, 1, 2])  # a Qwen2-MoE config whose layers are all dense
    with pytest.raises(ValueError, match=r"model_type='qwen2_moe' \(Qwen2MoeForCausalLM\) has no MoE layer"):
        detect_moe_layout(dense)
    shell = torch.nn.Module()
    shell.config = transformers.MixtralConfig()
    with pytest.raises(TypeError, match=r"must be a transformers causal LM with model.layers.*Got Module"):
        detect_moe_layout(shell)


def test_stats_for_another_model_are_rejected() -> None:
    stats = collect_router_stats(make_moe("mixtral", layers=1), [_ids()])
    with pytest.raises(ValueError, match=r"no statistics for layer 1; it covers layers \[0\]"):
        prune_experts(make_moe("mixtral"), 2, stats=stats)


def test_counts_without_stats_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"needs 'stats' \(from collect_router_stats\)"):
        prune_experts(make_moe("qwen3_moe"), 3)


def test_default_top_k_is_clamped_to_the_kept_experts() -> None:
    model = make_moe("mixtral")
    prune_experts(model, {0: [4]})
    assert model.model.layers[0].mlp.gate.top_k == 1
    ids = _ids()
    with masked_router_reference(make_moe("mixtral"), {0: [4]}) as reference:
        torch.testing.assert_close(_logits(model, ids), _logits(reference, ids), atol=1e-5, rtol=0)


@pytest.mark.slow
def test_load_memory_drop_is_measured_in_a_fresh_process(tmp_path: Path) -> None:
    # Experts dominate this model (2 layers x 16 experts x 3 x 128 x 512 floats = 25 MB of 26 MB).
    full = make_moe("mixtral", layers=2, experts=16, hidden=128, ffn=512, vocab_size=64)
    export_pruned_moe(full, tmp_path / "full")
    pruned = make_moe("mixtral", layers=2, experts=16, hidden=128, ffn=512, vocab_size=64)
    prune_experts(pruned, {0: list(range(4)), 1: list(range(4))})
    export_pruned_moe(pruned, tmp_path / "pruned")
    before = measure_load_memory_mb(tmp_path / "full")
    after = measure_load_memory_mb(tmp_path / "pruned")
    dropped_mb = 2 * 12 * 3 * 128 * 512 * 4 / 2**20  # 18 MB of expert weights
    assert before["rss_mb"] - after["rss_mb"] > 0.5 * dropped_mb, (before, after)
    assert before["peak_mb"] - after["peak_mb"] > 0.5 * dropped_mb, (before, after)
    (tmp_path / "empty").mkdir()  # no config.json: the child process fails and says so
    with pytest.raises(RuntimeError, match=r"Measuring the load of .*empty failed"):
        measure_load_memory_mb(tmp_path / "empty", timeout_s=120)


@pytest.mark.slow
def test_tiny_pretrained_moe_is_cached_and_pruning_by_score_beats_the_reverse(tmp_path: Path) -> None:
    from frontier.evaluators._tiny_moe import (
        build_tiny_moe,
        encode_bytes,
        heldout_perplexity,
        tiny_moe_corpus,
    )

    lines: list[str] = []
    path = build_tiny_moe(tmp_path / "tiny-moe", steps=80, progress=lines.append)
    assert lines[0].startswith("training the tiny pretrained MoE at") and "saved" in lines[-1]
    marker = (path / "frontier_tiny_moe.json").stat().st_mtime_ns
    start = time.perf_counter()
    assert build_tiny_moe(tmp_path / "tiny-moe", steps=80, progress=lines.append) == path
    assert len(lines) == 2  # cached: nothing to say
    assert time.perf_counter() - start < 5 and (path / "frontier_tiny_moe.json").stat().st_mtime_ns == marker
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    assert tokenizer("déf")["input_ids"] == list("déf".encode())
    train, _ = tiny_moe_corpus()
    full = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    stats = collect_router_stats(full, [encode_bytes(train)[: 8 * 128].view(8, 128)])
    top = stats.select(dict.fromkeys(range(4), 4))
    bottom = {layer: sorted(set(range(8)) - set(ids)) for layer, ids in top.items()}
    ppl: dict[str, float] = {"full": heldout_perplexity(full, max_windows=32)}
    for name, kept in (("top", top), ("bottom", bottom)):
        model = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
        prune_experts(model, kept)
        ppl[name] = heldout_perplexity(model, max_windows=32)
    assert ppl["full"] < 256 / 4  # far better than uniform bytes: it learned something
    assert ppl["full"] <= ppl["top"] < ppl["bottom"], ppl
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the uniform export is a stock checkpoint: no warning
        export_pruned_moe(model, tmp_path / "uniform")


def test_pruned_copy_never_copies_the_dropped_experts() -> None:
    from frontier.evaluators._lm_train import _PeakRSS
    from frontier.kernels.moe import pruned_copy

    # Experts dominate (2 layers x 16 experts x 3 x 128 x 512 floats = 25 MB of 26 MB); keep a quarter.
    base = make_moe("mixtral", layers=2, experts=16, hidden=128, ffn=512, vocab_size=64)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    kept = {0: [0, 5, 9, 15], 1: [1, 2, 3, 4]}
    peak = _PeakRSS()
    model, ids = pruned_copy(base, kept, top_k=1)
    grown = peak.growth_mb()
    assert ids == kept
    # measured 8 MB (the 6.8-MB pruned model) against 29 MB for deepcopy + prune_experts
    assert grown < 0.6 * resident_bytes(base) / 1e6, grown
    assert resident_bytes(model) < 0.3 * resident_bytes(base)
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())  # the base is untouched
    ids_in = _ids()
    with masked_router_reference(base, kept, top_k=1) as reference:
        torch.testing.assert_close(_logits(model, ids_in), _logits(reference, ids_in), atol=1e-5, rtol=0)
