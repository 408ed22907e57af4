from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from frontier.spaces import SpecError, StudySpec, load_spec, parse_overrides, spec_from_dict

ROOT = Path(__file__).resolve().parents[2]

BASE = {
    "name": "s",
    "evaluator": {"kind": "tabular", "options": {}},
    "space": [{"name": "depth", "kind": "int", "low": 1, "high": 3}],
    "objectives": [{"name": "acc", "direction": "maximize"}],
}


def with_(path: str, value):
    spec = copy.deepcopy(BASE)
    node = spec
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[int(k)] if k.isdigit() else node.setdefault(k, {})
    if keys[-1].isdigit():
        node[int(keys[-1])] = value
    else:
        node[keys[-1]] = value
    return spec


def test_minimal_spec_has_defaults():
    spec = spec_from_dict(BASE)
    assert spec.search.sampler == "auto" and spec.search.concurrency == 1
    assert spec.resources.cpu == 1.0 and spec.resources.gpu == 0.0
    assert spec.storage is None and spec.tracking.uri is None


@pytest.mark.parametrize(
    ("path", "value", "match"),
    [
        ("name", "bad name!", r"name: String should match pattern"),
        ("name", None, r"name: Input should be a valid string"),
        ("evaluator.kind", "", r"evaluator.kind: String should have at least 1 character"),
        ("evaluator.colour", 1, r"evaluator.colour: unknown field; allowed fields: \['kind', 'options'\]"),
        ("space", [], r"space: Tuple should have at least 1 item"),
        (
            "space.0.kind",
            "integer",
            r"space\[0\]: Input tag 'integer'.*'int', 'float', 'categorical', 'ordinal'",
        ),
        ("space.0.high", 0, r"space\[0\]: .*`low <= high` must hold, but got \(low=1, high=0\)"),
        ("space.0.step", 0, r"space\[0\].step: Input should be greater than or equal to 1 \(got 0\)"),
        ("space.0.lowest", 0, r"space\[0\].lowest: unknown field; allowed fields: \['high', 'kind', 'log'"),
        ("space.0.name", "1x", r"space\[0\].name: String should match pattern"),
        ("objectives", [], r"objectives: Tuple should have at least 1 item"),
        (
            "objectives.0.direction",
            "max",
            r"objectives\[0\].direction: Input should be 'minimize' or 'maximize' \(got 'max'\)",
        ),
        (
            "objectives",
            [{"name": f"m{i}", "direction": "minimize"} for i in range(5)],
            r"objectives: Tuple should have at most 4 items",
        ),
        (
            "objectives",
            [{"name": "a", "direction": "minimize"}] * 2,
            r"objective names must be unique, but got \['a', 'a'\]",
        ),
        (
            "constraints",
            [{"metric": "p", "op": "<", "value": 1}],
            r"constraints\[0\].op: Input should be '<=' or '>=' \(got '<'\)",
        ),
        (
            "constraints",
            [{"metric": "p", "op": "<=", "value": float("inf")}],
            r"constraints\[0\].value: .*finite",
        ),
        (
            "search.sampler",
            "cmaes",
            r"search.sampler: Unknown sampler 'cmaes'. Available: "
            r"\['auto', 'gp', 'nsga2', 'nsga3', 'random', 'tpe'\] "
            r"\(a custom sampler is registered with frontier.search.register_sampler",
        ),
        ("search.n_trials", 0, r"search.n_trials: Input should be greater than or equal to 1 \(got 0\)"),
        ("search.timeout_s", -1, r"search.timeout_s: Input should be greater than 0 \(got -1\)"),
        ("search.seed", -3, r"search.seed: Input should be greater than or equal to 0 \(got -3\)"),
        (
            "search.concurrency",
            0,
            r"search.concurrency: Input should be greater than or equal to 1 \(got 0\)",
        ),
        ("search.trial_timeout_s", 0, r"search.trial_timeout_s: Input should be greater than 0"),
        (
            "search.budget",
            3,
            r"search.budget: unknown field; allowed fields: \['concurrency', 'n_trials', 'runner', 'sampler'",
        ),
        (
            "search.runner",
            "threads",
            r"search.runner: Input should be 'auto', 'actors' or 'tune' \(got 'threads'\)",
        ),
        (
            "search",
            {"runner": "actors", "scheduler": {"kind": "moasha"}},
            r"search: .*runner 'actors' runs FIFO studies only; a trial scheduler \(scheduler.kind='moasha'",
        ),
        ("resources.cpu", 0, r"resources.cpu: Input should be greater than 0 \(got 0\)"),
        ("resources.gpu", -1, r"resources.gpu: Input should be greater than or equal to 0 \(got -1\)"),
        ("tracking.url", "x", r"tracking.url: unknown field; allowed fields: \['experiment', 'uri'\]"),
        ("storage", 3, r"storage: Input should be a valid string \(got 3\)"),
        ("extra", 1, r"extra: unknown field; allowed fields: \['address', 'constraints', 'deploy', 'eval"),
    ],
)
def test_each_field_error_names_path_rule_and_value(path, value, match):
    with pytest.raises(SpecError, match=match):
        spec_from_dict(with_(path, value))


