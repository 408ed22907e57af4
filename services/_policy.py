"""What the service accepts: a spec body parsed safely, validated, and held to the service's rules."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from frontier.services._settings import Settings
from frontier.spaces import SpecError, StudySpec, spec_from_dict

JSON_TYPES = ("application/json",)
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
# Options whose string values look like file names: these must lie under an allowed root.
_FILE_SUFFIXES = {
    ".csv", ".parquet", ".pq", ".json", ".yaml", ".yml", ".pt", ".pth", ".bin", ".safetensors", ".onnx",
    ".pkl", ".pickle", ".npz", ".npy", ".db", ".txt", ".h5",
}  # fmt: skip
_SERVICE_OWNED = ("storage", "tracking.uri", "address")


def parse_body(body: bytes, content_type: str | None) -> Any:
    """Decode a spec body by its Content-Type: JSON, or YAML read with ``yaml.safe_load`` (no tags)."""
    media = (content_type or "application/json").split(";")[0].strip().lower()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"the request body must be UTF-8 text, but byte {exc.start} is not") from None
    if media in JSON_TYPES or media.endswith("+json"):
        try:
            return json.loads(text)
        except ValueError as exc:
            raise SpecError(f"the body is not valid JSON: {exc}") from None
    if media in YAML_TYPES:
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            first = str(exc).splitlines()[0]
            raise SpecError(
                f"the body is not valid YAML (only plain YAML is accepted; tags such as !!python/... are "
                f"refused): {first}"
            ) from None
    raise UnsupportedMediaType(
        f"Content-Type {media!r} is not supported. Use one of {[*JSON_TYPES, *YAML_TYPES]}"
    )


class UnsupportedMediaType(ValueError):
    """The body's Content-Type is neither JSON nor YAML."""


def _walk(node: Any, path: str) -> Iterator[tuple[str, str | None, Any]]:
    """(field path, key, value) for every value under ``node``."""
    if isinstance(node, dict):
        for k, v in node.items():
            sub = f"{path}.{k}"
            yield sub, str(k), v
            yield from _walk(v, sub)
    elif isinstance(node, list | tuple):
        for i, v in enumerate(node):
            sub = f"{path}[{i}]"
            yield sub, None, v
            yield from _walk(v, sub)


def _looks_like_path(value: str) -> bool:
    if "\x00" in value:
        return True
    if "/" in value or "\\" in value or value.startswith(("~", ".")):
        return True
    return Path(value).suffix.lower() in _FILE_SUFFIXES


def _inside(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def check_policy(spec: StudySpec, settings: Settings) -> StudySpec:
    """Hold a valid spec to the service's rules; return it with option paths made absolute.

    Raises:
        SpecError: naming the field, the rule and the value received.
    """
    data = spec.to_dict()
    for dotted in _SERVICE_OWNED:
        node: Any = data
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            raise SpecError(
                f"{dotted}: is set by the service and must not be given in a submitted spec, but got "
                f"{node!r}. Remove it."
            )
    if spec.search.n_trials > settings.max_trials_per_study:
        raise SpecError(
            f"search.n_trials: must be <= {settings.max_trials_per_study} on this service, but got "
            f"{spec.search.n_trials}"
        )
    roots = [Path(r).expanduser().resolve() for r in settings.allowed_roots]
    options = json.loads(json.dumps(spec.evaluator.options))
    for field, key, value in _walk(options, "evaluator.options"):
        if key is not None and "trust_remote_code" in key.lower():
            raise SpecError(
                f"{field}: trust_remote_code is not allowed on this service (remote code is never run)"
            )
        if isinstance(value, str) and _looks_like_path(value):
            if "\x00" in value:
                raise SpecError(f"{field}: a path must not contain NUL characters, but got {value!r}")
            resolved = Path(os.path.expanduser(value)).resolve()
            if not _inside(resolved, roots):
                raise SpecError(
                    f"{field}: the path {value!r} is outside the allowed roots {[str(r) for r in roots]}. "
                    "Put the file under one of them."
                )
    absolute = _absolute_options(options, roots)
    if absolute != spec.evaluator.options:
        evaluator = spec.evaluator.model_copy(update={"options": absolute})
        spec = spec.model_copy(update={"evaluator": evaluator})
    return spec


def _absolute_options(options: dict[str, Any], roots: Sequence[Path]) -> dict[str, Any]:
    """Top-level relative file paths made absolute (the worker may run from another directory)."""
    out = dict(options)
    for k, v in options.items():
        if isinstance(v, str) and _looks_like_path(v) and not os.path.isabs(v):
            out[k] = str(Path(os.path.expanduser(v)).resolve())
    return out


def validate_submission(body: bytes, content_type: str | None, settings: Settings) -> StudySpec:
    """Body -> a spec the service will run, or SpecError naming what is wrong."""
    from frontier.search import check_spec

    data = parse_body(body, content_type)
    spec = spec_from_dict(data)
    spec = check_policy(spec, settings)
    try:
        check_spec(spec)
    except SpecError:
        raise
    except (ValueError, TypeError) as exc:
        raise SpecError(f"evaluator.options: {exc}") from None
    return spec


def spec_hash(spec: StudySpec) -> str:
    return hashlib.sha256(json.dumps(spec.to_dict(), sort_keys=True).encode()).hexdigest()
