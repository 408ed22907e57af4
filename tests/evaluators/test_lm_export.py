"""lm-train trials that keep their weights, and their conversion to stock transformers checkpoints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from frontier.evaluators import EvalContext, make_evaluator
from frontier.evaluators._lm_export import (
    MANIFEST,
    WEIGHTS,
    load_trial_model,
    save_trial_checkpoint,
    write_hf_checkpoint,
)
from frontier.evaluators._lm_train import LMTrain, _native_model
from frontier.spaces import Candidate, LayerArch, LMArch, spec_from_dict

TINY = {
    "steps": 4,
    "eval_every": 2,
    "seq_len": 32,
    "batch_size": 4,
    "eval_batches": 2,
    "latency_context": 8,
    "prefill_seq": 16,
    "latency_time_cap_s": 0.02,
    "keep_weights": "all",
}
# one per-layer moe family whose candidates cover every architecture the tests train
FAMILY = {"layers": [1, 3], "hidden": [32], "head_dim": [8], "experts": [0, 2, 4], "top_k": [1, 2]}
FAMILY |= {"expert_ffn": [16], "ffn_ratio": [1.5, 2]}


def stack(*layers: dict[str, Any]) -> dict[str, Any]:
    """A candidate of ``FAMILY``: hidden 32, head width 8, each layer's own parameters."""
    out: dict[str, Any] = {"lm.depth": len(layers), "lm.hidden": 32}
    for i, layer in enumerate(layers, 1):
        out |= {f"lm.head_dim_{i}": 8, **{f"lm.{k}_{i}": v for k, v in layer.items()}}
    return out


def routed(experts: int, top_k: int, shared: bool = False) -> dict[str, Any]:
    return {"experts": experts, "top_k": top_k, "expert_ffn": 16, "shared_expert": shared}


DENSE_LAYER = {"experts": 0, "ffn_ratio": 2}
DENSE = stack(DENSE_LAYER, DENSE_LAYER)


def bound(options: dict[str, Any]) -> LMTrain:
    """An lm-train evaluator bound to a spec with ``FAMILY`` (as ``for_spec`` makes it) and set up."""
    ev = make_evaluator("lm-train", options)
    assert isinstance(ev, LMTrain)
    ev.bind_spec(
        spec_from_dict(
            {
                "name": "lm",
                "evaluator": {"kind": "lm-train", "options": options},
                "space": [{"kind": "family", "name": "lm", "family": "moe", "options": FAMILY}],
                "objectives": [{"name": "perplexity", "direction": "minimize"}],
            }
        )
    )
    ev.ensure_setup()
    return ev


@pytest.fixture(scope="module")
def lm() -> LMTrain:
    return bound(TINY)


def hf_val_loss(model: Any, lm: LMTrain) -> float:
    """The trial's validation loss recomputed with a transformers model (what ``_validate`` does)."""
    total, count = 0.0, 0
    with torch.inference_mode():
        for batch in lm.val_windows.split(lm.options.batch_size):
            logits = model(input_ids=batch[:, :-1]).logits
            total += float(
                F.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum"
                )
            )
            count += batch[:, 1:].numel()
    return total / count


