"""An exported Pareto point's applied model in the MLflow Model Registry (real study, MLflow store and
transformers): MLflow's own ``pyfunc.load_model("models:/NAME@ALIAS")`` loads it, in a fresh process that
imports no Frontier, with the outputs transformers gives on the directory."""

from __future__ import annotations

import json
import os
import string
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from frontier.search import export_point, log_model_dir, register_export, run_study
from frontier.search._mlflow import version_tags
from frontier.spaces import spec_from_dict

pytestmark = pytest.mark.integration

IDS = [[2, 5, 6, 7, 3], [2, 8, 9, 10, 3]]
RAGGED = [[2, 5, 6, 3], [2, 8, 3]]
TEXTS = ["abc def", "hello"]


def _bert_dir(path: Path) -> Path:
    """A tiny seeded BertModel with a character-level WordPiece tokenizer, saved as transformers does."""
    import torch
    import transformers

    chars = string.ascii_lowercase + string.digits
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars)]
    config = transformers.BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=32,
    )
    torch.manual_seed(0)
    transformers.BertModel(config).eval().save_pretrained(path)
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    transformers.BertTokenizerFast(vocab_file=str(path / "vocab.txt")).save_pretrained(path)
    return path


def _llama_dir(path: Path) -> Path:
    """A tiny seeded LlamaForCausalLM (no tokenizer: it takes token ids only)."""
    import torch
    import transformers

    config = transformers.LlamaConfig(
        vocab_size=48,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    torch.manual_seed(1)
    transformers.LlamaForCausalLM(config).eval().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory, ray_session, make_table, make_spec):
    """A real 6-trial study run with MLflow tracking: (run dir, storage URL, tracking URI)."""
    tmp = tmp_path_factory.mktemp("registry")
    spec = spec_from_dict(make_spec(make_table(tmp / "t.csv"), **{"search.n_trials": 6}))
    outcome = run_study(spec, run_dir=tmp / "run", sync_interval_s=60)
    assert outcome.tracking_uri is not None and outcome.pareto
    return tmp, outcome.storage, outcome.tracking_uri, outcome.pareto[0].number


@pytest.fixture(scope="module")
def registered(study):
    """The tiny BERT registered as 'tiny-bert'@production and the tiny Llama as 'tiny-llama'@staging."""
    tmp, storage, tracking, number = study
    bert = _bert_dir(tmp / "bert")
    llama = _llama_dir(tmp / "llama")
    doc = export_point("toy", storage, f"trial={number}", tracking)
    # a compression study's export carries its recipe; the toy study has none, so give this one a recipe
    other = (number + 1) % 6
    recipe_doc = {**doc, "trial": other, "recipe": {"default": {"bits": 4, "group_size": 32}}}
    bert_version = register_export(
        doc, name="tiny-bert", storage_url=storage, tracking_uri=tracking, model_dir=bert, alias="production"
    )
    llama_version = register_export(
        recipe_doc,
        name="tiny-llama",
        storage_url=storage,
        tracking_uri=tracking,
        model_dir=llama,
        alias="staging",
    )
    return {
        "doc": doc,
        "recipe_doc": recipe_doc,
        "bert": bert,
        "llama": llama,
        "tracking": tracking,
        "storage": storage,
        "tmp": tmp,
        "versions": (bert_version, llama_version),
    }


LOADER = """
import json, sys
import mlflow, numpy as np
import pandas as pd
mlflow.set_tracking_uri(sys.argv[1])
bert = mlflow.pyfunc.load_model("models:/tiny-bert@production")
llama = mlflow.pyfunc.load_model("models:/tiny-llama@staging")
ids, ragged, texts = json.loads(sys.argv[3]), json.loads(sys.argv[4]), json.loads(sys.argv[5])
np.savez(
    sys.argv[2],
    bert_ids=bert.predict(ids),
    bert_frame=bert.predict(pd.DataFrame({"input_ids": ids})),
    bert_array=bert.predict(np.array(ids)),
    bert_ragged=bert.predict(ragged),
    bert_texts=bert.predict(texts),
    llama_ids=llama.predict(ids),
)
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "frontier")))
"""


