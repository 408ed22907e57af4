"""What the service accepts: a spec body parsed safely, validated, and held to the service's rules."""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from frontier.services._settings import Settings
from frontier.spaces import SpecError, StudySpec, path_option_names, spec_from_dict
from frontier.spaces._spec import NAME_PATTERN, load_json_text, load_yaml_text

JSON_TYPES = ("application/json",)
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
_SERVICE_OWNED = ("storage", "tracking.uri", "address")


def parse_body(body: bytes, content_type: str | None) -> Any:
    """Decode a spec body by its Content-Type: JSON, or plain YAML (no tags, anchors or aliases).

    Both are held to the spec's nesting bound *before* a parser recurses or expands anything, so the work
    per body is bounded by its size (``max_body_bytes``).
    """
    media = (content_type or "application/json").split(";")[0].strip().lower()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"the request body must be UTF-8 text, but byte {exc.start} is not") from None
    if media in JSON_TYPES or media.endswith("+json"):
        try:
            return load_json_text(text)
        except SpecError:
            raise
        except (ValueError, RecursionError) as exc:
            raise SpecError(f"the body is not valid JSON: {exc}") from None
    if media in YAML_TYPES:
        try:
            return load_yaml_text(text)
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


def _keys(node: Any, path: str) -> Iterator[tuple[str, str]]:
    """(field path, key) of every mapping key under ``node``."""
    if isinstance(node, dict):
        for k, v in node.items():
            sub = f"{path}.{k}"
            yield sub, str(k)
            yield from _keys(v, sub)
    elif isinstance(node, list | tuple):
        for i, v in enumerate(node):
            yield from _keys(v, f"{path}[{i}]")