def train_and_export(lm: LMTrain, params: dict[str, Any], tmp_path: Path) -> tuple[dict, dict, Any]:
    metrics = lm.evaluate(Candidate(params), EvalContext(seed=1, workdir=tmp_path / "trial"))
    summary = write_hf_checkpoint(tmp_path / "trial", tmp_path / "hf")
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    trial = load_trial_model(tmp_path / "trial")
    ids = torch.randint(0, 256, (3, 32), generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        assert torch.allclose(hf(input_ids=ids).logits, trial.logits(ids), atol=1e-5, rtol=0)
    return metrics, summary, hf


def test_dense_trial_becomes_llama_with_the_same_logits_and_loss(lm, tmp_path):
    metrics, summary, hf = train_and_export(lm, DENSE, tmp_path)
    assert summary["architecture"] == "LlamaForCausalLM" == type(hf).__name__
    assert summary["max_abs_logit_diff"] <= 1e-5 and summary["tokenizer"] == "byte-level"
    # The export reproduces the trial's own reported validation loss: the weights are the trained ones.
    assert hf_val_loss(hf, lm) == pytest.approx(metrics["val_loss"], rel=1e-5)
    assert hf.config.tie_word_embeddings and hf.config.rope_parameters["rope_theta"] == 10000.0
    manifest = json.loads((tmp_path / "trial" / MANIFEST).read_text())
    assert manifest["params"] == DENSE and manifest["metrics"]["val_loss"] == metrics["val_loss"]
    files = {p.name for p in (tmp_path / "hf").iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json"} <= files
    # The saved tokenizer is the byte-level one the trial trained with.
    tok = AutoTokenizer.from_pretrained(tmp_path / "hf")
    text = "def f(x):\n    return x → ∞"
    assert tok(text, add_special_tokens=False)["input_ids"] == list(text.encode("utf-8"))
    assert tok.decode(list(text.encode("utf-8"))) == text


MOE_CASES = {
    # top_k 2, every layer routed, no shared expert: Mixtral (renormalised top-k weights, as natively).
    "top2": (stack(routed(4, 2), routed(4, 2)), "MixtralForCausalLM"),
    # top_k 1 (raw softmax weight), no shared expert: Qwen2-MoE with an all-zero shared expert.
    "top1": (stack(routed(4, 1), routed(4, 1)), "Qwen2MoeForCausalLM"),
    "top1-shared": (stack(routed(2, 1, True), routed(2, 1, True)), "Qwen2MoeForCausalLM"),
    # top_k 2 with a shared expert in layer 1 only and a dense layer 3 (mlp_only_layers).
    "top2-shared-dense": (
        stack(routed(4, 2, True), routed(4, 2), {"experts": 0, "ffn_ratio": 1.5}),
        "Qwen2MoeForCausalLM",
    ),
}


@pytest.mark.parametrize("case", list(MOE_CASES))
def test_moe_trial_becomes_a_transformers_moe_with_the_same_logits(lm, tmp_path, case):
    params, cls = MOE_CASES[case]
    metrics, summary, hf = train_and_export(lm, params, tmp_path)
    assert summary["architecture"] == cls == type(hf).__name__
    assert hf_val_loss(hf, lm) == pytest.approx(metrics["val_loss"], rel=1e-5)
    if cls == "Qwen2MoeForCausalLM":
        assert hf.config.norm_topk_prob == (params["lm.top_k_1"] > 1)
        assert hf.config.mlp_only_layers == ([2] if params["lm.depth"] == 3 else [])


def test_transformers_backend_trial_is_saved_as_is(tmp_path):
    ev = bound({**TINY, "backend": "transformers", "steps": 2})
    metrics, summary, hf = train_and_export(ev, DENSE, tmp_path)
    assert summary["architecture"] == "LlamaForCausalLM" and metrics["uses_transformers"] == 1
    assert json.loads((tmp_path / "trial" / MANIFEST).read_text())["model"] == "llama"
    assert hf_val_loss(hf, ev) == pytest.approx(metrics["val_loss"], rel=1e-5)


def test_the_causal_lm_compression_evaluator_loads_the_export(lm, tmp_path):
    lm.evaluate(Candidate(DENSE), EvalContext(seed=2, workdir=tmp_path / "trial"))
    write_hf_checkpoint(tmp_path / "trial", tmp_path / "hf", verify=False)
    spec = spec_from_dict(
        {
            "name": "compress-an-lm-train-winner",
            "evaluator": {
                "kind": "hf-causal-lm-perplexity",
                "options": {"model": str(tmp_path / "hf"), "seq_len": 16, "eval_windows": 2,
                            "calibration_windows": 1, "latency_time_cap_s": 0.02},
            },
            "space": [
                {"kind": "family", "name": "q", "family": "bits",
                 "options": {"num_layers": 2, "layout": "llama", "targets": ["**"], "group_by": "all"}},
            ],
            "objectives": [{"name": "perplexity", "direction": "minimize"}],
        }
    )  # fmt: skip
    ev = make_evaluator(spec.evaluator.kind, spec.evaluator.options)
    ev.bind_spec(spec)
    ev.ensure_setup()
    base = ev.evaluate(Candidate({}), EvalContext(threads=1))
    eight = ev.evaluate(Candidate({"q.all": 8}), EvalContext(threads=1))
    assert base["perplexity"] > 1.0 and base["avg_bits"] == 32.0
    assert eight["avg_bits"] == 8.0 and abs(eight["perplexity_ratio"] - 1.0) < 0.05


# ------------------------------------------------------------------------------------------ errors


def dense(heads: int, ffn: int) -> LayerArch:
    return LayerArch(heads=heads, experts=0, ffn=ffn)


def moe(experts: int, ffn: int, top_k: int = 1) -> LayerArch:
    return LayerArch(heads=2, experts=experts, ffn=ffn, top_k=top_k)


def saved(tmp_path: Path, hidden: int, *layers: LayerArch) -> Path:
    """An untrained native model's checkpoint: enough for the expressibility checks."""
    arch = LMArch(vocab=256, hidden=hidden, layers=layers, max_len=16)
    return save_trial_checkpoint(
        _native_model(arch, aux_loss_coef=0.0, device="cpu"), arch, tmp_path / "trial", llama=False
    )


@pytest.mark.parametrize(
    ("hidden", "layers", "match"),
    [
        (
            32,
            (dense(4, 64), dense(2, 64)),
            r"attention heads must be the same in every layer.*"
            r"heads=2 in layers \[1\], heads=4 in layers \[0\]",
        ),
        (
            32,
            (dense(2, 64), dense(2, 32), dense(2, 64)),
            r"dense FFN widths .* Got ffn=32 in layers \[1\], ffn=64 in layers \[0, 2\]",
        ),
        (
            32,
            (moe(2, 32), moe(4, 32)),
            r"routed expert counts must be the same.*experts=2 in layers \[0\], experts=4 in layers \[1\]",
        ),
        (
            32,
            (moe(4, 32, top_k=1), moe(4, 32, top_k=2)),
            r"top_k values must be the same.*top_k=1 in layers \[0\], top_k=2 in layers \[1\]",
        ),
        (
            32,
            (moe(2, 32), moe(2, 8)),
            r"expert widths \(expert_ffn\) must be the same.*expert_ffn=8 in layers \[1\]",
        ),
        (30, (dense(2, 60),), r"head width .* must be even.*Got 15"),
    ],
)
def test_inexpressible_candidates_are_refused_with_the_reason(tmp_path, hidden, layers, match):
    ckpt = saved(tmp_path, hidden, *layers)
    with pytest.raises(ValueError, match=match):
        write_hf_checkpoint(ckpt, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_sources_without_a_checkpoint_are_refused(tmp_path):
    doc = {"frontier_export": 1, "study": "s", "trial": 3, "checkpoint": None}
    with pytest.raises(
        ValueError, match=r"'checkpoint' field of the export document \(trial 3 of study 's'\)"
    ):
        write_hf_checkpoint(doc, tmp_path / "hf")
    (tmp_path / "doc.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"keep_weights 'pareto' or 'all'"):
        write_hf_checkpoint(tmp_path / "doc.json", tmp_path / "hf")
    with pytest.raises(ValueError, match=rf"must hold {MANIFEST}.*which has no such file"):
        write_hf_checkpoint(tmp_path, tmp_path / "hf")
    with pytest.raises(ValueError, match=r"which does not exist"):
        write_hf_checkpoint(tmp_path / "nowhere", tmp_path / "hf")


def test_an_export_document_naming_the_checkpoint_is_accepted(tmp_path):
    ckpt = saved(tmp_path, 16, dense(2, 32))
    (tmp_path / "doc.json").write_text(json.dumps({"trial": 0, "checkpoint": str(ckpt)}))
    out = write_hf_checkpoint(tmp_path / "doc.json", tmp_path / "hf", tokenizer=False)
    assert out["checkpoint"] == str(ckpt) and out["tokenizer"] is None
    assert not (tmp_path / "hf" / "tokenizer.json").exists()


def test_keep_weights_needs_a_workdir_and_none_writes_nothing(lm, tmp_path):
    with pytest.raises(RuntimeError, match=r"keep_weights='all' .* context.workdir is None"):
        lm.evaluate(Candidate(DENSE), EvalContext(seed=0))
    none = bound({**TINY, "keep_weights": "none", "steps": 1})
    none.evaluate(Candidate(DENSE), EvalContext(seed=0, workdir=tmp_path / "trial"))
    assert not (tmp_path / "trial").exists()
    ckpt = saved(tmp_path, 32, dense(4, 64), dense(4, 64))
    assert {p.name for p in ckpt.iterdir()} == {MANIFEST, WEIGHTS}


# --------------------------------------------------------------------------------- through a study


# depth 1 or 2, every layer dense or every layer routed (2 experts, top-1), one width
STUDY_FAMILY = {"layers": [1, 2], "hidden": [16], "head_dim": [8], "ffn_ratio": [2], "per_layer": False}
STUDY_FAMILY |= {"experts": [0, 2], "top_k": [1], "expert_ffn": [16], "shared_expert": [False]}


def study_spec(keep: str, n_trials: int) -> Any:
    """Depth 1 or 2 at one width: fewer parameters and no MoE layer dominate, so 2-layer trials end off the
    Pareto set of (total_params, moe_layers) whatever their perplexity."""
    return spec_from_dict(
        {
            "name": f"keep-{keep}",
            "evaluator": {"kind": "lm-train", "options": {**TINY, "steps": 2, "keep_weights": keep}},
            "space": [{"kind": "family", "name": "lm", "family": "moe", "options": STUDY_FAMILY}],
            "objectives": [
                {"name": "total_params", "direction": "minimize"},
                {"name": "moe_layers", "direction": "minimize"},
            ],
            "search": {"sampler": "random", "n_trials": n_trials, "seed": 3, "concurrency": 1},
        }
    )


def kept(run_dir: Path, study: str) -> set[int]:
    root = run_dir / "trials" / study
    return {int(p.name) for p in root.iterdir() if (p / MANIFEST).is_file()} if root.is_dir() else set()


@pytest.mark.integration
@pytest.mark.slow
def test_keep_weights_through_studies(ray_session, tmp_path):
    from frontier.search import export_point, run_study

    # pareto: only the Pareto trials keep their weights, also after a resume moves the front.
    out = run_study(study_spec("pareto", 4), run_dir=tmp_path, track=False)
    assert out.count("complete") == 4, [r.error for r in out.trials]
    front = {r.number for r in out.pareto}
    assert front and len(front) < 4 and kept(tmp_path, "keep-pareto") == front
    out = run_study(study_spec("pareto", 7), run_dir=tmp_path, track=False)
    assert out.count("complete") == 7 and kept(tmp_path, "keep-pareto") == {r.number for r in out.pareto}
    doc = export_point("keep-pareto", out.storage, None)
    assert doc["checkpoint"] == str(tmp_path.resolve() / "trials" / "keep-pareto" / str(doc["trial"]))
    summary = write_hf_checkpoint(doc, tmp_path / "hf")
    assert summary["architecture"] in ("LlamaForCausalLM", "Qwen2MoeForCausalLM")
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "hf").config.vocab_size == 256

    # all: every finished trial keeps its weights; none: nothing is written and exports name no checkpoint.
    out = run_study(study_spec("all", 3), run_dir=tmp_path, track=False)
    assert kept(tmp_path, "keep-all") == {r.number for r in out.trials if r.state == "complete"} == {0, 1, 2}
    out = run_study(study_spec("none", 2), run_dir=tmp_path, track=False)
    assert not (tmp_path / "trials" / "keep-none").exists()
    assert export_point("keep-none", out.storage, None)["checkpoint"] is None