@pytest.fixture(scope="module")
def loaded(registered):
    """What a fresh Python (isolated, outside the checkout) gets from MLflow's own loader."""
    tmp = registered["tmp"]
    out = tmp / "predictions.npz"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_TRACKING_URI")}
    proc = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            LOADER,
            registered["tracking"],
            str(out),
            json.dumps(IDS),
            json.dumps(RAGGED),
            json.dumps(TEXTS),
        ],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    frontier_modules = json.loads(proc.stdout.strip().splitlines()[-1])
    return dict(np.load(out)), frontier_modules


def _reference(path: Path, ids: list[list[int]], *, causal: bool = False, mask=None) -> np.ndarray:
    import torch
    import transformers

    auto = transformers.AutoModelForCausalLM if causal else transformers.AutoModel
    model = auto.from_pretrained(path).eval()
    kwargs = {"attention_mask": torch.tensor(mask)} if mask is not None else {}
    with torch.inference_mode():
        out = model(input_ids=torch.tensor(ids), **kwargs)
    return (out.logits if causal else out.last_hidden_state).numpy()


def test_mlflow_loads_the_alias_in_a_process_without_frontier(loaded):
    outputs, frontier_modules = loaded
    assert frontier_modules == [], "the logged model's code imports no Frontier"
    assert set(outputs) >= {"bert_ids", "llama_ids"}


def test_bert_outputs_match_transformers_on_the_directory(registered, loaded):
    import transformers

    outputs, _ = loaded
    bert = registered["bert"]
    ref = _reference(bert, IDS)
    assert outputs["bert_ids"].dtype == np.float32 and outputs["bert_ids"].shape == (2, 5, 32)
    for key in ("bert_ids", "bert_frame", "bert_array"):
        np.testing.assert_allclose(outputs[key], ref, atol=1e-5, err_msg=key)
    # ragged rows are right-padded with the pad id and masked: the real positions match unpadded runs
    padded = [r + [0] * (4 - len(r)) for r in RAGGED]
    mask = [[1] * len(r) + [0] * (4 - len(r)) for r in RAGGED]
    np.testing.assert_allclose(outputs["bert_ragged"], _reference(bert, padded, mask=mask), atol=1e-5)
    np.testing.assert_allclose(outputs["bert_ragged"][1, :3], _reference(bert, [RAGGED[1]])[0], atol=1e-5)
    enc = transformers.AutoTokenizer.from_pretrained(bert)(TEXTS, padding=True)
    np.testing.assert_allclose(
        outputs["bert_texts"], _reference(bert, enc["input_ids"], mask=enc["attention_mask"]), atol=1e-5
    )


def test_causal_lm_returns_logits(registered, loaded):
    outputs, _ = loaded
    ref = _reference(registered["llama"], IDS, causal=True)
    assert outputs["llama_ids"].shape == (2, 5, 48), "logits over the 48-token vocabulary"
    np.testing.assert_allclose(outputs["llama_ids"], ref, atol=1e-5)


def test_version_tags_and_links_to_the_trial_and_study_runs(registered):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(registered["tracking"])
    doc, storage = registered["doc"], registered["storage"]
    assert registered["versions"] == ("1", "1")
    version = client.get_model_version_by_alias("tiny-bert", "production")
    assert str(version.version) == "1"
    tags = version.tags
    assert tags["frontier.study"] == "toy" and tags["frontier.trial"] == str(doc["trial"])
    assert tags["frontier.storage"] == storage and tags["frontier.selected_by"] == f"trial={doc['trial']}"
    for name, value in doc["objectives"].items():
        assert float(tags[f"objective.{name}"]) == pytest.approx(value, rel=1e-5)
    for name, value in doc["metrics"].items():
        assert float(tags[f"metric.{name}"]) == pytest.approx(value, rel=1e-5)
    assert "frontier.recipe" not in tags, "the toy study has no recipe"
    llama = client.get_model_version_by_alias("tiny-llama", "staging")
    assert json.loads(llama.tags["frontier.recipe"]) == registered["recipe_doc"]["recipe"]
    assert llama.tags["frontier.trial"] == str(registered["recipe_doc"]["trial"])

    # the version's run is the trial's child run, under the study's parent run; the model is its output
    run = client.get_run(version.run_id)
    assert run.data.tags["frontier.trial"] == str(doc["trial"])
    parent = client.get_run(run.data.tags["mlflow.parentRunId"])
    assert parent.data.tags["frontier.study"] == "toy" and parent.data.tags["frontier.kind"] == "study"
    assert version.source.startswith("models:/m-"), "the version's source is the logged model"
    model_id = version.source.removeprefix("models:/")
    logged = client.get_logged_model(model_id)
    assert logged.source_run_id == run.info.run_id
    assert logged.experiment_id == run.info.experiment_id
    assert logged.tags["frontier.output"] == "last_hidden_state"
    assert model_id in {o.model_id for o in run.outputs.model_outputs}
    assert run.info.status == "FINISHED", "logging the model does not reopen the trial's run"
    local = client.download_artifacts(run.info.run_id, "export/point.yaml", str(registered["tmp"]))
    assert yaml.safe_load(Path(local).read_text())["trial"] == doc["trial"]
    llama_model = client.get_logged_model(llama.source.removeprefix("models:/"))
    assert llama_model.tags["frontier.output"] == "logits"


