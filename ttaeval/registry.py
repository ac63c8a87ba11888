"""A small generic registry whose entries may be imported lazily ("module:object").

Heavy optional packages (laion_clap, transformers models, ...) are imported only when the entry that
needs them is asked for, so ``import ttaeval`` stays fast and works without the extras.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import importlib
import importlib.util
import math
import types
import typing
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Generic, TypeVar

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
    """Names -> objects; registering a taken name is an error, an unknown name lists the known ones.

    With ``entry_points`` (a group name), installed distributions add entries through that
    entry-point group (``NAME = "module:object"``), read on first lookup; built-in names win.
    """

    def __init__(self, kind: str, entry_points: str | None = None) -> None:
        self.kind = kind
        self.entry_points = entry_points
        self._entries: dict[str, Entry[T]] = {}
        self._plugins_read = entry_points is None

    def read_plugins(self) -> None:
        """Add the entry points of installed distributions (once; ``reread_plugins`` forces it)."""
        if self._plugins_read:
            return
        self._plugins_read = True
        for ep in metadata.entry_points(group=self.entry_points):
            if ep.name not in self._entries:
                self._entries[ep.name] = Entry(ep.name, ep.value)

    def reread_plugins(self) -> None:
        self._plugins_read = self.entry_points is None
        self.read_plugins()

    def register(
        self, name: str, target: str | T, *, extra: str | None = None, requires: tuple[str, ...] = ()
    ) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = Entry(name, target, extra, requires)

    def entry(self, name: str) -> Entry[T]:
        if name not in self._entries:
            self.read_plugins()
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            raise KeyError(f"unknown {self.kind} {name!r}; available: {known}") from None

    def get(self, name: str) -> T:
        return self.entry(name).load()

    def __contains__(self, name: object) -> bool:
        if name not in self._entries:
            self.read_plugins()
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        self.read_plugins()
        return iter(sorted(self._entries.values(), key=lambda e: e.name))


def parse_options(parts: Iterable[str], spec: str, what: str) -> tuple[tuple[str, str], ...]:
    """The ``KEY=VALUE`` parts of a spec string, in order; a part without ``=`` or a repeated key is
    an error naming the spec."""
    options = []
    for part in parts:
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"bad option {part!r} in {what} spec {spec!r}: expected KEY=VALUE")
        options.append((key.strip(), value.strip()))
    keys = [k for k, _ in options]
    if len(set(keys)) != len(keys):
        raise ValueError(f"repeated option in {what} spec {spec!r}")
    return tuple(options)


def options_to_kwargs(cls: type, options: Iterable[tuple[str, str]], what: str) -> dict[str, Any]:
    """Spec options (``KEY=VALUE`` strings) -> keyword arguments of the dataclass ``cls``, each value
    converted to its field's type; an unknown key is an error listing the accepted ones."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for key, raw in options:
        if key not in fields:
            raise ValueError(f"{what} has no option {key!r}; options: {', '.join(sorted(fields))}")
        kwargs[key] = convert_option(raw, hints[key], f"{what} option {key}")
    return kwargs


def check_types(cls: type, data: dict[str, Any], where: str) -> None:
    """Check values read from a file (TOML) against the dataclass ``cls``'s field types, so ``out = 5``
    is an error naming the file and the key, not a crash deep inside the run."""
    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        if key in hints and not _fits(value, hints[key]):
            raise ValueError(
                f"{where}: {key} = {value!r} is a {type(value).__name__}; expected {_type_name(hints[key])}"
            )


def _fits(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is Path:
        return isinstance(value, str | Path)
    if origin in (list, tuple, collections.abc.Sequence):
        item = args[0] if args else Any
        return isinstance(value, list | tuple) and all(_fits(v, item) for v in value)
    if origin in (dict, collections.abc.Mapping):
        kt, vt = args if args else (Any, Any)
        return isinstance(value, dict) and all(_fits(k, kt) and _fits(v, vt) for k, v in value.items())
    if dataclasses.is_dataclass(hint):  # a table the config turns into that dataclass
        return isinstance(value, dict | hint)
    return isinstance(value, hint) if isinstance(hint, type) else True


def _type_name(hint: Any) -> str:
    return (
        getattr(hint, "__name__", None)
        if typing.get_origin(hint) is None
        else str(hint).replace("typing.", "")
    )


def convert_option(raw: str, hint: Any, what: str) -> Any:
    """One option string as ``hint`` (bool, int, float, str, Path, or an Optional of one)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if raw.lower() in ("none", "null", ""):
            return None
        hint = args[0] if len(args) == 1 else str
    try:
        if hint is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if hint is float:
            value = float(raw)
            if not math.isfinite(value):
                raise ValueError(f"{raw} is not a finite number")
            return value
        if hint in (int, str):
            return hint(raw)
        if hint is Path:
            return Path(raw).expanduser()
    except ValueError:
        raise ValueError(f"{what}: cannot read {raw!r} as {getattr(hint, '__name__', hint)}") from None
    return raw
