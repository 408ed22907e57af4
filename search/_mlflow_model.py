"""MLflow adapter for models: an applied Hugging Face model directory logged as an MLflow pyfunc model.

The directory (config.json, weights, tokenizer files; a compressed one with a compressed-tensors
``quantization_config``) becomes the artifact of a pyfunc "models from code" model whose code,
``_hf_pyfunc.py``, imports only mlflow, numpy, torch and transformers, so that
``mlflow.pyfunc.load_model("models:/NAME@ALIAS")`` loads it where Frontier is not installed. Pyfunc over the
transformers flavour because the flavour wraps a *pipeline*: an encoder whose product is its hidden states
(a sentence embedder) has no pipeline task that returns them unpooled, and the flavour re-saves the weights
through ``save_pretrained`` rather than keeping the applied directory's files as they are.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

LOGGED_MODEL_NAME = "model"
ARTIFACT = "hf_model"  # the key _hf_pyfunc.py reads the directory from
_CODE = Path(__file__).with_name("_hf_pyfunc.py")
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def model_output(config: dict[str, Any]) -> str:
    """What ``predict`` returns for a directory with this config.json: ``logits`` for a causal LM (its
    ``architectures`` names a ``...ForCausalLM``), else ``last_hidden_state``. Mirrors ``_hf_pyfunc``, which
    cannot be imported here (MLflow runs it as the model's code)."""
    causal = any(str(a).endswith("ForCausalLM") for a in config.get("architectures") or [])
    return "logits" if causal else "last_hidden_state"


def read_model_dir(model_dir: str | Path) -> dict[str, Any]:
    """The config.json of a Hugging Face model directory; ``ValueError`` naming what is missing."""
    path = Path(model_dir)
    if not path.is_dir():
        raise ValueError(
            f"the model directory must be an existing directory (a Hugging Face model: config.json and "
            f"weights); got '{path}', which {'is a file' if path.exists() else 'does not exist'}"
        )
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ValueError(
            f"the model directory '{path}' must hold a Hugging Face config.json; it has none. Pass the "
            "directory `frontier apply` (or save_pretrained) wrote"
        )
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{config_file} is not valid JSON: {exc}") from None
    if not any((path / w).is_file() for w in _WEIGHTS):
        raise ValueError(
            f"the model directory '{path}' must hold weights ({' or '.join(_WEIGHTS)}); it has none"
        )
    return config if isinstance(config, dict) else {}


def pip_requirements(config: dict[str, Any]) -> list[str]:
    """What the model's code needs, pinned to this environment's versions (torch without its local build
    tag such as ``+cpu``, which no public index serves); for a compressed-tensors ``quantization_config``
    also ``compressed-tensors``, which transformers needs to load such a directory, pinned to the
    ``version`` the config was written for (else the installed one)."""
    out = []
    for name in ("mlflow", "torch", "transformers", "numpy"):
        try:
            out.append(f"{name}=={metadata.version(name).split('+')[0]}")
        except metadata.PackageNotFoundError:
            out.append(name)
    quant = config.get("quantization_config")
    if isinstance(quant, dict) and quant.get("quant_method") == "compressed-tensors":
        version = quant.get("version")
        if not version:
            with contextlib.suppress(metadata.PackageNotFoundError):
                version = metadata.version("compressed-tensors")
        out.append(f"compressed-tensors=={version}" if version else "compressed-tensors")
    return out


@contextlib.contextmanager
def use_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's process-wide tracking URI at ``uri`` for the block, then restore it (and the
    ``MLFLOW_TRACKING_URI`` variable, which ``set_tracking_uri`` also writes).

    ``Model.log`` writes through the process-wide URI, and the SQL model registry resolves a
    ``models:/<model_id>`` source with a default ``MlflowClient()``, so both must run inside this block when
    the store is not the process's default one.
    """
    import mlflow
    from mlflow.tracking._tracking_service import utils

    before, env = utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)  # type: ignore[arg-type]  # None (unset) is what it was
        if env is not None:
            os.environ["MLFLOW_TRACKING_URI"] = env


def log_model_dir(model_dir: str | Path, *, run_id: str, tracking_uri: str) -> Any:
    """Log a Hugging Face model directory as an MLflow pyfunc model (models from code) in run ``run_id``.

    The model is an MLflow ``LoggedModel`` in the run's experiment, linked to the run as its output, so it
    shows under the run (a Frontier trial's child run, itself under the study's parent run).

    Args:
        model_dir: a Hugging Face model directory (config.json, weights, optional tokenizer files).
        run_id: the MLflow run that produced it.
        tracking_uri: the MLflow tracking URI holding the run.

    Returns:
        The ``mlflow.models.model.ModelInfo``; its ``model_id`` and ``model_uri`` (``models:/<model_id>``).
    """
    import mlflow
    from mlflow.models import Model

    config = read_model_dir(model_dir)
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    run = client.get_run(run_id)
    output = model_output(config)
    # created here, not by Model.log, so that it lands in the run's experiment (Model.log would use the
    # process's active experiment) and the run needs no resuming (start_run would reset its end time)
    logged = client.create_logged_model(
        run.info.experiment_id,
        name=LOGGED_MODEL_NAME,
        source_run_id=run_id,
        model_type="transformers-directory",
        tags={"frontier.output": output},
    )
    with use_tracking_uri(tracking_uri):
        return Model.log(
            artifact_path=None,
            name=LOGGED_MODEL_NAME,
            flavor=mlflow.pyfunc,
            run_id=run_id,
            model_id=logged.model_id,
            python_model=str(_CODE),
            artifacts={ARTIFACT: str(Path(model_dir).resolve())},
            pip_requirements=pip_requirements(config),
            metadata={"frontier.output": output, "frontier.architectures": config.get("architectures")},
            flavor_name="pyfunc.ModelFromCode",
        )
