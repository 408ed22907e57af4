"""Joint ``lm-train`` studies: the candidate trains, then a copy is compressed with its bits/sparsity values
and evaluated compressed at every evaluation."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

import frontier.evaluators._lm_train  # noqa: F401  (registers lm-train)
from frontier import kernels
from frontier.evaluators import EvalContext, make_evaluator
from frontier.evaluators._lm_train import LMTrain
from frontier.spaces import Candidate, compression_recipe, spec_from_dict
from tests._consumer import run_consumer
from tests.evaluators.test_lm_train import TINY  # the same few-step training as the plain lm-train tests

LM = {"layers": [1, 2], "hidden": [32], "head_dim": [8, 16], "ffn_ratio": [1, 2], "expert_ffn": [16]}
ARCH = {
    **{"lm.depth": 2, "lm.hidden": 32},
    **{"lm.head_dim_1": 16, "lm.experts_1": 4, "lm.top_k_1": 2, "lm.expert_ffn_1": 16},
    **{"lm.shared_expert_1": True, "lm.head_dim_2": 16, "lm.experts_2": 0, "lm.ffn_ratio_2": 1},
}
LM_DENSE = {"layers": [1, 2], "hidden": [32], "head_dim": [8, 16], "ffn_ratio": [2]}
DENSE_ARCH = {"lm.depth": 2, "lm.hidden": 32, "lm.head_dim_1": 8, "lm.ffn_ratio_1": 2}
DENSE_ARCH |= {"lm.head_dim_2": 8, "lm.ffn_ratio_2": 2}
COMPRESSION = {"q.layer_0": 4, "q.layer_1": 4, "s.blocks.0.proj": 0.5, "s.blocks.1.proj": 0.25}


def spec(*, compress: bool = True, depth_of: str | None = "lm", backend: str = "native") -> dict[str, Any]:
    def alloc(name: str, family: str, targets: list[str], **extra: Any) -> dict[str, Any]:
        options = {"num_layers": 2, "layout": "tiny_lm", "targets": targets, **extra}
        if depth_of is not None:
            options["depth_of"] = depth_of
        return {"kind": "family", "name": name, "family": family, "options": options}

    space: list[dict[str, Any]] = [{"kind": "family", "name": "lm", "family": "moe", "options": LM}]
    if compress:
        space += [
            alloc("q", "bits", ["blocks.*.*"], choices=[4, 8]),
            alloc("s", "sparsity", ["blocks.*.proj"], kind="wanda", group_by="none"),
        ]
    return {
        "name": "joint",
        "evaluator": {"kind": "lm-train", "options": {**TINY, "backend": backend}},
        "space": space,
        "objectives": [{"name": "perplexity", "direction": "minimize"}],
    }


def bound(data: dict[str, Any]) -> LMTrain:
    ev = make_evaluator("lm-train", data["evaluator"]["options"])
    assert isinstance(ev, LMTrain)
    ev.bind_spec(spec_from_dict(data))
    ev.ensure_setup()
    return ev


def test_joint_candidate_trains_and_reports_compressed_metrics() -> None:
    joint, dense = bound(spec()), bound(spec(compress=False))
    history: list[tuple[int, dict[str, float]]] = []
    context = EvalContext(seed=0, reporter=lambda s, m: history.append((s, m)) or True)
    out = joint.evaluate(Candidate({**ARCH, **COMPRESSION}), context)
    plain = dense.evaluate(Candidate(ARCH), EvalContext(seed=0))

    assert (
        set(out)
        == set(joint.metrics())
        == set(plain)
        | {
            "perplexity_dense",
            "val_loss_dense",
            "size_mb",
            "avg_bits",
            "sparsity",
        }
    )
    assert set(plain) == set(dense.metrics())  # a spec without compression reports what it always did
    # training is untouched by the joint path: the dense figure is the plain study's, same seed
    assert out["perplexity_dense"] == pytest.approx(plain["perplexity"], rel=1e-6)
    assert out["perplexity"] != out["perplexity_dense"]  # 4-bit weights and pruned projections change it
    assert math.isfinite(out["perplexity"]) and out["val_loss"] == pytest.approx(math.log(out["perplexity"]))
    assert out["avg_bits"] == 4.0  # every allocated module at the sampled 4 bits
    # wanda 0.5 and 0.25 of the two 32x32 projections, over qkv (3 x 32 x 32) and proj in both layers
    assert out["sparsity"] == pytest.approx((0.5 + 0.25) * 1024 / (2 * 4 * 1024))
    model, _ = joint.build(Candidate(ARCH))
    assert out["size_mb"] < kernels.model_size_bytes(model) / 1e6  # the packed model is really smaller
    # every rung sees the compressed objectives too
    assert [s for s, _ in history] == [3]
    assert {"perplexity_dense", "size_mb", "avg_bits"} <= set(history[0][1])


def test_absent_layer_value_is_rejected_at_evaluation() -> None:
    ev = bound(spec())
    shallow = {k: v for k, v in ARCH.items() if not k.endswith("_2")} | {"lm.depth": 1}
    with pytest.raises(ValueError, match=r"parameter 'q\.layer_1' allocates layer 1 .*has 1 layers"):
        ev.evaluate(Candidate({**shallow, **COMPRESSION}), EvalContext(seed=0))


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (spec(depth_of=None), r"lm-train: family 'q' \(bits\) must set 'depth_of: lm'.*Got depth_of=None"),
        (spec(backend="auto"), r"bits/sparsity families .* need backend 'native'. Got backend='auto'"),
    ],
)
def test_joint_spec_errors(data: dict[str, Any], match: str) -> None:
    ev = make_evaluator("lm-train", data["evaluator"]["options"])
    with pytest.raises(ValueError, match=match):
        ev.bind_spec(spec_from_dict(data))


def test_non_native_modules_are_rejected() -> None:
    data = spec()
    data["space"][1]["options"] = {"modules": ["blocks.0.qkv", "blocks.0.ffn.router"], "targets": ["**"]}
    data["space"][1]["options"]["depth_of"] = "lm"
    ev = make_evaluator("lm-train", TINY)
    with pytest.raises(
        ValueError, match=r"targets \['blocks\.0\.ffn\.router'\], which are not Linear modules"
    ):
        ev.bind_spec(spec_from_dict(data))


LOAD = r"""
import importlib.util, json, sys
import torch, transformers
assert importlib.util.find_spec("frontier") is None
ids = torch.tensor(json.loads(sys.argv[2]))
model = transformers.AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
with torch.inference_mode():
    print(json.dumps(model(input_ids=ids).logits.tolist()))
