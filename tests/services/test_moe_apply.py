"""``frontier apply`` of expert-pruning exports (``hf-moe-perplexity``, with and without bits) and the
dispatch of lm-train exports that carry a recipe: what is written, what the CLI says about loading it, and
that stock transformers (a venv without Frontier) reloads it with the trial's logits."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from typer.testing import CliRunner

from frontier.evaluators import EvalContext, for_spec
from frontier.evaluators._hf_moe import HFMoEPerplexity
from frontier.kernels.moe import load_pruned_moe
from frontier.search._results import compression_export
from frontier.services._cli import app
from frontier.spaces import Candidate, spec_from_dict
from tests._consumer import run_consumer

# argv: ids (JSON), result.pt, then "path|remote" pairs; remote = 1 loads with trust_remote_code=True
LOAD = r"""
import importlib.util, json, sys
import torch, transformers
assert importlib.util.find_spec("frontier") is None
ids = torch.tensor(json.loads(sys.argv[1]))
out = {}
for item in sys.argv[3:]:
    path, remote = item.rsplit("|", 1)
    model = transformers.AutoModelForCausalLM.from_pretrained(path, trust_remote_code=remote == "1").eval()
    with torch.inference_mode():
        out[path] = model(input_ids=ids, use_cache=False).logits
    out[path + ":class"] = type(model).__name__