def test_logged_model_lists_its_requirements_and_carries_the_directory(registered):
    import mlflow

    tracking = registered["tracking"]
    mlflow.set_tracking_uri(tracking)
    try:
        path = Path(mlflow.artifacts.download_artifacts("models:/tiny-bert@production"))
    finally:
        mlflow.set_tracking_uri(None)
    requirements = (path / "requirements.txt").read_text().split()
    assert {r.split("==")[0] for r in requirements} >= {"mlflow", "torch", "transformers"}
    assert not any("+" in r for r in requirements), "no local build tags such as +cpu"
    assert not any(r.startswith("frontier") for r in requirements)
    shipped = {p.name for p in (path / "artifacts").rglob("*")}
    assert {"config.json", "model.safetensors", "vocab.txt"} <= shipped
    code = (path / "_hf_pyfunc.py").read_text()
    assert "frontier" not in {
        line.split()[1].split(".")[0] for line in code.splitlines() if line.startswith(("import ", "from "))
    }


def test_a_second_registration_adds_a_version_and_moves_the_alias(registered):
    import mlflow
    from mlflow.tracking import MlflowClient

    before = (mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI"))
    version = register_export(
        registered["doc"],
        name="tiny-bert",
        storage_url=registered["storage"],
        tracking_uri=registered["tracking"],
        model_dir=registered["bert"],
        alias="production",
    )
    assert version == "2"
    assert (mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI")) == before, (
        "registering leaves the process's tracking URI as it was"
    )
    client = MlflowClient(registered["tracking"])
    assert str(client.get_model_version_by_alias("tiny-bert", "production").version) == "2"


def test_predict_rejects_text_without_a_tokenizer_and_bad_rows(registered):
    import mlflow

    mlflow.set_tracking_uri(registered["tracking"])
    try:
        llama = mlflow.pyfunc.load_model("models:/tiny-llama@staging")
    finally:
        mlflow.set_tracking_uri(None)
    with pytest.raises(ValueError, match="no tokenizer, so the input must be token ids"):
        llama.predict(["some text"])
    with pytest.raises(TypeError, match="row 1 of the input must be a list of int token ids"):
        llama.predict([[1, 2], [1.5, 2]])
    with pytest.raises(ValueError, match="at least one non-empty sequence"):
        llama.predict([[]])


@pytest.mark.parametrize(
    ("setup", "alias", "match"),
    [
        (lambda d: d / "missing", None, "must be an existing directory.*does not exist"),
        (lambda d: (d / "empty").mkdir() or d / "empty", None, "must hold a Hugging Face config.json"),
        (
            lambda d: (
                (d / "noweights").mkdir()
                or ((d / "noweights" / "config.json").write_text("{}") and d / "noweights")
            ),
            None,
            r"must hold weights \(model.safetensors",
        ),
        (lambda d: d / "bert", "v3", "the alias must be .* got 'v3'"),
        (lambda d: d / "bert", "pro duction", "the alias must be .* got 'pro duction'"),
    ],
)
def test_register_errors_name_the_model_directory_or_alias(registered, tmp_path, setup, alias, match):
    (tmp_path / "bert").symlink_to(registered["bert"])
    with pytest.raises(ValueError, match=match):
        register_export(
            registered["doc"],
            name="bad",
            storage_url=registered["storage"],
            tracking_uri=registered["tracking"],
            model_dir=setup(tmp_path),
            alias=alias,
        )


def test_register_errors_for_a_trial_or_study_without_a_run(registered):
    kwargs = {"name": "bad", "storage_url": registered["storage"], "model_dir": registered["bert"]}
    with pytest.raises(ValueError, match="trial 99 of study 'toy' has no MLflow run yet"):
        register_export({**registered["doc"], "trial": 99}, tracking_uri=registered["tracking"], **kwargs)
    with pytest.raises(ValueError, match="study 'nope' has no MLflow run in"):
        register_export({**registered["doc"], "study": "nope"}, tracking_uri=registered["tracking"], **kwargs)


def test_log_model_dir_alone_needs_no_registry(registered):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(registered["tracking"])
    version = client.get_model_version_by_alias("tiny-llama", "staging")
    info = log_model_dir(registered["llama"], run_id=version.run_id, tracking_uri=registered["tracking"])
    assert info.model_uri == f"models:/{info.model_id}"
    assert client.get_logged_model(info.model_id).source_run_id == version.run_id


def test_version_tags_sanitise_metric_keys_and_skip_non_numbers():
    doc = {
        "study": "s",
        "trial": 3,
        "objectives": {"acc": 0.5},
        "metrics": {"latency<=2": 1.25, "note": "text", "flag": True},
        "provenance": {"selected_by": "trial=3", "spec": {"name": "s"}},
    }
    tags = version_tags(doc, storage_url="sqlite:///x.db")
    assert tags["metric.latency_le_2"] == "1.25" and "metric.note" not in tags and "metric.flag" not in tags
    assert json.loads(tags["frontier.spec"]) == {"name": "s"}


# runs in a venv with stock torch, transformers, compressed-tensors and mlflow and no Frontier
CONSUMER = """
import json, sys
try:
    import frontier
except ImportError:
    pass
else:
    raise SystemExit("frontier is importable in the consumer venv")
import mlflow, numpy as np, torch, transformers
mlflow.set_tracking_uri(sys.argv[1])
ids = json.loads(sys.argv[4])
model = mlflow.pyfunc.load_model(sys.argv[2])
reference = transformers.AutoModel.from_pretrained(sys.argv[3]).eval()
with torch.inference_mode():
    expected = reference(input_ids=torch.tensor(ids)).last_hidden_state.numpy()
got = model.predict(ids)
quantized = sum(hasattr(m, "weight_scale") for m in reference.modules())
print(json.dumps({"max_abs_diff": float(np.abs(got - expected).max()), "shape": list(got.shape),
                  "quantized_modules": quantized}))
"""


@pytest.mark.slow
def test_a_compressed_directory_loads_through_mlflow_where_frontier_is_not_installed(registered, tmp_path):
    """What `promote` registers for a compression study: the point applied by the hand-off into a
    compressed-tensors directory, loaded by MLflow in a venv with compressed-tensors and no Frontier."""
    import mlflow

    from frontier.kernels import CompressionRecipe, WeightOnlyQuantConfig
    from frontier.services._handoff import apply_document
    from tests._consumer import PINS, run_consumer

    ffn = WeightOnlyQuantConfig(4, group_size=32)
    recipe = CompressionRecipe({"encoder.layer.*.intermediate.dense": ffn})
    doc = json.loads(json.dumps(registered["doc"]))
    doc["recipe"] = recipe.to_dict()
    doc["evaluator"]["options"]["model"] = str(registered["bert"])
    applied = tmp_path / "applied"
    apply_document(doc, applied)
    config = json.loads((applied / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "compressed-tensors"
    version = register_export(
        doc,
        name="tiny-bert-ct",
        storage_url=registered["storage"],
        tracking_uri=registered["tracking"],
        model_dir=applied,
        alias="production",
    )
    tags = mlflow.MlflowClient(registered["tracking"]).get_model_version("tiny-bert-ct", version).tags
    assert json.loads(tags["frontier.recipe"]) == json.loads(json.dumps(recipe.to_dict()))
    mlflow.set_tracking_uri(registered["tracking"])
    try:
        shipped = Path(mlflow.artifacts.download_artifacts("models:/tiny-bert-ct@production"))
    finally:
        mlflow.set_tracking_uri(None)
    ct_version = config["quantization_config"]["version"]
    assert f"compressed-tensors=={ct_version}" in (shipped / "requirements.txt").read_text().split()

    proc = run_consumer(
        CONSUMER,
        registered["tracking"],
        "models:/tiny-bert-ct@production",
        str(applied),
        json.dumps(IDS),
        pins=(*PINS, f"mlflow=={mlflow.__version__}"),
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["quantized_modules"] == 2, "transformers loads the two FFN up-projections compressed"
    assert result["shape"] == [2, 5, 32] and result["max_abs_diff"] <= 1e-5