@pytest.mark.parametrize(
    ("param", "match"),
    [
        (
            {"name": "f", "kind": "float", "low": 0, "high": 1, "log": True},
            r"`low > 0` must hold when log=true",
        ),
        (
            {"name": "f", "kind": "float", "low": 1, "high": 2, "log": True, "step": 0.1},
            r"step and log cannot",
        ),
        ({"name": "c", "kind": "categorical", "choices": []}, r"choices: Tuple should have at least 1 item"),
        (
            {"name": "c", "kind": "categorical", "choices": [1, 1]},
            r"choices must be unique, but got \[1, 1\]",
        ),
        ({"name": "o", "kind": "ordinal", "choices": [2, 4, 2]}, r"choices must be unique"),
        (
            {"name": "w", "kind": "int", "low": 1, "high": 2, "when": {"param": "nope", "in": [1]}},
            r"when.param must name an earlier parameter; got 'nope'",
        ),
        (
            {"name": "w", "kind": "int", "low": 1, "high": 2, "when": {"param": "depth"}},
            r"needs 'in' \(a list of values\) or 'ge'/'le'",
        ),
        (
            {"name": "w", "kind": "int", "low": 1, "high": 2, "per": "missing"},
            r"per must name an earlier int parameter",
        ),
        (
            {"name": "depth", "kind": "int", "low": 1, "high": 2},
            r"parameter names must be unique, but 'depth' appears twice",
        ),
    ],
)
def test_param_rules(param, match):
    spec = copy.deepcopy(BASE)
    spec["space"].append(param)
    with pytest.raises(SpecError, match=match):
        spec_from_dict(spec)


def test_top_level_must_be_mapping_and_yaml_must_parse(tmp_path):
    with pytest.raises(SpecError, match="must be a mapping at the top level, but got list"):
        spec_from_dict([1, 2])
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML or JSON"):
        load_spec(bad)
    with pytest.raises(SpecError, match="spec file not found"):
        load_spec(tmp_path / "missing.yaml")


