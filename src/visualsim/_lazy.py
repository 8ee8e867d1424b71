"""Lazily resolved package attributes (PEP 562), shared by the package ``__init__`` files.

A package lists ``name -> submodule`` and gets a module ``__getattr__`` that
imports the submodule on first access (so importing the package never pulls in
TensorFlow, FAISS or matplotlib) and a ``__dir__`` that shows the lazy names.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, names: Mapping[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Return ``(__getattr__, __dir__)`` for ``package``.

    Parameters
    ----------
    package
        The package's ``__name__``.
    names
        Public name -> submodule (relative to ``package``) that defines it.
    namespace
        The package's ``globals()``; a resolved name is cached there.
    """

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{module}", package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(names))

    return __getattr__, __dir__
