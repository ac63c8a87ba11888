"""A small generic registry whose entries may be imported lazily ("module:object").

Heavy optional packages (laion_clap, transformers models, ...) are imported only when the entry that
needs them is asked for, so ``import ttaeval`` stays fast and works without the extras.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class Entry(Generic[T]):
    """One registered name: the object itself, or where to import it from."""

    name: str
    target: str | T
    extra: str | None = None
    requires: tuple[str, ...] = ()

    def load(self) -> T:
        if not isinstance(self.target, str):
            return self.target
        module_name, _, attr = self.target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            hint = (
                f": install the [{self.extra}] extra (pip install 'ttaeval[{self.extra}]')"
                if self.extra
                else ""
            )
            raise ImportError(f"{self.name} needs {exc.name or module_name}{hint}") from exc
        obj = getattr(module, attr)
        self.target = obj
        return obj

    def installed(self) -> bool:
        """True when every required package can be found (without importing it)."""
        return all(importlib.util.find_spec(req) is not None for req in self.requires)


class Registry(Generic[T]):
    """Names -> objects; registering a taken name is an error, an unknown name lists the known ones."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(
        self, name: str, target: str | T, *, extra: str | None = None, requires: tuple[str, ...] = ()
    ) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = Entry(name, target, extra, requires)

    def entry(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            raise KeyError(f"unknown {self.kind} {name!r}; available: {known}") from None

    def get(self, name: str) -> T:
        return self.entry(name).load()

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(sorted(self._entries.values(), key=lambda e: e.name))