def test_yaml_tags_are_refused(tmp_path):
    hostile = tmp_path / "hostile.yaml"
    hostile.write_text("name: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(hostile)


def test_per_layer_expansion_and_conditions():
    spec = spec_from_dict(
        {
            **BASE,
            "space": [
                {"name": "depth", "kind": "int", "low": 1, "high": 3},
                {"name": "width", "kind": "ordinal", "choices": [8, 16], "per": "depth"},
                {"name": "arch", "kind": "categorical", "choices": ["mlp", "cnn"]},
                {
                    "name": "kernel",
                    "kind": "int",
                    "low": 3,
                    "high": 5,
                    "step": 2,
                    "when": {"param": "arch", "in": ["cnn"]},
                },
            ],
        }
    )
    names = [p.name for p in spec.params]
    assert names == ["depth", "width_1", "width_2", "width_3", "arch", "kernel"]
    by_name = {p.name: p for p in spec.params}
    assert by_name["width_1"].when is None
    assert by_name["width_3"].when.holds({"depth": 3}) and not by_name["width_3"].when.holds({"depth": 2})
    assert by_name["kernel"].when.holds({"arch": "cnn"}) and not by_name["kernel"].when.holds({"arch": "mlp"})


def test_overrides_and_json_round_trip():
    spec = spec_from_dict(
        BASE, parse_overrides(["search.n_trials=7", "space.0.high=5", "search.sampler=nsga2"])
    )
    assert spec.search.n_trials == 7 and spec.space[0].high == 5 and spec.search.sampler == "nsga2"
    again = StudySpec.model_validate_json(json.dumps(spec.to_dict()))
    assert again == spec
    with pytest.raises(SpecError, match=r"--set expects KEY\.PATH=VALUE"):
        parse_overrides(["search.n_trials"])
    with pytest.raises(SpecError, match="'9' is not an index of a list of 1 items"):
        spec_from_dict(BASE, parse_overrides(["space.9.high=2"]))


def test_specs_are_frozen():
    spec = spec_from_dict(BASE)
    with pytest.raises(Exception, match="frozen"):
        spec.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_config_loads_and_checks(path):
    from frontier.search import check_spec

    spec = load_spec(path)
    check_spec(spec)


def test_import_spaces_pulls_in_neither_torch_nor_ray():
    code = (
        "import sys, frontier, frontier.spaces, frontier.evaluators, frontier.search._samplers; "
        "print(sorted(m for m in ('torch', 'ray', 'mlflow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


# issue 18 (F1, F6, F8, F11): the CLI's spec files go through the same loader as the service's bodies


def _bomb(levels: int = 8) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def test_spec_file_with_a_yaml_alias_bomb_is_refused_before_expansion(tmp_path):
    import time

    path = tmp_path / "bomb.yaml"
    path.write_text(_bomb())
    start = time.monotonic()
    with pytest.raises(
        SpecError, match=r"YAML anchors and aliases are not allowed in a spec, but line 1 has"
    ):
        load_spec(path)
    assert time.monotonic() - start < 1.0
    merge = tmp_path / "merge.yaml"
    merge.write_text("base: &b {kind: tabular}\nevaluator:\n  <<: *b\n")
    with pytest.raises(SpecError, match=r"the anchor \(&b\)"):
        load_spec(merge)


@pytest.mark.parametrize("text", ["[" * 100_000, "x:\n" + "".join("  " * i + "- \n" for i in range(300))])
def test_deeply_nested_spec_files_are_refused(tmp_path, text):
    path = tmp_path / "deep.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match="nested deeper than 32 levels of lists and mappings"):
        load_spec(path)


def test_deep_data_and_json_depth_are_bounded():
    from frontier.spaces._spec import json_depth_ok, load_json_text

    deep: list = []
    for _ in range(300):
        deep = [deep]
    with pytest.raises(SpecError, match=r"nested deeper than 32 levels .* \(at evaluator\.options\.x"):
        spec_from_dict(with_("evaluator.options.x", deep))
    assert json_depth_ok('{"a": "' + "[" * 1000 + '"}')  # brackets inside strings do not count
    assert json_depth_ok('{"a": "\\"' + "[" * 1000 + '"}')
    assert not json_depth_ok("[" * 33 + "]" * 33) and json_depth_ok("[" * 32 + "]" * 32)
    with pytest.raises(SpecError, match="nested deeper than 32"):
        load_json_text("[" * 100_000)


@pytest.mark.parametrize(
    ("path", "value", "match"),
    [
        (
            "objectives.0.reference",
            float("nan"),
            r"objectives\[0\]\.reference: numbers in a spec must be finite",
        ),
        ("objectives.0.reference", float("inf"), r"objectives\[0\]\.reference: .* but got inf"),
        ("evaluator.options.lr", float("-inf"), r"evaluator\.options\.lr: .* but got -inf"),
        ("constraints", [{"metric": "acc", "op": ">=", "value": float("nan")}], r"constraints\[0\]\.value"),
    ],
)
def test_non_finite_numbers_are_refused(path, value, match):
    with pytest.raises(SpecError, match=match):
        spec_from_dict(with_(path, value))


def test_non_finite_numbers_in_files_and_overrides(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(json.dumps(BASE))
    with pytest.raises(SpecError, match=r"objectives\[0\]\.reference: .* but got nan"):
        load_spec(path, parse_overrides(["objectives.0.reference=.nan"]))
    from frontier.spaces._spec import load_json_text

    with pytest.raises(SpecError, match="numbers in a spec must be finite, but the JSON has Infinity"):
        load_json_text('{"a": Infinity}')


@pytest.mark.parametrize(
    ("path", "value", "match"),
    [
        ("search.n_trials", True, r"search\.n_trials: Input should be a valid integer \(got True\)"),
        ("search.n_trials", "5", r"search\.n_trials: Input should be a valid integer \(got '5'\)"),
        ("search.concurrency", 2.0, r"search\.concurrency: Input should be a valid integer"),
        ("scheduler_max_t", True, r"search\.scheduler\.max_t: Input should be a valid integer"),
        ("latency.calibration", True, r"latency\.calibration: Input should be a valid integer"),
        ("latency.input_shape", [True, 3], r"latency\.input_shape\[0\]: Input should be a valid integer"),
    ],
)
def test_counts_are_strict(path, value, match):
    if path == "scheduler_max_t":
        spec = with_("search.scheduler", {"kind": "moasha", "max_t": value})
    else:
        spec = with_(path, value)
    with pytest.raises(SpecError, match=match):
        spec_from_dict(spec)
    assert spec_from_dict(with_("search.n_trials", 5)).search.n_trials == 5
