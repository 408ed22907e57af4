"""Issue 14: the service holds every path-valued option to its allowed roots, found by the option's type
(``LocalPath``), not by what its value looks like; bare relative names included.

Against a real ``frontier serve`` on 127.0.0.1 (queue paused: nothing runs). The service runs in its home
directory and allows only ``home/data``, so a bare name such as ``mytok`` is ``home/mytok``: outside.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.services.conftest import ALICE, Service

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    service = Service(tmp_path_factory.mktemp("paths"), max_concurrent=0).start()
    yield service
    service.stop()


def post(svc: Service, body: dict[str, Any]) -> httpx.Response:
    with svc.client(ALICE) as c:
        return c.post("/studies", content=json.dumps(body), headers={"Content-Type": "application/json"})


def _bits(layout: str) -> dict[str, Any]:
    return {
        "kind": "family",
        "name": "q",
        "family": "bits",
        "options": {"num_layers": 2, "layout": layout, "targets": ["**"], "group_by": "all"},
    }


def lm_train(**options: Any) -> dict[str, Any]:
    nas = {"layers": [1, 2], "hidden": [16, 32], "head_dim": [8], "ffn_ratio": [1, 2]}
    return {
        "name": "paths-lm",
        "evaluator": {"kind": "lm-train", "options": {"steps": 4, "eval_every": 2, **options}},
        "space": [{"kind": "family", "name": "lm", "family": "nas", "options": nas}],
        "objectives": [{"name": "perplexity", "direction": "minimize"}],
    }


def causal_lm(model: str) -> dict[str, Any]:
    return {
        "name": "paths-causal",
        "evaluator": {"kind": "hf-causal-lm-perplexity", "options": {"model": model}},
        "space": [_bits("llama")],
        "objectives": [{"name": "perplexity", "direction": "minimize"}],
    }


def embedding(model: str) -> dict[str, Any]:
    return {
        "name": "paths-embedding",
        "evaluator": {"kind": "hf-embedding-fidelity", "options": {"model": model}},
        "space": [_bits("bert")],
        "objectives": [{"name": "cosine_error", "direction": "minimize"}],
    }


def tabular(table: str) -> dict[str, Any]:
    return {
        "name": "paths-table",
        "evaluator": {"kind": "tabular", "options": {"table": table, "metrics": {"f1": "f1"}}},
        "space": [{"name": "x", "kind": "int", "low": 0, "high": 9}],
        "objectives": [{"name": "f1", "direction": "minimize"}],
    }


# Each value names no directory and has no file suffix: the old heuristic let all of these through.
CASES = [
    ("evaluator.options.text_file", lambda v: lm_train(text_file=v), "README"),
    ("evaluator.options.tokenizer", lambda v: lm_train(tokenizer=v), "mytok"),
    ("evaluator.options.model", causal_lm, "tiny-llama"),
    ("evaluator.options.model", embedding, "minilm"),
    ("evaluator.options.table", tabular, "toy.csv"),
]


@pytest.mark.parametrize(("field", "make", "bare"), CASES, ids=[c[0].split(".")[-1] for c in CASES])
def test_path_options_outside_the_roots_are_refused_bare_names_included(
    svc: Service, field: str, make: Any, bare: str, tmp_path: Any
) -> None:
    for value in (bare, str(tmp_path / bare), f"data/../{bare}", f"~/{bare}"):
        r = post(svc, make(value))
        assert r.status_code == 422, (value, r.text[:300])
        detail = r.json()["detail"]
        assert f"{field}: the path {value!r} is outside the allowed roots [{str(svc.data)!r}]" in detail
        assert "Put the file under one of them." in detail


def test_a_relative_path_option_inside_a_root_is_accepted_and_made_absolute(svc: Service) -> None:
    corpus = svc.data / "corpus.txt"
    corpus.write_text("words " * 2000)
    r = post(svc, lm_train(text_file="data/corpus.txt"))
    assert r.status_code == 201, r.text[:300]
    assert r.json()["spec"]["evaluator"]["options"]["text_file"] == str(corpus.resolve())
    with svc.client(ALICE) as c:
        c.post(f"/studies/{r.json()['id']}/cancel")


def test_options_that_are_not_paths_are_left_alone(svc: Service) -> None:
    # ``dataset`` is a Hugging Face dataset name, not a path: a slash in it is no reason to refuse it.
    r = post(svc, {**lm_train(dataset="Salesforce/wikitext:wikitext-2-raw-v1"), "name": "paths-dataset"})
    assert r.status_code == 201, r.text[:300]
    assert r.json()["spec"]["evaluator"]["options"]["dataset"] == "Salesforce/wikitext:wikitext-2-raw-v1"
    with svc.client(ALICE) as c:
        c.post(f"/studies/{r.json()['id']}/cancel")


def test_a_family_path_option_is_held_to_the_roots_too(tmp_path: Any) -> None:
    from frontier.services import Settings
    from frontier.services._policy import check_policy
    from frontier.spaces import (
        LocalPath,
        SpaceFamily,
        SpecError,
        path_option_names,
        register_family,
        spec_from_dict,
    )
    from frontier.spaces._families import FAMILIES

    @register_family("test-grid-file")
    class GridFile(SpaceFamily):
        grid: LocalPath
        note: str = ""

        def expand(self, prefix: str) -> list[dict[str, Any]]:
            return [{"name": f"{prefix}.x", "kind": "int", "low": 0, "high": 3}]

    try:
        assert path_option_names(GridFile) == ["grid"]
        (tmp_path / "data").mkdir()
        settings = Settings(allowed_roots=[tmp_path / "data"])
        spec = tabular(str(tmp_path / "data" / "toy.csv"))
        spec["space"] = [
            {"kind": "family", "name": "g", "family": "test-grid-file", "options": {"grid": "g.txt"}}
        ]
        with pytest.raises(
            SpecError, match=r"space\[0\]\.options\.grid: the path 'g\.txt' is outside the allowed"
        ):
            check_policy(spec_from_dict(spec), settings)
        spec["space"][0]["options"] = {"grid": str(tmp_path / "data" / "g.txt"), "note": "../../etc/passwd"}
        assert check_policy(spec_from_dict(spec), settings).space[0].options["note"] == "../../etc/passwd"
    finally:
        FAMILIES.remove("test-grid-file")
