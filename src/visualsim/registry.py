"""Name → class registries, so saved configurations can rebuild objects.

Extractors and indexes each have a :class:`Registry`. A class registered under
a name can be rebuilt from ``{"name": ..., "config": {...}}``, which is what a
catalogue's ``manifest.json`` stores; users register their own classes the same
way the built-in ones are registered.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T", bound=type)


class Registry(Generic[T]):
    """A mapping of names to classes for one kind of component.

    Parameters
    ----------
    kind
        What is registered ("extractor", "index"), used in messages.
    builtins
        Names mapped to ``"module:attribute"`` strings, imported on first use so
        that registering a heavy backend never imports it.
    """

    def __init__(self, kind: str, builtins: Mapping[str, str] | None = None) -> None:
        self.kind = kind
        self._classes: dict[str, T] = {}
        self._lazy: dict[str, str] = dict(builtins or {})
        self.builtins: Mapping[str, str] = MappingProxyType(dict(builtins or {}))
        """The built-in names and their ``"module:attribute"`` targets (read-only)."""

    def register(self, name: str, *, overwrite: bool = False) -> Callable[[T], T]:
        """Return a class decorator registering the class under ``name``.

        The class gets a ``name`` attribute equal to ``name``.
        """

        def decorator(cls: T) -> T:
            self.add(name, cls, overwrite=overwrite)
            return cls

        return decorator

    def add(self, name: str, cls: T, *, overwrite: bool = False) -> None:
        """Register ``cls`` under ``name``; refuse a clash unless ``overwrite``."""
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{self.kind} name must be a non-empty string, got {name!r}")
        existing = self._classes.get(name)
        if existing is not None and existing is not cls and not overwrite:
            raise ConfigError(
                f"{self.kind} name {name!r} is already registered to "
                f"{existing.__module__}.{existing.__qualname__}; pass overwrite=True to replace it"
            )
        builtin = self._lazy.get(name)
        here = f"{getattr(cls, '__module__', '')}:{getattr(cls, '__qualname__', '')}"
        if existing is None and builtin is not None and builtin != here and not overwrite:
            # a built-in not imported yet: taking its name would save catalogues that
            # every other process rebuilds with the built-in class
            raise ConfigError(
                f"{self.kind} name {name!r} is a built-in ({builtin.replace(':', '.')}); "
                "choose another name, or pass overwrite=True to replace it"
            )
        if overwrite:
            self._lazy.pop(name, None)
        setattr(cls, "name", name)  # noqa: B010 - T is any class
        self._classes[name] = cls

    def get(self, name: str) -> T:
        """Return the class registered under ``name``."""
        if name not in self._classes and name in self._lazy:
            module, _, attr = self._lazy[name].partition(":")
            cls = getattr(importlib.import_module(module), attr)
            self._classes.setdefault(name, cls)
        try:
            return self._classes[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind} {name!r}; known: {', '.join(self.names()) or 'none'}. "
                f"Register your own class with visualsim.register_{self.kind}({name!r})"
            ) from None

    def names(self) -> list[str]:
        """Return every registered name, sorted."""
        return sorted(set(self._classes) | set(self._lazy))

    def __contains__(self, name: object) -> bool:
        return name in self._classes or name in self._lazy

    def build(self, name: str, config: Mapping[str, Any] | None = None) -> Any:
        """Instantiate the class registered under ``name`` from its config."""
        cls = self.get(name)
        from_config = getattr(cls, "from_config", None)
        try:
            if from_config is not None:
                return from_config(dict(config or {}))
            return cls(**dict(config or {}))
        except TypeError as exc:
            raise ConfigError(f"invalid config for {self.kind} {name!r}: {exc}") from exc

    def to_spec(self, obj: Any) -> dict[str, Any]:
        """Return ``{"name": ..., "config": ...}`` for a registered object."""
        name = getattr(type(obj), "name", None)
        registered = isinstance(name, str) and name in self and self.get(name) is type(obj)
        if not registered:
            raise ConfigError(
                f"{type(obj).__qualname__} is not a registered {self.kind}; decorate it with "
                f"@visualsim.register_{self.kind}('some-name') so it can be saved"
            )
        config: dict[str, Any] = obj.get_config()
        return {"name": name, "config": config}

    def from_spec(self, spec: Mapping[str, Any]) -> Any:
        """Rebuild an object from ``{"name": ..., "config": ...}``."""
        if not isinstance(spec, Mapping) or "name" not in spec:
            raise ConfigError(f"{self.kind} spec must be a mapping with a 'name', got {spec!r}")
        return self.build(spec["name"], spec.get("config"))
