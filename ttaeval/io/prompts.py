"""Prompt suites: TTA-Bench JSON (a file or a folder), AudioCaps jsonl, and plain text.

Every suite becomes a list of ``Prompt`` records with unique ids. The suite's own attributes
(``event_list``, ``event_count``, ``event_relation``, ``perturbation_type``, ``notes``,
``categories``, ...) are kept as they are in ``Prompt.attributes``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ttaeval.registry import Registry


class PromptError(ValueError):
    """A malformed prompt file: the message names the file and the line or field."""


@dataclass(frozen=True)
class Prompt:
    """One evaluation prompt.

    Attributes:
        id: unique within its suite (``prompt_0001``, an AudioCaps ``audio_id``, ``line_0003``).
        text: what the generator is asked for.
        dimension: accuracy, generalization, robustness, fairness, bias, toxicity, or the suite's own.
        attributes: the suite's other fields, unchanged.
    """

    id: str
    text: str
    dimension: str = ""
    attributes: dict[str, Any] = field(default_factory=dict, hash=False, compare=True)

    @property
    def content_key(self) -> str:
        """Hash of what a text-conditioned scorer reads (text, dimension, attributes), not the id."""
        payload = json.dumps([self.text, self.dimension, self.attributes], sort_keys=True, default=str)
        return hashlib.blake2b(payload.encode(), digest_size=12).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "text": self.text, "dimension": self.dimension, "attributes": self.attributes}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Prompt:
        return cls(d["id"], d["text"], d.get("dimension", ""), dict(d.get("attributes") or {}))


# TTA-Bench file names -> dimension, for files whose entries carry no "Dimensions of evaluation".
TTA_BENCH_FILES = {
    "acc_prompt.json": "accuracy",
    "generalization_prompt.json": "generalization",
    "robustness_prompt.json": "robustness",
    "fairness_prompt.json": "fairness",
    "bias_prompt.json": "bias",
    "toxicity_prompt.json": "toxicity",
}

# Suites named "NAME:ARG" (e.g. "synth:accuracy"): NAME -> a loader taking ARG, imported on first use.
SUITE_LOADERS: Registry[Callable[[str], list[Prompt]]] = Registry("prompt suite")
SUITE_LOADERS.register("synth", "ttaeval.synth.suites:load_synth")


def load_prompts(source: str | Path) -> list[Prompt]:
    """Load a prompt suite from a path or a registered suite spec.

    Accepted: a TTA-Bench JSON file (a list of objects with ``id`` and ``prompt_text``); a folder of
    them (TTA-Bench's six files, read in its dimension order); an AudioCaps jsonl (``prompt``,
    ``audio_id``); a ``.txt`` file (one prompt a line, ids ``line_0001`` ...); ``NAME:ARG`` for a
    registered suite.

    Raises:
        PromptError: the file and line/field at fault, duplicate ids, empty text, or a file that
            cannot be read.
        FileNotFoundError: the path does not exist.
    """
    text = str(source)
    name, sep, arg = text.partition(":")
    if sep and name in SUITE_LOADERS and not Path(text).exists():
        try:
            return _checked(SUITE_LOADERS.get(name)(arg), text)
        except KeyError as exc:
            raise PromptError(str(exc).strip("'\"")) from None
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"prompt source not found: {path}")
    try:
        if path.is_dir():
            prompts = _load_folder(path)
        elif path.suffix == ".json":
            prompts = _load_tta_bench_json(path)
        elif path.suffix == ".jsonl":
            prompts = _load_jsonl(path)
        elif path.suffix == ".txt":
            prompts = _load_text(path)
        else:
            raise PromptError(f"{path}: unknown prompt format {path.suffix!r} (expected .json, .jsonl, .txt)")
    except OSError as exc:  # no read permission, a FIFO's neighbour gone, an I/O error: an input error
        raise PromptError(f"{exc.filename or path}: cannot read the prompts: {exc.strerror or exc}") from None
    return _checked(prompts, str(path))


def _checked(prompts: Iterable[Prompt], where: str) -> list[Prompt]:
    out, seen = [], {}
    for p in prompts:
        if p.id in seen:
            raise PromptError(f"{where}: duplicate prompt id {p.id!r}")
        seen[p.id] = p
        out.append(p)
    if not out:
        raise PromptError(f"{where}: no prompts")
    return out


def _text_field(value: Any, where: str, field_name: str) -> str:
    if not isinstance(value, str):
        raise PromptError(f"{where}: field {field_name!r} must be a string, got {type(value).__name__}")
    value = value.strip()
    if not value:
        raise PromptError(f"{where}: field {field_name!r} is empty")
    return value


def _load_folder(folder: Path) -> list[Prompt]:
    known = [folder / name for name in TTA_BENCH_FILES if (folder / name).exists()]
    others = sorted(p for p in folder.glob("*.json") if p.name not in TTA_BENCH_FILES)
    files = known + others
    if not files:
        raise PromptError(f"{folder}: no TTA-Bench prompt files (*.json) in this folder")
    prompts: list[Prompt] = []
    for f in files:
        prompts.extend(_load_tta_bench_json(f))
    return prompts


def _load_tta_bench_json(path: Path) -> list[Prompt]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise PromptError(
            f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except UnicodeDecodeError as exc:
        raise PromptError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except RecursionError:
        raise PromptError(f"{path}: JSON nested too deeply to read") from None
    if not isinstance(data, list):
        raise PromptError(f"{path}: expected a JSON list of prompt objects, got {type(data).__name__}")
    default_dim = TTA_BENCH_FILES.get(path.name, "")
    prompts = []
    for i, entry in enumerate(data):
        where = f"{path}: entry {i}"
        if not isinstance(entry, dict):
            raise PromptError(f"{where}: expected an object, got {type(entry).__name__}")
        if "id" not in entry:
            raise PromptError(f"{where}: missing field 'id'")
        if "prompt_text" not in entry:
            raise PromptError(f"{where} (id {entry['id']!r}): missing field 'prompt_text'")
        pid = _text_field(str(entry["id"]) if isinstance(entry["id"], int) else entry["id"], where, "id")
        text = _text_field(entry["prompt_text"], f"{where} (id {pid!r})", "prompt_text")
        dim = entry.get("Dimensions of evaluation") or default_dim
        attrs = {k: v for k, v in entry.items() if k not in ("id", "prompt_text", "Dimensions of evaluation")}
        prompts.append(Prompt(pid, text, str(dim).strip().lower(), attrs))
    return prompts


def _load_jsonl(path: Path) -> list[Prompt]:
    try:
        return _read_jsonl(path)
    except UnicodeDecodeError as exc:
        raise PromptError(f"{path}: not UTF-8 text ({exc.reason})") from None


def _read_jsonl(path: Path) -> list[Prompt]:
    prompts = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}: line {lineno}"
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as exc:
                raise PromptError(f"{where}: invalid JSON: {exc.msg}") from None
            except RecursionError:
                raise PromptError(f"{where}: JSON nested too deeply to read") from None
            if not isinstance(entry, dict):
                raise PromptError(f"{where}: expected an object, got {type(entry).__name__}")
            text_key = next((k for k in ("prompt", "caption", "text", "prompt_text") if k in entry), None)
            if text_key is None:
                raise PromptError(f"{where}: missing field 'prompt' (or 'caption'/'text')")
            id_key = next((k for k in ("id", "audio_id", "audiocap_id") if k in entry), None)
            pid = _text_field(str(entry[id_key]), where, id_key) if id_key else f"line_{lineno:04d}"
            text = _text_field(entry[text_key], where, text_key)
            attrs = {k: v for k, v in entry.items() if k not in (text_key, id_key)}
            prompts.append(Prompt(pid, text, str(attrs.pop("dimension", "")), attrs))
    return prompts


def _load_text(path: Path) -> list[Prompt]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise PromptError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return [Prompt(f"line_{n:04d}", line.strip()) for n, line in enumerate(lines, 1) if line.strip()]