torch.save(out, sys.argv[2])
"""


def _spec(workdir: Path, *, group_by: str, bits: bool) -> dict[str, Any]:
    """The evaluator's own tiny study (a 2-layer, 4-expert, top-2 Qwen2-MoE), experts grouped as asked,
    with its 4/8-bit family over attention and the shared expert or without it."""
    spec = HFMoEPerplexity.tiny_spec(workdir)
    spec["space"][0]["options"]["group_by"] = group_by
    if not bits:
        spec["space"] = spec["space"][:1]
    return spec


def _export(spec_dict: dict[str, Any], params: dict[str, Any], trial: int, metrics: dict[str, float]) -> dict:
    """The document `frontier export` writes for a trial (search.export_point without a stored study)."""
    spec = spec_from_dict(spec_dict)
    return {
        "frontier_export": 1,
        "study": spec.name,
        "trial": trial,
        "evaluator": {"kind": spec.evaluator.kind, "options": dict(spec.evaluator.options)},
        "params": params,
        "metrics": metrics,
        "provenance": {"spec": spec.to_dict()},
        "checkpoint": None,
        **compression_export(spec, params),
    }


def _apply(doc: dict[str, Any], tmp_path: Path, name: str, *extra: str) -> tuple[Any, Path]:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    out = tmp_path / name
    return CliRunner().invoke(app, ["apply", str(path), "-o", str(out), *extra]), out


@pytest.mark.slow
@pytest.mark.integration
def test_pruned_moe_exports_apply_and_reload_with_the_trials_logits(tmp_path: Path) -> None:
    ids = torch.randint(0, 40, (2, 20), generator=torch.Generator().manual_seed(4))
    cases = {  # name: (group_by, bits, params, tolerance against the trial's model)
        "uniform": ("all", False, {"experts.all": 2}, 1e-5),
        "per-layer": ("layer", False, {"experts.layer_0": 2, "experts.layer_1": 4}, 1e-5),
        "uniform-w4": ("all", True, {"experts.all": 2, "q.all": 4}, 1e-4),
        "per-layer-w4": ("layer", True, {"experts.layer_0": 2, "experts.layer_1": 4, "q.all": 4}, 1e-4),
    }
    expected: dict[str, torch.Tensor] = {}
    outputs: dict[str, Any] = {}
    measured: dict[str, float] = {}
    for name, (group_by, bits, params, _) in cases.items():
        spec = _spec(tmp_path / "model", group_by=group_by, bits=bits)
        ev = for_spec(spec_from_dict(spec))
        assert isinstance(ev, HFMoEPerplexity)
        if name == "uniform":  # the trial's own figures, to read the re-measured directory against
            measured = ev.evaluate(Candidate(params), EvalContext(seed=0))
        doc = _export(spec, params, 7, measured if name == "uniform" else {})
        assert list(doc)[-2:] == (["experts", "recipe"] if bits else ["checkpoint", "experts"])
        res, out = _apply(doc, tmp_path, name, *([] if name == "uniform" else ["--no-measure"]))
        assert res.exit_code == 0, res.output
        outputs[name] = (" ".join(res.output.split()), out)  # console lines wrap at 80 columns
        with torch.inference_mode():
            expected[name] = ev.build(Candidate(params))(input_ids=ids, use_cache=False).logits

    text, out = outputs["uniform"]
    assert "experts per MoE layer 0: 4 -> 2, 1: 4 -> 2; top-k 2 -> 2" in text
    assert "a stock transformers checkpoint" in text and "NOT a stock" not in text
    assert f"transformers.AutoModelForCausalLM.from_pretrained('{out}')" in text
    assert json.loads((out / "config.json").read_text())["num_experts"] == 2
    # the written directory, re-scored by the study's evaluator: the trial's held-out perplexity
    ppl = f"{measured['perplexity']:.4g}"
    assert f"trial 7 measured: perplexity {ppl}" in text
    assert f"the directory, measured as the study did: perplexity {ppl}" in text
    assert "latency_ms" in text.split("measured as the study did:")[1].split("files:")[0]

    flat, out = outputs["per-layer"]
    assert "experts per MoE layer 0: 4 -> 2, 1: 4 -> 4" in flat
    assert "NOT a stock checkpoint" in flat and "needs Frontier's loader" in flat
    assert f"frontier.kernels.moe.load_pruned_moe('{out}')" in flat
    assert f"from_pretrained('{out}', trust_remote_code=True)" in flat
    config = json.loads((out / "config.json").read_text())
    assert config["num_experts"] == 4 and config["frontier_moe"]["experts_per_layer"] == {"0": 2, "1": 4}
    with torch.inference_mode():
        reloaded = load_pruned_moe(out)(input_ids=ids, use_cache=False).logits
    assert float((reloaded - expected["per-layer"]).abs().max()) <= 1e-5

    text, out = outputs["uniform-w4"]
    assert "compressed with the trial's recipe: avg bits 4.00" in text
    assert "reloaded from the directory: logits differ from the trial's model by at most 0" in text
    assert "(pip install compressed-tensors)" in text
    assert f"transformers.AutoModelForCausalLM.from_pretrained('{out}')" in text
    assert json.loads((out / "config.json").read_text())["quantization_config"]["format"] == "pack-quantized"

    result = tmp_path / "consumer.pt"
    dirs = [f"{outputs[n][1]}|{int(n.startswith('per-layer'))}" for n in cases]
    proc = run_consumer(LOAD, json.dumps(ids.tolist()), str(result), *dirs)
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = torch.load(result, weights_only=False)
    for name, (_, _, _, tolerance) in cases.items():
        path = str(outputs[name][1])
        assert float((got[path] - expected[name]).abs().max()) <= tolerance, name
    assert got[f"{outputs['uniform'][1]}:class"] == "Qwen2MoeForCausalLM"
    assert got[f"{outputs['per-layer'][1]}:class"] == "FrontierPrunedQwen2MoeForCausalLM"
    assert got[f"{outputs['per-layer-w4'][1]}:class"] == "FrontierPrunedQwen2MoeForCausalLM"


def test_experts_export_without_its_study_or_edited_is_refused(tmp_path: Path) -> None:
    spec = _spec(tmp_path / "model", group_by="all", bits=False)
    doc = _export(spec, {"experts.all": 2}, 3, {})
    bare = {k: v for k, v in doc.items() if k not in ("provenance", "evaluator")}
    res, out = _apply(bare, tmp_path, "bare")
    assert res.exit_code == 2
    assert "trial 3 of study 'tiny-moe-experts': the export carries an expert plan" in " ".join(
        res.output.split()
    )
    assert not out.exists()
    edited = copy.deepcopy(doc)
    edited["experts"]["experts_per_layer"] = {"0": 4, "1": 4}
    res, out = _apply(edited, tmp_path, "edited")
    assert res.exit_code == 2
    flat = " ".join(res.output.split())
    assert "is not what its params decode to" in flat and "the document was edited" in flat
    assert not out.exists()


def test_lm_train_export_with_a_recipe_is_written_from_its_trial_never_minilm(tmp_path: Path) -> None:
    # an lm-train export (joint study: architecture + bits) is dispatched on its evaluator kind: here it
    # kept no weights, so the answer is how to keep them, not a compressed packaged MiniLM
    recipe = {"version": 1, "entries": [["blocks.0.qkv", [{"type": "WeightOnlyQuantConfig", "bits": 4}]]]}
    doc = {
        "study": "joint",
        "trial": 5,
        "evaluator": {"kind": "lm-train", "options": {}},
        "params": {},
        "checkpoint": None,
        "recipe": recipe,
    }
    res, out = _apply(doc, tmp_path, "joint")
    assert res.exit_code == 2, res.output
    assert "trial 5 of study 'joint' kept no weights" in res.output
    assert "keep_weights: pareto" in res.output
    assert not out.exists()


def test_export_documents_carry_the_expert_plan_and_keep_others_unchanged(tmp_path: Path) -> None:
    spec = spec_from_dict(_spec(tmp_path / "model", group_by="layer", bits=True))
    params = {"experts.layer_0": 2, "experts.layer_1": 4, "q.all": 8}
    extra = compression_export(spec, params)
    assert extra["experts"] == {
        "num_experts": 4,
        "experts_per_layer": {"0": 2, "1": 4},
        "top_k_per_layer": None,
    }
    assert sorted(extra) == ["experts", "recipe"]
    bits_only = spec_from_dict({**spec.to_dict(), "space": [spec.to_dict()["space"][1]]})
    assert list(compression_export(bits_only, {"q.all": 8})) == ["recipe"]


@pytest.mark.integration
def test_joint_lm_train_export_applies_as_a_compressed_checkpoint_of_its_trial(tmp_path: Path) -> None:
    # a joint study (nas + 4/8 bits + Wanda) whose trial kept its weights: apply writes the trained model
    # compressed with the trial's recipe (evaluators._lm_export.write_joint_checkpoint), and the directory,
    # read back on Frontier's packed kernels, scores the trial's compressed perplexity
    from frontier.evaluators import make_evaluator

    tiny = {"steps": 6, "eval_every": 3, "seq_len": 32, "batch_size": 4, "eval_batches": 2}
    tiny |= {"latency_context": 8, "prefill_seq": 16, "latency_time_cap_s": 0.05, "keep_weights": "all"}

    def alloc(name: str, family: str, **extra: Any) -> dict[str, Any]:
        options = {"num_layers": 2, "layout": "tiny_lm", "targets": ["blocks.*.*"], "depth_of": "lm", **extra}
        return {"kind": "family", "name": name, "family": family, "options": options}

    arch = {"layers": [2, 2], "hidden": [32], "head_dim": [8], "ffn_ratio": [2], "per_layer": False}
    spec = {
        "name": "joint",
        "evaluator": {"kind": "lm-train", "options": tiny},
        "space": [
            {"kind": "family", "name": "lm", "family": "nas", "options": arch},
            alloc("q", "bits", choices=[4, 8], group_size=16),
            alloc("s", "sparsity", kind="wanda", group_by="all"),
        ],
        "objectives": [{"name": "perplexity", "direction": "minimize"}],
    }
    study = spec_from_dict(spec)
    ev = make_evaluator("lm-train", tiny)
    ev.bind_spec(study)
    ev.ensure_setup()
    params = {"lm.depth": 2, "lm.hidden": 32, "lm.head_dim": 8, "lm.ffn_ratio": 2, "q.layer_0": 4}
    params |= {"q.layer_1": 8, "s.all": 0.25}
    metrics = ev.evaluate(Candidate(params), EvalContext(seed=0, workdir=tmp_path / "trial"))
    doc = _export(spec, params, 4, metrics) | {"checkpoint": str(tmp_path / "trial")}
    assert doc["recipe"]

    res, out = _apply(doc, tmp_path, "joint")
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert f"wrote {out}: LlamaForCausalLM" in text and "avg bits 6" in text
    ppl = f"{metrics['perplexity']:.4g}"
    assert f"trial 4 measured: perplexity {ppl}" in text
    assert f"the directory, measured as the study did: perplexity {ppl}" in text
    assert f"frontier.kernels.load_pretrained_compressed('{out}')" in text
    assert json.loads((out / "config.json").read_text())["quantization_config"]["format"] == "pack-quantized"
