"""One registry type behind every extension point (evaluators, samplers, space families, latency predictors,
compression handlers, linear kernels).

A :class:`Registry` maps names to components. Its rules are the same everywhere:

* ``register(name)`` (a decorator) or ``add(name, obj)`` adds a component; a name already held by another
  component raises ``ValueError`` naming both. Registering the same component again under the same name is
  a no-op, and so is a module re-import (same ``__module__`` and ``__qualname__``: the new object replaces
  the old one), so ``importlib.reload`` and doubly imported test helpers keep working.
* ``get(name)`` returns the component or raises ``ValueError("Unknown <kind> 'name'. Available: [...]")``.
* ``available()`` lists the names, sorted.
* Built-in components live in the modules the registry declares (``builtins``), imported on first use, so
  ``import frontier.spaces`` stays light and the list of built-in modules is kept in one place.

It lives in ``spaces``, the lowest layer, so every package can use it.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
U = TypeVar("U")


def _origin(obj: object) -> str:
    """Where a component was defined, for error messages and the re-import rule."""
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None) or getattr(type(obj), "__qualname__", repr(obj))
    if module is None:
        module = type(obj).__module__
    return f"{module}.{qualname}"


class Registry(Generic[T]):
    """Components of one kind, by name.

    Args:
        kind: what the components are, as users call them ("evaluator", "sampler"); it starts the error
            messages.
        builtins: modules that register the built-in components when imported; imported on the first
            ``get``/``available``/``in``, never at construction.
        origin: how a component's definition site is named (default: its module and qualified name); used
            in the duplicate-name error and to recognise a re-imported module's component.
    """

    def __init__(
        self,
        kind: str,
        *,
        builtins: Sequence[str] = (),
        origin: Callable[[T], str] | None = None,
    ) -> None:
        self.kind = kind
        self.builtins = tuple(builtins)
        self._origin: Callable[[T], str] = origin or _origin
        self._items: dict[str, T] = {}
        self._loaded = not self.builtins
        # Loading imports modules that register into this registry: reentrant, and safe across threads
        # (Ray workers evaluate in threads).
        self._lock = threading.RLock()
        self._loading = False
        self.version = 0
        """Incremented on every change, so callers can cache lookups (the linear-kernel dispatch does)."""

    # --- adding -------------------------------------------------------------------------------------
    def add(self, name: str, obj: T) -> T:
        """Register ``obj`` as ``name``; see the class docstring for the duplicate rule."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"A {self.kind} name must be a non-empty string. Got {name!r} instead.")
        with self._lock:
            held = self._items.get(name)
            # A different object with the same origin is the same component from a re-imported module.
            if held is not None and held is not obj and self._origin(held) != self._origin(obj):
                raise ValueError(
                    f"Duplicate {self.kind} '{name}': already registered by {self._origin(held)}, "
                    f"cannot register {self._origin(obj)} under the same name. Pick another name."
                )
            self._items[name] = obj
            self.version += 1
        return obj

    def register(self, name: str) -> Callable[[U], U]:
        """Decorator form of :meth:`add`: ``@registry.register("name")``."""

        def deco(obj: U) -> U:
            self.add(name, obj)  # type: ignore[arg-type]  # U is T at every call site; a decorator keeps the subtype
            return obj

        return deco

    def remove(self, name: str) -> None:
        """Drop ``name`` (for tests that register a throw-away component); unknown names are ignored."""
        with self._lock:
            if self._items.pop(name, None) is not None:
                self.version += 1

    # --- looking up ---------------------------------------------------------------------------------
    def load_builtins(self) -> None:
        """Import the declared built-in modules once (idempotent; a no-op while they are importing)."""
        if self._loaded or self._loading:
            return
        with self._lock:
            if self._loaded or self._loading:
                return
            self._loading = True
            try:
                for module in self.builtins:
                    importlib.import_module(module)
                self._loaded = True
            finally:
                self._loading = False

    def get(self, name: str) -> T:
        """The component registered as ``name``.

        Raises:
            ValueError: ``Unknown <kind> 'name'. Available: [...]``.
        """
        self.load_builtins()
        try:
            return self._items[name]
        except (KeyError, TypeError):  # TypeError: an unhashable name from a hostile spec
            raise ValueError(self.unknown_message(name)) from None

    def unknown_message(self, name: object) -> str:
        """The one error text for a name nobody registered."""
        shown = f"'{name}'" if isinstance(name, str) else repr(name)
        return f"Unknown {self.kind} {shown}. Available: {self.available()}"

    def available(self) -> list[str]:
        """Registered names, sorted."""
        self.load_builtins()
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        """``(name, component)`` pairs, sorted by name."""
        self.load_builtins()
        return sorted(self._items.items(), key=lambda kv: kv[0])

    def __contains__(self, name: object) -> bool:
        self.load_builtins()
        return isinstance(name, str) and name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.available())

    def __len__(self) -> int:
        self.load_builtins()
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {sorted(self._items)})"
