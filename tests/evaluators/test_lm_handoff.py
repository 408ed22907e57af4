"""The NAS hand-off end to end: an ``lm-train`` trial that kept its weights → ``frontier apply`` of its export
→ a Llama checkpoint → compressed to mixed 4/8-bit compressed-tensors → loaded by stock transformers in a
venv that cannot import Frontier or numba, with Frontier's compressed model's logits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from frontier.evaluators import EvalContext, make_evaluator
from frontier.kernels import CompressionRecipe, WeightOnlyQuantConfig, load_pretrained_compressed
from frontier.services._cli import app
from frontier.services._handoff import apply_document
from frontier.spaces import Candidate, spec_from_dict
from tests._consumer import run_consumer

pytestmark = pytest.mark.integration

TINY = {
    "steps": 6,
    "eval_every": 3,
    "seq_len": 32,
    "batch_size": 4,
    "eval_batches": 2,
    "latency_context": 8,
    "prefill_seq": 16,
    "latency_time_cap_s": 0.02,
    "keep_weights": "all",
}
ARCH = {"lm.depth": 2, "lm.hidden": 64, "lm.head_dim": 16, "lm.ffn_ratio": 2}
FAMILY = {"layers": [2, 2], "hidden": [64], "head_dim": [16], "ffn_ratio": [2], "per_layer": False}

LOAD = r"""
import importlib.util, json, sys
import torch, transformers
assert importlib.util.find_spec("frontier") is None and importlib.util.find_spec("numba") is None
ids = torch.tensor(json.loads(sys.argv[2]))
model = transformers.AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
with torch.inference_mode():
    print(json.dumps(model(input_ids=ids).logits.tolist()))
"""


def test_lm_train_trial_to_compressed_checkpoint_that_stock_transformers_loads(tmp_path: Path) -> None:
    spec = {  # the study the export came from, as `frontier export` records it
        "name": "nas",
        "evaluator": {"kind": "lm-train", "options": TINY},
        "space": [{"kind": "family", "name": "lm", "family": "nas", "options": FAMILY}],
        "objectives": [{"name": "perplexity", "direction": "minimize"}],
    }
    lm = make_evaluator("lm-train", TINY)
    lm.bind_spec(spec_from_dict(spec))  # its nas family decodes the candidate
    lm.ensure_setup()
    metrics = lm.evaluate(Candidate(ARCH), EvalContext(seed=0, workdir=tmp_path / "trial"))
    export = tmp_path / "point.yaml"
    doc = {
        "study": "nas",
        "trial": 3,
        "params": ARCH,
        "checkpoint": str(tmp_path / "trial"),
        "metrics": metrics,
        "provenance": {"spec": spec},
    }
    export.write_text(yaml.safe_dump(doc))

    res = CliRunner().invoke(app, ["apply", str(export), "-o", str(tmp_path / "llama")])
    assert res.exit_code == 0, res.output
    assert "LlamaForCausalLM" in res.output and "AutoModelForCausalLM.from_pretrained" in res.output
    assert f"trial 3 measured: perplexity {metrics['perplexity']:.4g}" in res.output
    # re-measured on the written checkpoint with the study's evaluator: the same held-out perplexity
    assert f"the directory, measured as the study did: perplexity {metrics['perplexity']:.4g}" in res.output
    assert "latency_ms" in res.output.split("measured as the study did:")[1].splitlines()[0]

    recipe = CompressionRecipe(
        {
            "model.layers.*.self_attn.*": [WeightOnlyQuantConfig(4, group_size=16)],
            "model.layers.*.mlp.*": [WeightOnlyQuantConfig(8)],
        }
    ).to_dict()
    summary = apply_document({"recipe": recipe}, tmp_path / "w48", model=tmp_path / "llama")
    assert summary["causal_lm"] and summary["reload_max_abs_diff"] == 0.0
    assert summary["disk_bytes"] < summary["base_disk_bytes"]
    groups = json.loads((tmp_path / "w48" / "config.json").read_text())["quantization_config"][
        "config_groups"
    ]
    assert sorted(g["weights"]["num_bits"] for g in groups.values()) == [4, 8]

    ids = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(3))
    frontier_model = load_pretrained_compressed(tmp_path / "w48")
    with torch.inference_mode():
        expected = frontier_model(input_ids=ids).logits
    proc = run_consumer(LOAD, str(tmp_path / "w48"), json.dumps(ids.tolist()))
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = torch.tensor(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert float((got - expected).abs().max()) <= 1e-4


def test_apply_of_a_trial_that_kept_no_weights_says_how_to_keep_them(tmp_path: Path) -> None:
    export = tmp_path / "point.yaml"
    export.write_text(yaml.safe_dump({"study": "nas", "trial": 2, "checkpoint": None, "metrics": {}}))
    res = CliRunner().invoke(app, ["apply", str(export), "-o", str(tmp_path / "out")])
    assert res.exit_code == 2
    assert "trial 2 of study 'nas' kept no weights" in res.output
    assert "keep_weights: pareto" in res.output
    assert not (tmp_path / "out").exists()