def _inside(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


Location = tuple[str | int, ...]


def path_fields(data: dict[str, Any]) -> Iterator[tuple[str, Location, str]]:
    """(field path, location in ``data``, value) of every path-valued field the spec sets: ``latency.cache``
    and each option the evaluator's or a space family's options model declares a path
    (:class:`~spaces.PathOption`), whatever its value looks like (a bare ``mytok`` is the path ``./mytok``).
    One list, so submission and the worker's open-time check hold the same fields to the same policy.

    Raises:
        SpecError: a family is not registered (nothing could say which of its options are paths).
    """
    from frontier.evaluators import get_evaluator_class
    from frontier.spaces._families import family_options_model

    evaluator = data.get("evaluator") or {}
    try:
        evaluator_cls = get_evaluator_class(str(evaluator.get("kind")))
    except ValueError:
        evaluator_cls = None  # an unknown evaluator: the spec check refuses it, naming the ones there are
    options = evaluator.get("options") or {}
    for name in path_option_names(evaluator_cls.Options) if evaluator_cls is not None else ():
        if isinstance(options.get(name), str):
            yield f"evaluator.options.{name}", ("evaluator", "options", name), options[name]
    for i, item in enumerate(data.get("space") or ()):
        if not (isinstance(item, dict) and item.get("kind") == "family"):
            continue
        try:
            model = family_options_model(str(item.get("family")))
        except ValueError as exc:
            raise SpecError(f"space[{i}].family: {exc}") from None
        opts = item.get("options") or {}
        for name in path_option_names(model):
            if isinstance(opts.get(name), str):
                yield f"space[{i}].options.{name}", ("space", i, "options", name), opts[name]
    cache = (data.get("latency") or {}).get("cache")
    if isinstance(cache, str):
        yield "latency.cache", ("latency", "cache"), cache


def _roots(settings: Settings) -> list[Path]:
    return [Path(r).expanduser().resolve() for r in settings.allowed_roots]


def _outside(field: str, value: str, roots: Sequence[Path]) -> SpecError:
    return SpecError(
        f"{field}: the path {value!r} is outside the allowed roots {[str(r) for r in roots]}. "
        "Put the file under one of them."
    )


def check_policy(spec: StudySpec, settings: Settings) -> StudySpec:
    """Hold a valid spec to the service's rules; return it with relative paths made absolute.

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
    _check_resources(spec, settings)
    roots = _roots(settings)
    for field, key in _option_keys(data):
        if "trust_remote_code" in key.lower():
            raise SpecError(
                f"{field}: trust_remote_code is not allowed on this service (remote code is never run)"
            )
    absolute: dict[Location, str] = {}
    for field, where, value in path_fields(data):
        if "\x00" in value:
            raise SpecError(f"{field}: a path must not contain NUL characters, but got {value!r}")
        resolved = Path(os.path.expanduser(value)).resolve()
        if not _inside(resolved, roots):
            raise _outside(field, value, roots)
        if not os.path.isabs(value):
            absolute[where] = str(resolved)  # the worker may run from another directory
    if not absolute:
        return spec
    return spec_from_dict(_with_values(data, absolute))


def _option_keys(data: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(field path, key) of every key in the evaluator's and the families' options."""
    yield from _keys((data.get("evaluator") or {}).get("options") or {}, "evaluator.options")
    for i, item in enumerate(data.get("space") or ()):
        if isinstance(item, dict) and isinstance(item.get("options"), dict):
            yield from _keys(item["options"], f"space[{i}].options")


def _with_values(data: dict[str, Any], values: dict[Location, str]) -> dict[str, Any]:
    """A copy of spec data with the fields at the locations in ``values`` (from :func:`path_fields`)
    replaced."""
    out: dict[str, Any] = json.loads(json.dumps(data))
    for where, value in values.items():
        node: Any = out
        for part in where[:-1]:
            node = node[part]
        node[where[-1]] = value
    return out


def _check_resources(spec: StudySpec, settings: Settings) -> None:
    """Refuse a trial that the known cluster could never place (it would wait forever in the queue)."""
    cpus, gpus = settings.cluster_limits()
    wanted = {"cpu": (spec.resources.cpu, cpus, "CPUS"), "gpu": (spec.resources.gpu, gpus, "GPUS")}
    for name, (asked, limit, env) in wanted.items():
        if limit is not None and asked > limit:
            raise SpecError(
                f"resources.{name}: each trial asks for {asked:g} {name.upper()}s, but this service's Ray "
                f"cluster has {limit:g}, so no trial could ever be placed. Ask for at most {limit:g} (or "
                f"set FRONTIER_CLUSTER_{env} on the service if its cluster is larger)."
            )


def check_effective_name(owner: str, name: str) -> None:
    """The service runs a study as ``OWNER--NAME`` (its Optuna and MLflow name); refuse a name for which
    that is not a valid study name, instead of failing every trial later."""
    effective = f"{owner}--{name}"
    if re.fullmatch(NAME_PATTERN, effective):
        return
    room = 128 - len(owner) - 2
    raise SpecError(
        f"name: this service runs the study as '{owner}--<name>', which must match {NAME_PATTERN} "
        f"(at most 128 characters), but got {len(effective)} characters for name {name[:40]!r}"
        f"{'...' if len(name) > 40 else ''}. Use a name of at most {room} characters."
    )


def recheck_paths(spec: StudySpec, settings: Settings) -> StudySpec:
    """The worker's open-time check of every path-valued field: what was inside the allowed roots at
    submission may since have become a symlink to elsewhere. Each path is resolved (all symlinks
    followed), must still lie inside a root, and its resolved file is opened without following a final
    symlink (``O_NOFOLLOW``: a link swapped in after the resolve is refused too) and must be a regular file
    or a directory. Returns the spec with each path replaced by its checked, resolved form, so the
    evaluator opens exactly what was checked.

    Raises:
        SpecError: naming the field, the path, what it resolves to and the rule.
    """
    roots = _roots(settings)
    data = spec.to_dict()
    resolved: dict[Location, str] = {}
    for field, where, value in path_fields(data):
        real = open_checked(field, value, roots)
        if real != value:
            resolved[where] = real
    return spec_from_dict(_with_values(data, resolved)) if resolved else spec


def open_checked(field: str, value: str, roots: Sequence[Path]) -> str:
    """Resolve ``value``, verify it is inside ``roots`` and, when it exists, open it without following a
    final symlink; return the resolved path. A path that does not exist yet (a cache the study creates, a
    hub id) is returned resolved: whatever later creates it does so inside the root."""
    real = Path(os.path.expanduser(value)).resolve()
    if not _inside(real, roots):
        raise SpecError(
            f"{field}: the path {value!r} now resolves to {str(real)!r}, outside the allowed roots "
            f"{[str(r) for r in roots]} (a symlink was planted or a directory moved after submission). "
            "The study was not run; remove the link and resume it."
        )
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(real, flags)
    except FileNotFoundError:
        return str(real)
    except OSError as exc:
        raise SpecError(
            f"{field}: the path {value!r} ({str(real)!r}) cannot be opened without following a symlink "
            f"({exc.strerror}); it changed while it was checked. Remove the link and resume the study."
        ) from None
    try:
        mode = os.fstat(fd).st_mode
    finally:
        os.close(fd)
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise SpecError(
            f"{field}: the path {value!r} ({str(real)!r}) is neither a regular file nor a directory. "
            "Point it at a file or a directory."
        )
    return str(real)


def validate_submission(
    body: bytes, content_type: str | None, settings: Settings, *, owner: str | None = None
) -> StudySpec:
    """Body -> a spec the service will run for ``owner``, or SpecError naming what is wrong."""
    from frontier.search import check_spec

    data = parse_body(body, content_type)
    spec = spec_from_dict(data)
    if owner is not None:
        check_effective_name(owner, spec.name)
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
