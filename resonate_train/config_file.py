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

from ttaeval.registry import check_types

T = TypeVar("T")


def config_from_toml(cls: type[T], path: str | Path, **overrides: Any) -> T:
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the config: {exc}") from None
    if unknown := sorted(set(data) - {f.name for f in fields(cls)}):  # type: ignore[arg-type]
        raise ValueError(f"{path}: unknown key(s) {', '.join(unknown)}")
    check_types(cls, data, str(path))
    data.update({k: v for k, v in overrides.items() if v not in (None, [])})
    return cls(**data)
