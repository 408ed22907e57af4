"""The ``lm-train`` evaluator on tiny settings, and the corpus helpers it uses."""

from __future__ import annotations

import math
import random

import pytest
import torch

import frontier.evaluators._lm_train  # noqa: F401  (registers lm-train until evaluators/__init__ imports it)
from frontier.evaluators import EvalContext, TrialStopped, make_evaluator
from frontier.evaluators import _text as text
from frontier.evaluators._lm_train import LMTrain
from frontier.spaces import Candidate, SpecError, spec_from_dict
from frontier.spaces._family_lm import MoEFamily, NASFamily

TINY = {
    "steps": 6,
    "eval_every": 3,
    "seq_len": 32,
    "batch_size": 4,
    "eval_batches": 2,
    "latency_context": 8,
    "prefill_seq": 16,
    "latency_time_cap_s": 0.05,
}
MOE_SPACE = {"layers": [1, 2], "hidden": [32], "head_dim": [8, 16], "ffn_ratio": [1, 2], "expert_ffn": [16]}
DENSE = {
    **{"lm.depth": 2, "lm.hidden": 32},
    **{"lm.head_dim_1": 8, "lm.experts_1": 0, "lm.ffn_ratio_1": 2},
    **{"lm.head_dim_2": 16, "lm.experts_2": 0, "lm.ffn_ratio_2": 2},
}
MOE = {
    **{"lm.depth": 2, "lm.hidden": 32},
    **{
        "lm.head_dim_1": 16,
        "lm.experts_1": 4,
        "lm.top_k_1": 2,
        "lm.expert_ffn_1": 16,
        "lm.shared_expert_1": True,
    },
    **{"lm.head_dim_2": 16, "lm.experts_2": 0, "lm.ffn_ratio_2": 1},
}
UNIFORM_SPACE = {"layers": [2, 2], "hidden": [32], "head_dim": [8], "ffn_ratio": [2], "per_layer": False}
UNIFORM = {"lm.depth": 2, "lm.hidden": 32, "lm.head_dim": 8, "lm.ffn_ratio": 2}


def lm_spec(family: str = "moe", options: dict | None = None, *extra: dict) -> dict:
    options = MOE_SPACE if options is None else options
    item = {"kind": "family", "name": "lm", "family": family, "options": options}
    return {
        "name": "lm",
        "evaluator": {"kind": "lm-train", "options": TINY},
        "space": [item, *extra],
        "objectives": [{"name": "perplexity", "direction": "minimize"}],
    }


def bound(options: dict, spec: dict | None = None) -> LMTrain:
    """An lm-train evaluator bound to a spec (its family decodes the candidates), as for_spec makes it."""
    ev = make_evaluator("lm-train", options)
    assert isinstance(ev, LMTrain)
    ev.bind_spec(spec_from_dict(spec or lm_spec()))
    return ev


@pytest.fixture(scope="module")
def lm() -> LMTrain:
    ev = bound(TINY)
    ev.ensure_setup()
    return ev


def test_trains_measures_and_reports_every_objective(lm):
    history: list[tuple[int, dict[str, float]]] = []
    out = lm.evaluate(
        Candidate(MOE), EvalContext(seed=0, reporter=lambda s, m: history.append((s, m)) or True)
    )
    assert set(out) == set(lm.metrics())
    assert all(math.isfinite(v) for v in out.values())
    assert 1.0 < out["perplexity"] < 400  # bytes: a uniform guess is 256
    assert out["val_loss"] == pytest.approx(math.log(out["perplexity"]))
    assert out["latency_ms"] > 0 and out["prefill_ms"] > 0 and out["latency_ci_ms"] >= 0
    assert out["peak_memory_mb"] >= 0
    assert out["moe_layers"] == 1 and out["uses_transformers"] == 0
    # MO-ASHA needs the whole objective vector at every rung; the final evaluation is returned, not reported
    assert [s for s, _ in history] == [3]
    for _, metrics in history:
        assert set(metrics) == set(lm.metrics())
        assert metrics["latency_ms"] == out["latency_ms"] and metrics["perplexity"] != out["perplexity"]


def test_active_params_count_top_k_experts_and_equal_total_when_dense(lm):
    model, hf = lm.build(Candidate(MOE))
    total, active = lm.param_counts(model)
    assert not hf and total == sum(p.numel() for p in model.parameters())
    per_expert = 3 * 32 * 16  # SwiGLU gate, up, down
    assert total - active == (4 - 2) * per_expert
    dense, _ = lm.build(Candidate(DENSE))
    total, active = lm.param_counts(dense)
    assert active == total == sum(p.numel() for p in dense.parameters())


def test_scheduler_stop_propagates(lm):
    with pytest.raises(TrialStopped, match="stopped by the scheduler at step 3"):
        lm.evaluate(Candidate(DENSE), EvalContext(reporter=lambda s, m: False))


