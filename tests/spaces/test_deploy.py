"""The ``deploy`` section: each runtime's rules refuse a space with points it cannot load, one by one."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from frontier.spaces import RUNTIMES, DeployTarget, SpecError, StudySpec, load_spec, spec_from_dict

ROOT = Path(__file__).resolve().parents[2]
MIXED = yaml.safe_load((ROOT / "configs" / "minilm-mixed-precision.yaml").read_text())
CHANNELS = yaml.safe_load((ROOT / "configs" / "minilm-bits-channels.yaml").read_text())
SPARSITY = yaml.safe_load((ROOT / "configs" / "minilm-sparsity.yaml").read_text())
VLLM_BITS = {"choices": [4, 8], "group_size": 128}


def spec(
    runtime: str | None,
    base: dict[str, Any] = MIXED,
    item: int = 0,
    space: list[dict[str, Any]] | None = None,
    **options: Any,
) -> StudySpec:
    """``base`` with ``deploy.runtime`` set (or no deploy section) and ``space[item].options`` updated."""
    data = copy.deepcopy(base)
    data.pop("deploy", None)
    if runtime is not None:
        data["deploy"] = {"format": "compressed-tensors", "runtime": runtime}
    if space is not None:
        data["space"] = copy.deepcopy(space)
    data["space"][item]["options"].update(options)
    return spec_from_dict(data)


def bits(name: str = "bits", **options: Any) -> dict[str, Any]:
    return {"kind": "family", "name": name, "family": "bits", "options": {"num_layers": 2, **options}}


# -- valid specs -------------------------------------------------------------------------------------------


def test_no_deploy_section_is_todays_behaviour() -> None:
    s = spec(None, symmetric=False)  # asymmetric is fine without a deploy target
    assert s.deploy is None and s.deploy_notes == [] and "deploy" not in s.to_dict()


@pytest.mark.parametrize(
    ("runtime", "options"),
    [
        ("transformers", {}),  # the shipped mix: 2..8 bits, group 32, per block
        ("transformers", {"group_size": 16, "group_by": "none"}),  # any width, group size and grouping
        ("vllm", VLLM_BITS),
        ("vllm", {"choices": [4], "group_size": None, "group_by": "layer"}),
        ("vllm", {"choices": [8], "group_size": 64, "group_by": "all"}),
        ("vllm-cpu", {"choices": [4], "group_size": 32}),
    ],
)
def test_valid_space_passes_for_each_runtime(runtime: str, options: dict[str, Any]) -> None:
    s = spec(runtime, **options)
    assert s.deploy == DeployTarget(runtime=runtime)  # type: ignore[arg-type]
    assert s.deploy_notes == []  # bits only: the export is what the search measured


def test_llama_layout_passes_for_vllm_when_fused_projections_share_a_group() -> None:
    space = [bits(layout="llama", targets=["model.layers.*.**"], group_by="block", **VLLM_BITS)]
    assert spec("vllm", space=space).params[0].name == "bits.layer_0.attention"


def test_the_rule_table_covers_every_runtime_the_spec_accepts() -> None:
    from typing import get_args

    from frontier.spaces._deploy import Runtime

    assert sorted(RUNTIMES) == sorted(get_args(Runtime))
    assert RUNTIMES["vllm-cpu"].widths == (4,) and RUNTIMES["vllm"].widths == (4, 8)
    assert RUNTIMES["transformers"].widths == (2, 3, 4, 5, 6, 7, 8)


# -- every rule, one by one ----------------------------------------------------------------------------------


@pytest.mark.parametrize("runtime", sorted(RUNTIMES))
def test_asymmetric_weights_are_refused_for_every_runtime(runtime: str) -> None:
    with pytest.raises(
        SpecError,
        match=r"deploy: space\[0\]\.options\.symmetric=false: asymmetric weights do not load in any runtime "
        r"\(zero-point shape mismatch, llm-compressor #1618\); set symmetric: true",
    ):
        spec(runtime, symmetric=False, choices=[4])


def test_vllm_loads_4_and_8_bits_only() -> None:
    with pytest.raises(
        SpecError,
        match=r"space\[0\]\.options\.choices=\[2, 3, 4, 5, 6, 8\]: runtime 'vllm' loads widths \[4, 8\], not "
        r"\[2, 3, 5, 6\]; choose from \[4, 8\], or deploy\.runtime 'transformers'$",
    ):
        spec("vllm")


def test_vllm_cpu_loads_4_bits_only() -> None:
    with pytest.raises(
        SpecError,
        match=r"space\[0\]\.options\.choices=\[4, 8\]: runtime 'vllm-cpu' loads widths \[4\], not \[8\]; "
        r"choose from \[4\], or deploy\.runtime 'transformers' / 'vllm'$",
    ):
        spec("vllm-cpu", **VLLM_BITS)


@pytest.mark.parametrize("runtime", ["vllm", "vllm-cpu"])
@pytest.mark.parametrize("group_size", [16, 256])
def test_vllm_group_sizes_are_channel_32_64_128(runtime: str, group_size: int) -> None:
    with pytest.raises(
        SpecError,
        match=rf"space\[0\]\.options\.group_size={group_size}: runtime '{runtime}' loads group sizes "
        r"\['null \(per channel\)', 32, 64, 128\]; choose one of them, or deploy\.runtime 'transformers'$",
    ):
        spec(runtime, choices=[4], group_size=group_size)


@pytest.mark.parametrize("group_by", ["none", "module_type"])
def test_vllm_fused_qkv_in_separate_groups_is_refused(group_by: str) -> None:
    with pytest.raises(
        SpecError,
        match=r"runtime 'vllm' fuses 'encoder\.layer\.0\.attention\.self\.query' and "
        r"'encoder\.layer\.0\.attention\.self\.key' into one matrix with one scheme, but "
        rf"space\[0\]\.options\.group_by='{group_by}' gives them separate parameters .*; use group_by "
        r"'layer', 'block' or 'all'",
    ):
        spec("vllm", group_by=group_by, **VLLM_BITS)


def test_vllm_fused_projection_left_dense_is_refused() -> None:
    targets = ["encoder.layer.*.attention.self.query", "encoder.layer.*.output.dense"]
    with pytest.raises(
        SpecError,
        match=r"runtime 'vllm' fuses 'encoder\.layer\.0\.attention\.self\.query' with "
        r"'encoder\.layer\.0\.attention\.self\.key' into one matrix with one scheme, but "
        r"space\[0\]\.options\.targets of the 'bits' family 'bits' quantizes only the first .*; target the "
        r"fused projections together",
    ):
        spec("vllm", targets=targets, **VLLM_BITS)


def test_vllm_fused_projections_split_across_two_families() -> None:
    space = [
        bits("qk", targets=["re:.*self\\.(query|key)"], **VLLM_BITS),
        bits("v", targets=["re:.*self\\.value"], **VLLM_BITS),
    ]
    with pytest.raises(
        SpecError,
        match=r"space\[0\]\.options\.targets and space\[1\]\.options\.targets give them to two 'bits' "
        r"families \('qk', 'v'\); target them from one family",
    ):
        spec("vllm", space=space)
    # two families that can only ever pick the same scheme are one scheme
    same = {"choices": [4], "group_size": 128}
    space = [
        bits("qk", targets=["re:.*self\\.(query|key)"], **same),
        bits("v", targets=["re:.*value"], **same),
    ]
    assert len(spec("vllm", space=space).params) == 4


def test_vllm_llama_gate_and_up_must_share_a_scheme() -> None:
    space = [bits(layout="llama", targets=["model.layers.*.mlp.*"], group_by="module_type", choices=[4, 8])]
    with pytest.raises(
        SpecError,
        match=r"runtime 'vllm' fuses 'model\.layers\.0\.mlp\.gate_proj' and 'model\.layers\.0\.mlp\.up_proj'"
        r".*space\[0\]\.options\.group_by='module_type'",
    ):
        spec("vllm", space=space)
    # one width only (vllm-cpu: 4 bits): the separate parameters can only pick the same scheme
    assert len(spec("vllm-cpu", space=space, choices=[4]).params) == 3  # gate, up, down
    space = [bits(layout="llama", targets=["model.layers.*.mlp.gate_proj"], choices=[4])]
    with pytest.raises(
        SpecError, match=r"'model\.layers\.0\.mlp\.gate_proj' with 'model\.layers\.0\.mlp\.up_proj'"
    ):
        spec("vllm", space=space)
    # transformers keeps every Linear separate
    assert len(spec("transformers", space=space, group_by="none").params) == 2


@pytest.mark.parametrize("runtime", ["vllm", "vllm-cpu"])
def test_vllm_per_layer_channel_pruning_is_refused(runtime: str) -> None:
    data = copy.deepcopy(CHANNELS)
    data["space"][0]["options"].update(choices=[4])
    with pytest.raises(
        SpecError,
        match=rf"space\[1\]\.options\.group_by='layer': runtime '{runtime}' builds every FFN from one "
        r"config\.intermediate_size, so every layer must keep one width, but each group picks its own ratio "
        r"from \[0, 0\.0625, 0\.125, 0\.1875, 0\.25\]; use group_by 'all', or deploy\.runtime "
        r"'transformers'",
    ):
        spec(runtime, base=data, item=1)
    with pytest.raises(
        SpecError,
        match=r"space\[1\]\.options\.targets=\['encoder\.layer\.0\.intermediate\.dense'\]: "
        rf"runtime '{runtime}'.* "
        r"but \['encoder\.layer\.1\.intermediate\.dense', 'encoder\.layer\.2\.intermediate\.dense'\] keep "
        r"their full width; target every 'intermediate\.dense', or deploy\.runtime 'transformers'",
    ):
        spec(runtime, base=data, item=1, group_by="all", targets=["encoder.layer.0.intermediate.dense"])


@pytest.mark.parametrize("runtime", ["vllm", "vllm-cpu"])
def test_vllm_uniform_channel_pruning_is_expressible(runtime: str) -> None:
    data = copy.deepcopy(CHANNELS)
    data["space"][0]["options"].update(choices=[4])
    s = spec(runtime, base=data, item=1, group_by="all")
    assert s.deploy_notes == [
        "space[1] ('sparsity' family 'prune', kind 'channels'): every layer keeps one FFN width, which ships "
        "as a smaller intermediate_size"
    ]


def test_channel_pruning_per_layer_is_allowed_for_transformers() -> None:
    s = spec("transformers", base=CHANNELS)
    assert s.deploy_notes == [
        "space[1] ('sparsity' family 'prune', kind 'channels'): FFN widths that differ between layers ship "
        "padded with zero channels to one intermediate_size, which runtime 'transformers' loads at that "
        "width, no smaller than the widest layer (kernels.load_pretrained_compressed rebuilds the smaller "
        "model)"
    ]


@pytest.mark.parametrize("runtime", sorted(RUNTIMES))
@pytest.mark.parametrize("kind", ["magnitude", "wanda", "2:4"])
def test_masked_sparsity_is_allowed_and_noted_as_dense_zeros(runtime: str, kind: str) -> None:
    choices = [0, 0.5] if kind == "2:4" else [0, 0.25, 0.5]
    s = spec(runtime, base=SPARSITY, kind=kind, choices=choices)
    assert s.deploy_notes == [
        f"space[0] ('sparsity' family 'sparsity', kind '{kind}'): pruned weights ship as dense zeros; "
        f"runtime '{runtime}' serves no sparse compressed weights, so they save no storage or time there"
    ]


def test_deploy_needs_a_compression_family() -> None:
    data = copy.deepcopy(MIXED)
    data["space"] = [{"name": "x", "kind": "int", "low": 1, "high": 3}]
    data["deploy"] = {"runtime": "transformers"}
    with pytest.raises(
        SpecError,
        match=r"deploy: format 'compressed-tensors' exports compressed weights, but the space has no 'bits' "
        r"or 'sparsity' family; add one, or remove deploy",
    ):
        spec_from_dict(data)


@pytest.mark.parametrize(
    ("deploy", "match"),
    [
        (
            {"runtime": "onnx"},
            r"deploy\.runtime: Input should be 'transformers', 'vllm' or 'vllm-cpu' \(got 'onnx'\)",
        ),
        (
            {"runtime": "vllm", "format": "gguf"},
            r"deploy\.format: Input should be 'compressed-tensors' \(got 'gguf'\)",
        ),
        ({}, r"deploy\.runtime: field required"),
        (
            {"runtime": "vllm", "device": "h100"},
            r"deploy\.device: unknown field; allowed fields: \['format', 'runtime'\]",
        ),
    ],
)
def test_deploy_section_field_errors(deploy: dict[str, Any], match: str) -> None:
    data = copy.deepcopy(MIXED)
    data["deploy"] = deploy
    with pytest.raises(SpecError, match=match):
        spec_from_dict(data)


def test_a_bad_space_reports_its_own_error_not_a_deploy_one() -> None:
    with pytest.raises(SpecError, match=r"invalid study spec \(1 problem\):\n  space: .*'group_by' option"):
        spec("vllm", group_by="head")


# -- round trip and CLI -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["minilm-vllm.yaml", "minilm-mixed-precision.yaml"])
def test_deploy_round_trips_through_to_dict_and_json(path: str) -> None:
    s = load_spec(ROOT / "configs" / path)
    assert s.deploy is not None
    doc = json.loads(json.dumps(s.to_dict()))
    assert doc["deploy"] == {"format": "compressed-tensors", "runtime": s.deploy.runtime}
    assert spec_from_dict(doc) == s


def test_shipped_vllm_config_targets_vllm() -> None:
    s = load_spec(ROOT / "configs" / "minilm-vllm.yaml")
    assert s.deploy == DeployTarget(runtime="vllm")


def test_cli_validate_refuses_a_space_the_runtime_cannot_load(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from frontier.services._cli import app

    data = copy.deepcopy(MIXED)
    data["deploy"] = {"runtime": "vllm-cpu"}
    data["space"][0]["options"].update(choices=[4], group_size=32, symmetric=False)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(app, ["validate", str(bad)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.output.splitlines() == [
        "error: invalid study spec (1 problem):",
        "  deploy: space[0].options.symmetric=false: asymmetric weights do not load in any runtime "
        "(zero-point shape mismatch, llm-compressor #1618); set symmetric: true",
    ]