"""


@pytest.mark.integration  # a subprocess in the consumer venv
def test_joint_trial_exports_a_compressed_transformers_checkpoint(tmp_path: Path) -> None:
    import torch

    from frontier.evaluators._lm_export import load_trial_model, save_trial_checkpoint, write_joint_checkpoint

    data = spec()
    data["space"][0] = {"kind": "family", "name": "lm", "family": "nas", "options": LM_DENSE}
    data["evaluator"]["options"] = {**TINY, "keep_weights": "all"}
    data["space"][2]["options"]["targets"] = ["blocks.*.*"]  # Wanda on the fused qkv too
    study = spec_from_dict(data)
    ev = bound(data)
    params = {**DENSE_ARCH, "q.layer_0": 4, "q.layer_1": 8, "s.blocks.0.qkv": 0.25, "s.blocks.0.proj": 0.5}
    params |= {"s.blocks.1.qkv": 0, "s.blocks.1.proj": 0.25}
    ev.evaluate(Candidate(params), EvalContext(seed=0, workdir=tmp_path / "trial"))
    doc = {  # what `frontier export` writes for the point (search._results.export_point)
        "evaluator": data["evaluator"],
        "params": params,
        "checkpoint": str(tmp_path / "trial"),
        "provenance": {"spec": study.to_dict()},
        "recipe": compression_recipe(study, params).to_dict(),
    }
    summary = write_joint_checkpoint(doc, tmp_path / "out")
    assert summary["architecture"] == "LlamaForCausalLM" and summary["avg_bits"] == 6.0
    assert summary["bytes_after"] < summary["bytes_before"]
    assert "model.layers.0.self_attn.k_proj" in summary["recipe"]["entries"]
    # the written directory reproduces the study's compressed model: same codes, same Wanda masks
    trial = load_trial_model(doc)
    native = ev._joint(Candidate(params), trial.arch).compress(trial.model, device="cpu")
    reloaded = kernels.load_pretrained_compressed(tmp_path / "out")
    ids = ev.val_windows[:2, :-1]
    with torch.inference_mode():
        expected = native(ids)[0]
        diff = (expected - reloaded(input_ids=ids).logits).abs().max()
    assert float(diff) <= 1e-5
    # stock transformers (a venv without Frontier) loads it, with the same logits
    proc = run_consumer(LOAD, str(tmp_path / "out"), json.dumps(ids.tolist()))
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = torch.tensor(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert float((got - expected).abs().max()) <= 1e-4

    # per-layer head counts: no transformers class expresses the model
    uneven = {**params, "lm.head_dim_2": 16}
    model, _ = ev.build(Candidate(uneven))
    save_trial_checkpoint(model, ev.architecture(Candidate(uneven)), tmp_path / "uneven", llama=False)
    with pytest.raises(
        ValueError, match=r"write_joint_checkpoint: this trial's architecture has no transformers"
    ):
        write_joint_checkpoint({**doc, "checkpoint": str(tmp_path / "uneven")}, tmp_path / "out2")
    with pytest.raises(ValueError, match=r"must hold the 'recipe' of a joint lm-train study"):
        write_joint_checkpoint({**doc, "recipe": None}, tmp_path / "out3")
    # a point whose allocation compresses nothing (all sparsities 0, no bits family) is the dense model
    from frontier.services._handoff import apply_document
    from frontier.spaces import DecodedRecipe

    dense = apply_document({**doc, "recipe": DecodedRecipe({}).to_dict()}, tmp_path / "dense")
    assert dense["architecture"] == "LlamaForCausalLM" and "joint" not in dense
    assert "quantization_config" not in json.loads((tmp_path / "dense" / "config.json").read_text())