def test_same_seed_same_perplexity(lm):
    a = lm.evaluate(Candidate(DENSE), EvalContext(seed=3))["perplexity"]
    assert lm.evaluate(Candidate(DENSE), EvalContext(seed=3))["perplexity"] == a


def test_the_family_decodes_a_candidate_into_its_architecture():
    family = MoEFamily.compile(
        {
            "layers": [1, 3],
            "hidden": [48],
            "heads": [3, 6],
            "ffn_ratio": [2],
            "expert_ffn": [48],
            "experts": [0, 4],
        }
    )
    params = {"lm.depth": 3, "lm.hidden": 48}
    for i, heads, experts in ((1, 3, 0), (2, 6, 0), (3, 3, 4)):
        params |= {f"lm.heads_{i}": heads, f"lm.experts_{i}": experts, f"lm.ffn_ratio_{i}": 2}
    params |= {"lm.top_k_3": 2, "lm.expert_ffn_3": 48, "lm.shared_expert_3": False}
    arch = family.decode("lm", params, vocab=256, max_len=16)
    assert [layer.heads for layer in arch.layers] == [3, 6, 3]
    assert [layer.experts for layer in arch.layers] == [0, 0, 4]
    assert arch.layers[0].ffn == 96 and arch.layers[2].ffn == 48 and arch.layers[2].top_k == 2
    assert arch.moe_layers == 1 and not arch.llama_expressible and (arch.vocab, arch.max_len) == (256, 16)
    uniform = NASFamily.compile(UNIFORM_SPACE).decode("lm", UNIFORM)
    assert [layer.heads for layer in uniform.layers] == [4, 4] and uniform.llama_expressible


NAS = {"lm.depth": 1, "lm.hidden": 64, "lm.head_dim_1": 16, "lm.ffn_ratio_1": 2}
MOE1 = {"lm.depth": 1, "lm.hidden": 64, "lm.head_dim_1": 16, "lm.experts_1": 4, "lm.top_k_1": 1}
MOE1 |= {"lm.expert_ffn_1": 64, "lm.shared_expert_1": False}


@pytest.mark.parametrize(
    ("family", "params", "match"),
    [
        (
            "nas",
            {**NAS, "lm.head_dim_1": 24},
            r"'head_dim' of layer 1 \(lm.head_dim_1\) must divide hidden=64. Got 24",
        ),
        ("moe", {**MOE1, "lm.top_k_1": 8}, r"'top_k' of layer 1 \(lm.top_k_1\) must be <= experts=4. Got 8"),
        (
            "moe",
            {**MOE1, "lm.experts_1": 1},
            r"'experts' of layer 1 \(lm.experts_1\) must be 0 \(dense\) or >= 2. Got 1",
        ),
        (
            "nas",
            {**NAS, "lm.depth": 0},
            r"family 'lm' \(nas\): parameter 'depth' \(lm.depth\) must be >= 1. Got 0",
        ),
        ("nas", {**NAS, "lm.hidden": 64.5}, r"'hidden' \(lm.hidden\) must be an integer. Got 64.5"),
        ("nas", {**NAS, "lm.depth": 2}, r"the candidate has no parameter 'lm.head_dim_2'"),
    ],
)
def test_illegal_candidates_are_rejected(family, params, match):
    with pytest.raises(ValueError, match=match):
        (NASFamily if family == "nas" else MoEFamily).compile({}).decode("lm", params)


def test_heads_that_do_not_divide_hidden_are_rejected():
    family = NASFamily.compile({"hidden": [64], "heads": [4]})
    with pytest.raises(ValueError, match=r"'heads' of layer 1 \(lm.heads_1\) must divide hidden=64. Got 3"):
        family.decode("lm", {"lm.depth": 1, "lm.hidden": 64, "lm.heads_1": 3, "lm.ffn_ratio_1": 2})


def test_bind_spec_takes_one_lm_family_and_the_training_parameters():
    lr = {"name": "lr", "kind": "float", "low": 1e-4, "high": 1e-2, "log": True}
    bound(TINY, lm_spec("moe", MOE_SPACE, lr))
    with pytest.raises(
        ValueError, match=r"lm-train does not use parameters \['width'\]. The architecture comes"
    ):
        bound(TINY, lm_spec("nas", {}, {"name": "width", "kind": "int", "low": 1, "high": 2}))
    two = lm_spec("nas", {})
    two["space"].append({**two["space"][0], "name": "b"})
    with pytest.raises(ValueError, match=r"exactly one 'nas' or 'moe' family .* Got 2: \['lm', 'b'\]"):
        bound(TINY, two)
    with pytest.raises(RuntimeError, match=r"bind_spec\(spec\) must be called before evaluating"):
        make_evaluator("lm-train", TINY).build(Candidate(DENSE))  # type: ignore[attr-defined]


