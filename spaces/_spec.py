"""The study spec: what a user submits. Frozen pydantic models that reject unknown fields."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from frontier.spaces._deploy import DeployFormat, Runtime, check_deploy, deploy_notes
from frontier.spaces._errors import SpecError, format_validation_error
from frontier.spaces._params import FamilyParam, IntParam, Param, SpaceItem
from frontier.spaces._samplers import SAMPLERS

Direction = Literal["minimize", "maximize"]
ConstraintOp = Literal["<=", ">="]
# A study name; the service runs a study as OWNER--NAME, which must match it too.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"
# Counts are integers, never booleans or numeric strings (``n_trials: true`` must not mean 1).
Count = Annotated[int, Strict()]
# The deepest nesting a spec may have. Real specs stay under 10 levels; the bound keeps parsing, validation
# and serialisation of hostile bodies (a 300-deep list, ``[`` x 100000) far from Python's recursion limit.
MAX_SPEC_DEPTH = 32


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class EvaluatorSpec(_Frozen):
    """Which registered evaluator scores candidates, and its options (checked by the evaluator)."""

    kind: str = Field(min_length=1)
    options: dict[str, Any] = Field(default_factory=dict)


class Objective(_Frozen):
    """A metric to minimise or maximise. ``reference`` fixes the hypervolume reference point for it."""

    name: str = Field(min_length=1)
    direction: Direction
    reference: float | None = None


class Constraint(_Frozen):
    """``metric op value``; a trial is feasible when every constraint holds."""

    metric: str = Field(min_length=1)
    op: ConstraintOp
    value: float

    @field_validator("value")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError(f"value must be a finite number, but got {v}")
        return v

    def violation(self, observed: float) -> float:
        """Optuna's convention: <= 0 means satisfied, the size of a positive value is the violation."""
        return observed - self.value if self.op == "<=" else self.value - observed


class SchedulerConfig(_Frozen):
    """When to stop trials early. ``moasha``: multi-objective asynchronous successive halving over the
    evaluator's fidelity steps (``EvalContext.report``), by non-dominated sorting across all objectives."""

    kind: Literal["fifo", "moasha"] = "fifo"
    grace_period: Count = Field(default=1, ge=1)
    max_t: Count = Field(default=100, ge=1)
    reduction_factor: float = Field(default=3.0, gt=1)


Runner = Literal["auto", "actors", "tune"]


class SearchConfig(_Frozen):
    """How the search runs (``search:`` in a spec).

    Attributes:
        runner: what runs the trials on Ray. ``tune``: one Ray Tune trial per candidate (reused actors,
            Tune's placement groups and trial bookkeeping; needed by a trial scheduler); ``actors``:
            ``concurrency`` long-lived Ray actors with ``resources`` each, one call per candidate, without
            Tune's per-trial machinery (tens of ms per trial less, see ``benchmarks/bench_overhead.py``;
            FIFO only); ``auto`` (default): ``actors`` for FIFO studies, ``tune`` with a scheduler.
        trial_timeout_s: the longest one trial's evaluation may run; a trial past it fails and its worker
            process is replaced. The evaluator's setup is not counted (``setup_timeout_s``).
        setup_timeout_s: the longest a worker may take to start and set its evaluator up (load models and
            data, compile kernels) before its first trial; a worker past it stops the study with an error.
            Generous by default: on a busy machine a first setup (numba compiling kernels) takes minutes.
    """

    sampler: str = "auto"
    n_trials: Count = Field(default=30, ge=1, le=1_000_000)
    timeout_s: float | None = Field(default=None, gt=0)
    seed: Count | None = Field(default=None, ge=0, le=2**32 - 1)
    concurrency: Count = Field(default=1, ge=1, le=1024)
    trial_timeout_s: float | None = Field(default=None, gt=0)
    setup_timeout_s: float | None = Field(default=1800.0, gt=0)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    runner: Runner = "auto"

    @field_validator("sampler")
    @classmethod
    def _registered_sampler(cls, v: str) -> str:
        # The registry, not a fixed list: a sampler registered with register_sampler is accepted too.
        if v not in SAMPLERS:
            raise ValueError(
                f"{SAMPLERS.unknown_message(v)} (a custom sampler is registered with "
                "frontier.search.register_sampler before the spec is loaded)"
            )
        return v

    @model_validator(mode="after")
    def _runner_fits(self) -> SearchConfig:
        if self.runner == "actors" and self.scheduler.kind != "fifo":
            raise ValueError(
                f"runner 'actors' runs FIFO studies only; a trial scheduler (scheduler.kind="
                f"'{self.scheduler.kind}') needs runner 'tune' or 'auto'"
            )
        return self

    @property
    def uses_tune(self) -> bool:
        """Whether the trials run as Ray Tune trials (``runner``, resolved)."""
        return self.runner == "tune" or (self.runner == "auto" and self.scheduler.kind != "fifo")


