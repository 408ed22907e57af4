"""The generic Registry every extension point uses: one duplicate rule, one unknown-name error, lazy
built-ins. Plus: every extension point is a Registry."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from frontier.spaces import Registry

ROOT = Path(__file__).resolve().parents[2]


def _a() -> None: ...


def _b() -> None: ...


def test_register_get_and_available_sorted() -> None:
    reg: Registry[object] = Registry("widget")
    reg.register("zeta")(_a)
    reg.add("alpha", _b)
    assert reg.available() == ["alpha", "zeta"]
    assert reg.get("zeta") is _a
    assert "alpha" in reg and "nope" not in reg and 3 not in reg
    assert list(reg) == ["alpha", "zeta"] and len(reg) == 2
    assert reg.items() == [("alpha", _b), ("zeta", _a)]


def test_unknown_name_lists_the_available_ones() -> None:
    reg: Registry[object] = Registry("widget")
    reg.add("b", _a)
    reg.add("a", _b)
    with pytest.raises(ValueError, match=re.escape("Unknown widget 'c'. Available: ['a', 'b']")):
        reg.get("c")
    with pytest.raises(ValueError, match=re.escape("Unknown widget ['x']. Available: ['a', 'b']")):
        reg.get(["x"])  # type: ignore[arg-type]  # an unhashable name from hostile input


def test_a_duplicate_name_raises_naming_both_registrations() -> None:
    reg: Registry[object] = Registry("widget")
    reg.add("w", _a)
    with pytest.raises(
        ValueError,
        match=r"Duplicate widget 'w': already registered by tests\.spaces\.test_registry\._a, "
        r"cannot register tests\.spaces\.test_registry\._b under the same name\. Pick another name\.",
    ):
        reg.add("w", _b)
    assert reg.get("w") is _a  # the first registration stands


def test_reregistering_the_same_object_or_a_reimported_one_is_fine() -> None:
    reg: Registry[object] = Registry("widget")
    reg.add("w", _a)
    reg.add("w", _a)
    # A module re-import makes a new object with the same module and qualified name: it replaces the old.
    namespace: dict[str, object] = {"__name__": _a.__module__}
    exec("def _a():\n    pass\n", namespace)
    again = namespace["_a"]
    assert again is not _a
    reg.add("w", again)
    assert reg.get("w") is again


def test_names_must_be_non_empty_strings() -> None:
    reg: Registry[object] = Registry("widget")
    with pytest.raises(TypeError, match=r"A widget name must be a non-empty string\. Got '' instead\."):
        reg.add("", _a)


def test_builtins_load_lazily_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "frontier_test_builtin_widgets.py").write_text(
        textwrap.dedent(
            """
            from tests.spaces.test_registry import WIDGETS

            IMPORTS = [1] if "IMPORTS" not in globals() else IMPORTS

            @WIDGETS.register("built-in")
            def built_in():
                return "built-in"
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "frontier_test_builtin_widgets", raising=False)
    assert "frontier_test_builtin_widgets" not in sys.modules
    WIDGETS.add("user", _a)  # registering does not load the built-ins
    assert "frontier_test_builtin_widgets" not in sys.modules
    assert WIDGETS.available() == ["built-in", "user"]  # the first look-up does
    assert WIDGETS.get("built-in")() == "built-in"  # type: ignore[operator]
    version = WIDGETS.version
    WIDGETS.available()
    assert WIDGETS.version == version  # loaded once


WIDGETS: Registry[object] = Registry("widget", builtins=("frontier_test_builtin_widgets",))


def test_remove_drops_a_name_and_bumps_the_version() -> None:
    reg: Registry[object] = Registry("widget")
    reg.add("w", _a)
    version = reg.version
    reg.remove("w")
    reg.remove("never-there")
    assert reg.available() == [] and reg.version == version + 1


def test_every_extension_point_is_a_registry() -> None:
    from frontier.evaluators._registry import EVALUATORS
    from frontier.evaluators.latency._registry import PREDICTORS
    from frontier.kernels._config import HANDLERS
    from frontier.kernels._linear_kernels import KERNELS
    from frontier.spaces._families import FAMILIES
    from frontier.spaces._samplers import SAMPLERS

    expected = {
        "evaluator": (EVALUATORS, "digits-classifier"),
        "predictor": (PREDICTORS, "lookup-table"),
        "compression config type": (HANDLERS, "WeightOnlyQuantConfig"),
        "linear kernel": (KERNELS, "dequant-matmul"),
        "space family": (FAMILIES, "moe"),
        "sampler": (SAMPLERS, "tpe"),
    }
    for kind, (registry, builtin) in expected.items():
        assert isinstance(registry, Registry) and registry.kind == kind
        assert builtin in registry.available()
        with pytest.raises(ValueError, match=rf"^Unknown {kind} 'no-such-thing'\. Available: \["):
            registry.get("no-such-thing")


def test_public_functions_use_the_uniform_error() -> None:
    from frontier.evaluators import get_evaluator_class, make_evaluator
    from frontier.spaces._families import expand_family

    with pytest.raises(ValueError, match=r"Unknown evaluator 'x'. Available: \['digits-classifier', "):
        get_evaluator_class("x")
    with pytest.raises(ValueError, match=r"Unknown evaluator 'x'. Available: \["):
        make_evaluator("x", {})
    with pytest.raises(
        ValueError,
        match=r"Unknown space family 'x'. Available: \['bits', 'experts', 'moe', 'nas', 'sparsity'\]",
    ):
        expand_family("x", "p", {})


def test_spec_accepts_a_sampler_registered_by_the_user() -> None:
    from frontier.search import register_sampler
    from frontier.spaces import spec_from_dict
    from frontier.spaces._samplers import SAMPLERS

    spec = {
        "name": "s",
        "evaluator": {"kind": "tabular"},
        "objectives": [{"name": "loss", "direction": "minimize"}],
        "space": [{"kind": "int", "name": "a", "low": 1, "high": 3}],
        "search": {"sampler": "my-random"},
    }
    with pytest.raises(ValueError, match=r"search.sampler: Unknown sampler 'my-random'. Available: \['auto'"):
        spec_from_dict(spec)

    @register_sampler("my-random")
    def _mine(spec):  # pragma: no cover - only looked up
        import optuna

        return optuna.samplers.RandomSampler(seed=spec.search.seed)

    try:
        assert spec_from_dict(spec).search.sampler == "my-random"
    finally:
        SAMPLERS.remove("my-random")


def test_a_builtin_sampler_name_cannot_be_taken() -> None:
    from frontier.search import register_sampler

    with pytest.raises(
        ValueError, match=r"Duplicate sampler 'tpe': already registered by frontier\.search\._samplers\._tpe"
    ):

        @register_sampler("tpe")
        def _other(spec):  # pragma: no cover - never registered
            raise AssertionError


def test_builtins_stay_lazy_on_import() -> None:
    """Importing the packages registers nothing heavy: the evaluator modules load on the first look-up."""
    code = (
        "import sys, frontier.spaces, frontier.evaluators; "
        "print('frontier.evaluators._digits' in sys.modules, 'optuna' in sys.modules); "
        "frontier.evaluators.available_evaluators(); "
        "print('frontier.evaluators._digits' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split() == ["False", "False", "True"]