def test_transformers_backend_builds_the_same_llama_architecture():
    ev = bound({**TINY, "backend": "transformers"}, lm_spec("nas", UNIFORM_SPACE))
    uniform = Candidate(UNIFORM)
    llama, hf = ev.build(uniform)
    native, _ = bound(TINY, lm_spec("nas", UNIFORM_SPACE)).build(uniform)
    assert hf and type(llama).__name__ == "LlamaForCausalLM"
    # same recipe (RMSNorm, RoPE attention without bias, SwiGLU FFN, tied embedding): same parameter count
    assert sum(p.numel() for p in llama.parameters()) == sum(p.numel() for p in native.parameters())
    ev = bound({**TINY, "backend": "transformers"})
    with pytest.raises(
        ValueError, match=r"backend 'transformers' .* needs a dense model whose layers are all"
    ):
        ev.build(Candidate(MOE))
    auto = bound({**TINY, "backend": "auto"})
    assert auto.build(Candidate(MOE))[1] is False


def test_native_decode_with_cache_matches_full_forward(lm):
    torch.manual_seed(0)
    model, _ = lm.build(Candidate(DENSE))
    model.eval()
    ids = torch.randint(0, 256, (2, 9))
    with torch.no_grad():
        full = model(ids)[0][:, -1]
        _, past = model(ids[:, :-1])
        step = model(ids[:, -1:], past)[0][:, -1]
    torch.testing.assert_close(step, full, atol=1e-5, rtol=1e-4)


def test_option_errors():
    with pytest.raises(
        SpecError, match=r"evaluator.options.steps: Input should be greater than or equal to 1"
    ):
        make_evaluator("lm-train", {"steps": 0})
    with pytest.raises(SpecError, match=r"evaluator.options.colour: unknown field"):
        make_evaluator("lm-train", {"colour": 1})
    with pytest.raises(SpecError, match=r"evaluator.options.keep_weights: .*'none', 'pareto' or 'all'"):
        make_evaluator("lm-train", {"keep_weights": "best"})
    with pytest.raises(SpecError, match="'text_file' and 'dataset' are alternative corpora: give one"):
        make_evaluator("lm-train", {"text_file": "a.txt", "dataset": "wikitext"})
    with pytest.raises(
        ValueError, match=r"'text_file' option must name a readable text file. Got 'nope\.txt'"
    ):
        make_evaluator("lm-train", {"text_file": "nope.txt"}).setup()
    with pytest.raises(ValueError, match="'tokenizer' option must name a local transformers tokenizer dir"):
        make_evaluator("lm-train", {"tokenizer": "/nonexistent/tok"}).setup()


def test_dataset_option_fails_clearly_offline():
    ev = make_evaluator("lm-train", {"dataset": "surely-not-cached/xyz"})
    with pytest.raises(RuntimeError, match="'dataset' option"):
        ev.setup()


def test_text_file_corpus(tmp_path):
    paras = [f"Paragraph {i}: " + "lorem ipsum dolor sit amet " * 20 for i in range(200)]
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n".join(paras))
    ev = make_evaluator("lm-train", {**TINY, "text_file": str(path)})
    ev.setup()
    assert ev.vocab == 256  # type: ignore[attr-defined]
    assert ev.train_ids.numel() > 5 * ev.val_ids.numel() > 0  # type: ignore[attr-defined]


def test_corpus_split_is_deterministic_disjoint_and_order_free():
    chunks = text.chunk_documents(text.pydoc_topics())
    assert len(chunks) > 50 and all(len(c) <= 4000 or "\n\n" not in c for c in chunks)
    train, val = text.split_chunks(chunks, val_fraction=0.1)
    assert not set(train) & set(val)
    assert sorted(train + val) == sorted(chunks)
    assert 0.05 < len(val) / len(chunks) < 0.15
    shuffled = chunks[:]
    random.Random(0).shuffle(shuffled)
    assert set(text.split_chunks(shuffled, val_fraction=0.1)[1]) == set(val)
    # a duplicated chunk never straddles the split
    train2, val2 = text.split_chunks([*chunks, val[0], train[0]], val_fraction=0.1)
    assert not set(train2) & set(val2)


def test_split_keeps_both_sides_non_empty_and_checks_fraction():
    train, val = text.split_chunks(["a", "b"], val_fraction=0.01)
    assert len(train) == len(val) == 1
    with pytest.raises(ValueError, match=r"val_fraction must be in \(0, 1\), but got 1\.5"):
        text.split_chunks(["a"], val_fraction=1.5)


def test_evaluator_validation_text_is_held_out(lm):
    train = bytes(lm.train_ids.to(torch.uint8).tolist())
    val = bytes(lm.val_ids.to(torch.uint8).tolist())
    snippets = [val[i : i + 200] for i in range(0, len(val) - 200, 997)]
    leaked = sum(s in train for s in snippets)
    # chunks are disjoint and repeated paragraphs dropped; a few short common passages may remain
    assert len(snippets) > 30 and leaked / len(snippets) < 0.05