class Resources(_Frozen):
    cpu: float = Field(default=1.0, gt=0, le=1024)
    gpu: float = Field(default=0.0, ge=0, le=64)


LatencyMode = Literal["measured", "predicted", "hybrid"]


class LatencyConfig(_Frozen):
    """How the latency objective is obtained (``latency:`` in a spec).

    Attributes:
        mode: ``measured`` (every trial is timed, in the node's exclusive lane, through the cache),
            ``predicted`` (every trial's latency comes from a predictor fitted on the ``device`` profile
            written by ``frontier latency calibrate``), or ``hybrid`` (every trial is predicted; the ones
            that could enter the Pareto set and a calibration sample are measured, the predictor is refitted
            as measurements arrive, and the final Pareto set is re-measured).
        device: the device profile's name (``frontier latency calibrate --device NAME``); ``predicted``
            needs one, ``hybrid`` starts from it when given.
        batch_size: batch of the timed input (default: the evaluator's, usually 1).
        seq_len, input_shape: the timed input's sequence length or per-example shape (one of them).
        predictor: a registered latency predictor (``evaluators.latency.available_predictors()``).
        metric: the objective that is the latency.
        lane: time in the node's exclusive measurement lane (and train in it, shared).
        cache: the persistent latency cache: true (``RUN_DIR/latency_cache.db``), false, or a file path.
        calibration: ``hybrid``: the first trials that are always measured.
        calibration_every: ``hybrid``: also measure every N-th trial after them (0: never).
        margin: ``hybrid``: the smallest relative prediction error assumed when deciding whether a trial
            could enter the Pareto set (the observed error is used when larger).
    """

    mode: LatencyMode = "measured"
    device: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
    batch_size: Count | None = Field(default=None, ge=1, le=65_536)
    seq_len: Count | None = Field(default=None, ge=1, le=1_048_576)
    input_shape: tuple[Count, ...] | None = Field(default=None, min_length=1, max_length=8)
    predictor: str = Field(default="linear", min_length=1)
    metric: str = Field(default="latency_ms", min_length=1)
    lane: bool = True
    cache: bool | str = True
    calibration: Count = Field(default=8, ge=2, le=10_000)
    calibration_every: Count = Field(default=20, ge=0)
    margin: float = Field(default=0.15, ge=0, le=1)

    @field_validator("input_shape")
    @classmethod
    def _positive(cls, shape: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if shape is not None and any(d < 1 for d in shape):
            raise ValueError(f"every dimension must be >= 1, but got {list(shape)}")
        return shape

    @model_validator(mode="after")
    def _consistent(self) -> LatencyConfig:
        if self.seq_len is not None and self.input_shape is not None:
            raise ValueError(
                f"give either seq_len or input_shape, not both (got seq_len={self.seq_len}, "
                f"input_shape={list(self.input_shape)})"
            )
        if self.mode == "predicted" and self.device is None:
            raise ValueError(
                "mode 'predicted' needs a device profile: set latency.device to a name calibrated with "
                "`frontier latency calibrate --device NAME`, or use mode 'hybrid'"
            )
        return self

    @property
    def input(self) -> tuple[int, ...] | None:
        return (self.seq_len,) if self.seq_len is not None else self.input_shape


class DeployTarget(_Frozen):
    """Where a study's best points deploy (``deploy:`` in a spec); absent: no deployment constraint.

    With a target, the spec refuses, before anything runs, a space that contains points the runtime cannot
    load (asymmetric weights; for vLLM also widths other than 4/8, group sizes other than per-channel/32/64/
    128, fused Q/K/V or gate/up projections that can get different schemes, per-layer FFN widths; for
    ``vllm-cpu`` 4 bits only): see ``spaces._deploy.RUNTIMES`` and ``docs/deploy.md``.

    Attributes:
        format: how an exported point is written: ``compressed-tensors`` (a ``pack-quantized`` model
            directory, integer weight-only, 2..8 bits).
        runtime: what loads it: ``transformers`` (CPU or GPU, decompresses to dense), ``vllm`` (GPU) or
            ``vllm-cpu``.
    """

    format: DeployFormat = "compressed-tensors"
    runtime: Runtime


class Tracking(_Frozen):
    uri: str | None = None
    experiment: str | None = None


class StudySpec(_Frozen):
    """A search study. See ``configs/quickstart.yaml`` for a complete example."""

    name: str = Field(pattern=NAME_PATTERN)
    evaluator: EvaluatorSpec
    space: tuple[SpaceItem, ...] = Field(min_length=1)
    objectives: tuple[Objective, ...] = Field(min_length=1, max_length=4)
    constraints: tuple[Constraint, ...] = ()
    search: SearchConfig = Field(default_factory=SearchConfig)
    resources: Resources = Field(default_factory=Resources)
    storage: str | None = None
    tracking: Tracking = Field(default_factory=Tracking)
    address: str | None = None
    latency: LatencyConfig = Field(default_factory=LatencyConfig)
    deploy: DeployTarget | None = None  # after space: its check reads the validated space

    @field_validator("space")
    @classmethod
    def _expandable(cls, space: tuple[SpaceItem, ...]) -> tuple[SpaceItem, ...]:
        from frontier.spaces._family_compress import check_allocations, check_depth_links

        # before expansion, whose generic "when.param must name an earlier parameter" it words better
        check_depth_links(space)
        expand_space(space)  # raises on unknown families, bad references or duplicate names
        check_allocations(space)  # no module gets two bit-widths or two sparsities
        return space

    @field_validator("objectives")
    @classmethod
    def _unique(cls, objectives: tuple[Objective, ...]) -> tuple[Objective, ...]:
        names = [o.name for o in objectives]
        if len(set(names)) != len(names):
            raise ValueError(f"objective names must be unique, but got {names}")
        return objectives

    @field_validator("latency")
    @classmethod
    def _latency_objective(cls, latency: LatencyConfig, info: ValidationInfo) -> LatencyConfig:
        names = [o.name for o in info.data.get("objectives", ())]
        if latency.mode != "measured" and names and latency.metric not in names:
            raise ValueError(
                f"mode '{latency.mode}' predicts the objective named by latency.metric, but "
                f"'{latency.metric}' is not an objective (objectives: {names}); set latency.metric"
            )
        return latency

    @field_validator("deploy")
    @classmethod
    def _deployable(cls, deploy: DeployTarget | None, info: ValidationInfo) -> DeployTarget | None:
        space = info.data.get("space")
        if deploy is not None and space is not None:  # a bad space has its own error already
            check_deploy(space, deploy.runtime)
        return deploy

    @property
    def deploy_notes(self) -> list[str]:
        """What the export of this study's points is, where it differs from what the search measured (e.g.
        pruned weights that ship as dense zeros); empty without a ``deploy`` target."""
        return [] if self.deploy is None else deploy_notes(self.space, self.deploy.runtime)

    @property
    def params(self) -> tuple[Param, ...]:
        """The space with every ``per`` parameter expanded, in sampling order."""
        return expand_space(self.space)

    def decode(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """A candidate's values read back by each typed family of the space: ``{item name: decoded}``
        (:meth:`FamilyParam.decode`; an :class:`~spaces.LMArch`, a :class:`~spaces.DecodedRecipe`...).
        Plain parameters and families registered as plain functions have no entry."""
        out: dict[str, Any] = {}
        for item in self.space:
            if isinstance(item, FamilyParam) and item.compile() is not None:
                out[item.name] = item.decode(params)
        return out

    @property
    def directions(self) -> list[Direction]:
        return [o.direction for o in self.objectives]

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def _expand_families(space: tuple[SpaceItem, ...]) -> list[Param]:
    from pydantic import TypeAdapter

    from frontier.spaces._families import expand_family

    adapter: TypeAdapter[Param] = TypeAdapter(Param)
    out: list[Param] = []
    for item in space:
        if not isinstance(item, FamilyParam):
            out.append(item)
            continue
        try:
            raw = expand_family(item.family, item.name, item.options)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"family '{item.name}' ({item.family}): {exc}") from None
        out.extend(adapter.validate_python(r) for r in raw)
    return out


def expand_space(space: tuple[SpaceItem, ...]) -> tuple[Param, ...]:
    """Expand families and ``per: DEPTH`` parameters; check that references point backwards."""
    out: list[Param] = []
    seen: dict[str, Param] = {}
    for p in _expand_families(space):
        if p.when is not None and p.when.param not in seen:
            raise ValueError(
                f"parameter '{p.name}': when.param must name an earlier parameter; got '{p.when.param}' "
                f"(earlier: {list(seen)})"
            )
        if p.per is None:
            copies: list[Param] = [p]
        else:
            depth = seen.get(p.per)
            if not isinstance(depth, IntParam) or depth.low < 0:
                raise ValueError(
                    f"parameter '{p.name}': per must name an earlier int parameter with low >= 0; "
                    f"got '{p.per}'"
                )
            if p.when is not None:
                raise ValueError(f"parameter '{p.name}': use either per or when, not both")
            copies = []
            for i in range(1, depth.high + 1):
                when = None if i <= depth.low else {"param": p.per, "ge": i}
                copies.append(p.model_copy(update={"name": f"{p.name}_{i}", "per": None, "when": when}))
                if when is not None:
                    # model_copy does not validate nested dicts: rebuild the condition properly.
                    copies[-1] = type(p).model_validate(
                        {**copies[-1].model_dump(by_alias=True, exclude={"when"}), "when": when}
                    )
        for c in copies:
            if c.name in seen:
                raise ValueError(f"parameter names must be unique, but '{c.name}' appears twice")
            seen[c.name] = c
            out.append(c)
    return tuple(out)


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node: Any = data
    for i, key in enumerate(keys):
        last = i == len(keys) - 1
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise SpecError(f"--set {dotted}: '{key}' is not an index of a list of {len(node)} items")
            idx = int(key)
            if last:
                node[idx] = value
            else:
                node = node[idx]
        elif isinstance(node, dict):
            if last:
                node[key] = value
            else:
                node = node.setdefault(key, {})
        else:
            raise SpecError(f"--set {dotted}: '{'.'.join(keys[:i])}' is a value, not a mapping or list")


_OVERRIDE_INDEX = re.compile(r"\[\s*(-?\w*)\s*\]")
_OVERRIDE_PART = re.compile(r"^(?:[A-Za-z_][\w\-]*|\d+)$")


def parse_overrides(pairs: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Parse ``key.path=value`` strings; values are read as YAML scalars (``3``, ``true``, ``[1, 2]``).

    A list element is addressed as ``space[0].choices`` or ``space.0.choices``; keys come back in the
    dotted form. Every malformed pair is a :class:`SpecError` naming the pair, the rule and an example.
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise SpecError(
                f"--set expects KEY.PATH=VALUE (e.g. search.n_trials=10 or space[0].choices=[mlp, cnn]), "
                f"but got {pair!r}"
            )
        key, raw = pair.split("=", 1)
        key = key.strip()
        dotted = _OVERRIDE_INDEX.sub(lambda m: f".{m[1]}", key)
        parts = dotted.split(".")
        bad = next((p for p in parts if not _OVERRIDE_PART.match(p)), None)
        if bad is not None:
            what = "an empty part" if bad == "" else f"{bad!r}"
            raise SpecError(
                f"--set {pair!r}: KEY.PATH must be field names joined by '.', with list indexes as [N] "
                f"(N = 0, 1, ...), e.g. space[0].choices; the key {key!r} has {what}"
            )
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            problem = str(getattr(exc, "problem", None) or exc).splitlines()[0]
            raise SpecError(
                f"--set {key}: the value {raw!r} is not valid YAML ({problem}); quote text that contains "
                "':', '[' or '{', e.g. --set 'name=\"a: b\"', or write a list as [1, 2]"
            ) from None
        out[dotted] = value
    return out


class _SpecLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses anchors and aliases and bounds nesting while it composes the
    document, before anything is constructed or expanded: an alias bomb (8 levels of 10 aliases, 10^8
    items from 500 bytes) stops at its first anchor, ``[`` x 100000 at depth ``MAX_SPEC_DEPTH``."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        line = event.start_mark.line + 1 if event.start_mark is not None else 0
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            what = "alias (*" if isinstance(event, yaml.AliasEvent) else "anchor (&"
            raise SpecError(
                f"YAML anchors and aliases are not allowed in a spec, but line {line} has the {what}"
                f"{event.anchor}): they can expand a few hundred bytes into billions of items. "
                "Write the repeated values out."
            )
        if not isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_SPEC_DEPTH:
                raise SpecError(_too_deep(f"line {line}"))
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _too_deep(where: str) -> str:
    return (
        f"the spec is nested deeper than {MAX_SPEC_DEPTH} levels of lists and mappings (at {where}); "
        "a study spec needs far fewer. Flatten it."
    )


def load_yaml_text(text: str) -> Any:
    """Parse one YAML (or JSON) document safely: plain YAML only (no ``!!python`` tags), no anchors or
    aliases, at most ``MAX_SPEC_DEPTH`` levels deep.

    Raises:
        SpecError: an anchor, alias or nesting too deep (the rule and the line).
        yaml.YAMLError: text that is not YAML.
    """
    loader = _SpecLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


# Tokens that decide JSON nesting: an escape (so an escaped quote does not end a string), a quote, a bracket.
_JSON_TOKENS = re.compile(r'\\.|["\[\]{}]', re.DOTALL)


def json_depth_ok(text: str) -> bool:
    """Whether JSON text nests at most ``MAX_SPEC_DEPTH`` levels (brackets inside strings do not count).
    Linear in the text, and checked before ``json.loads``, which recurses once per level."""
    depth, in_string = 0, False
    for match in _JSON_TOKENS.finditer(text):
        token = match.group()
        if token == '"':
            in_string = not in_string
        elif in_string or token[0] == "\\":
            continue
        elif token in "[{":
            depth += 1
            if depth > MAX_SPEC_DEPTH:
                return False
        else:
            depth -= 1
    return True


def _non_finite(constant: str) -> Any:
    raise SpecError(
        f"numbers in a spec must be finite, but the JSON has {constant}. Use a finite number (e.g. 1e9)"
    )


def load_json_text(text: str) -> Any:
    """Parse JSON text with the spec's rules: at most ``MAX_SPEC_DEPTH`` levels, no NaN or Infinity.

    Raises:
        SpecError: nesting too deep or a non-finite number.
        ValueError: text that is not JSON.
    """
    if not json_depth_ok(text):
        raise SpecError(_too_deep("the JSON body"))
    return json.loads(text, parse_constant=_non_finite)


def _field(path: str, key: Any) -> str:
    return f"{path}[{key}]" if isinstance(key, int) else (f"{path}.{key}" if path else str(key))


def _plain_items(data: Any) -> Iterator[tuple[str, Any, int]]:
    """(field path, value, depth) of every value under ``data``, iteratively (no recursion to exhaust)."""
    stack: list[tuple[str, Any, int]] = [("", data, 0)]
    while stack:
        path, node, depth = stack.pop()
        yield path, node, depth
        if isinstance(node, dict):
            stack.extend((_field(path, k), v, depth + 1) for k, v in node.items())
        elif isinstance(node, list | tuple):
            stack.extend((_field(path, i), v, depth + 1) for i, v in enumerate(node))


def check_plain_data(data: Any) -> None:
    """Hold parsed spec data to the rules every spec source shares: at most ``MAX_SPEC_DEPTH`` levels of
    nesting and only finite numbers (NaN and infinities are not JSON; stores and hypervolumes break).

    Raises:
        SpecError: naming the field path, the rule and the value.
    """
    for path, value, depth in _plain_items(data):
        if depth > MAX_SPEC_DEPTH:
            raise SpecError(_too_deep(path or "(top level)"))
        if isinstance(value, float) and not math.isfinite(value):
            raise SpecError(
                f"{path or '(top level)'}: numbers in a spec must be finite, but got {value}. "
                "Use a finite number (e.g. 1e9)"
            )


def spec_from_dict(data: Any, overrides: dict[str, Any] | None = None) -> StudySpec:
    """Validate a plain mapping into a :class:`StudySpec`, raising :class:`SpecError` on bad input."""
    if not isinstance(data, dict):
        raise SpecError(f"a study spec must be a mapping at the top level, but got {type(data).__name__}")
    check_plain_data(data)
    data = json.loads(json.dumps(data, default=str))  # deep copy; normalises YAML dates etc.
    for key, value in (overrides or {}).items():
        _set_path(data, key, value)
    if overrides:
        check_plain_data(data)
    try:
        return StudySpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(format_validation_error(exc, StudySpec)) from None


def load_spec(source: str | Path, overrides: dict[str, Any] | None = None) -> StudySpec:
    """Load a spec from a YAML or JSON file path, or from YAML/JSON text."""
    text: str
    if isinstance(source, Path) or (isinstance(source, str) and "\n" not in source and len(source) < 4096):
        path = Path(source)
        if not path.exists():
            raise SpecError(f"spec file not found: {path}")
        text = path.read_text()
    else:
        text = str(source)
    try:
        data = load_yaml_text(text)  # JSON is YAML; no tags, anchors or deep nesting
    except yaml.YAMLError as exc:
        raise SpecError(f"the spec is not valid YAML or JSON: {exc}") from None
    return spec_from_dict(data, overrides)
