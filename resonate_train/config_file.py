"""Trainer configs from TOML: the file's keys are the dataclass's fields; flags given on the command
line override them; an unknown key is an error that names it."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

T = TypeVar("T")


def config_from_toml(cls: type[T], path: str | Path, **overrides: Any) -> T:
    data = tomllib.loads(Path(path).read_text())
    if unknown := sorted(set(data) - {f.name for f in fields(cls)}):  # type: ignore[arg-type]
        raise ValueError(f"{path}: unknown key(s) {', '.join(unknown)}")
    data.update({k: v for k, v in overrides.items() if v not in (None, [])})
    return cls(**data)
