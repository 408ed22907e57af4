"""Joint ``lm-train`` studies: the candidate trains, then a copy is compressed with its bits/sparsity values
and evaluated compressed at every evaluation."""

from __future__ import annotations

import math
from typing import Any

import pytest

import frontier.evaluators._lm_train  # noqa: F401  (registers lm-train)
from frontier import kernels
from frontier.evaluators import EvalContext, make_evaluator
from frontier.evaluators._lm_train import LMTrain
from frontier.spaces import Candidate, spec_from_dict

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
LM = {"layers": [1, 2], "hidden": [32], "head_dim": [8, 16], "ffn_ratio": [1, 2], "expert_ffn": [16]}
ARCH = {
    **{"lm.depth": 2, "lm.hidden": 32},
    **{"lm.head_dim_1": 16, "lm.experts_1": 4, "lm.top_k_1": 2, "lm.expert_ffn_1": 16},
    **{"lm.shared_expert_1": True, "lm.head_dim_2": 16, "lm.experts_2": 0, "lm.ffn_ratio_2": 1},
}
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
