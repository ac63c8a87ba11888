"""Pair a folder of audio files with prompts, by name — never by listing order.

One naming rule, shared by ``ttaeval score`` and the ``folder:`` generator, and the one ``ttaeval
run`` writes its audio by: a file's stem is a prompt id or its :func:`safe_name` (sample 0), or that
followed by ``_K`` (sample K). TTA-Bench's release naming ``S001_P0001`` (system 001, prompt number
1 -> the prompt whose id ends in 0001) is read too. A name that could answer two requests is an
error for both, never a guess; files that match no prompt are reported, not dropped.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ttaeval.io.audio import AUDIO_EXTENSIONS, UNSUPPORTED_AUDIO_EXTENSIONS
from ttaeval.io.prompts import Prompt

_TTA_BENCH_NAME = re.compile(r"^S(?P<system>\d+)_P(?P<number>\d+)$")
_TRAILING_NUMBER = re.compile(r"(\d+)$")
_KEPT_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}")
"""Names kept as they are: lower case (no two differ only in case), no hash marker ``~``."""


def safe_name(text: str) -> str:
    """The file-name form of a prompt id or system name, injective and safe on case-insensitive file
    systems: kept as is when it is lower-case letters, digits, ``._-``; otherwise a slug, ``~``, and
    a hash of the exact text (``a b`` -> ``a_b~…``; ``../x`` or ``a/b`` never leave the run folder).
    A kept name never holds ``~``, a hashed one always does, so no two texts share a name."""
    if _KEPT_NAME.fullmatch(text) and not text.endswith("."):
        return text
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")[:60] or "id"
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
    return f"{slug}~{digest}"


def printable(text: str) -> str:
    """``text`` with what UTF-8 cannot hold (a file name's undecodable bytes, kept by Python as
    surrogates) written as ``\\udcff`` escapes: safe for SQLite, terminals and reports."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


@dataclass(frozen=True)
class AudioItem:
    """One (system, prompt, sample) to score: its file, or why there is none.

    ``problem`` says which kind of failure an ``error`` is: ``missing`` (a prompt without a file),
    ``unmatched`` (a file whose name answers no prompt), ``ambiguous`` (a name that could answer two),
    ``duplicate`` (a second file for one request); empty when the file is to be read."""

    system: str
    prompt_id: str
    path: Path | None
    prompt: Prompt | None = None
    sample: int = 0
    error: str | None = None
    problem: str = ""


def audio_files(folder: Path) -> list[Path]:
    """Audio files directly in ``folder`` (by extension, including formats that cannot be read, so
    they are reported), sorted by name."""
    known = AUDIO_EXTENSIONS + UNSUPPORTED_AUDIO_EXTENSIONS
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in known)


def file_names(prompts: Iterable[Prompt]) -> dict[str, set[str]]:
    """Name -> the prompt ids a file stem of that name (before any ``_K``) stands for: each id as
    written and its :func:`safe_name`."""
    names: dict[str, set[str]] = {}
    for p in prompts:
        for name in {p.id, safe_name(p.id)}:
            names.setdefault(name, set()).add(p.id)
    return names


def claims(stem: str, names: dict[str, set[str]], samples: int | None = None) -> set[tuple[str, int]]:
    """Every (prompt id, sample) the file stem ``stem`` could be: ``NAME`` (sample 0) or ``NAME_K``
    (sample K, below ``samples`` when given)."""
    found = {(pid, 0) for pid in names.get(stem, ())}
    head, sep, k = stem.rpartition("_")
    if sep and k.isdigit() and (samples is None or int(k) < samples):
        found |= {(pid, int(k)) for pid in names.get(head, ())}
    return found


def collect_folder(
    folder: str | Path, prompts: list[Prompt] | None, system: str | None = None
) -> list[AudioItem]:
    """Pair every audio file in ``folder`` with its prompt and sample.

    Args:
        folder: the folder of generated audio.
        prompts: the suite; None when scoring without prompts (each file is its own item).
        system: the system name; defaults to the folder's name. When the folder holds TTA-Bench
            files of several systems (``S001_...``, ``S002_...``), each becomes ``{system}/S001`` ...

    Returns:
        One item per file (sorted; a file that cannot be paired carries an error and its file name
        as prompt id), then one ``missing`` item per prompt of a system that has no file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"audio folder not found: {printable(str(folder))}")
    base = printable(system or folder.resolve().name)
    files = audio_files(folder)
    names = file_names(prompts or [])
    by_number: dict[int, Prompt] = {}
    for p in prompts or []:
        m = _TRAILING_NUMBER.search(p.id)
        if m:
            by_number.setdefault(int(m.group(1)), p)
    by_id = {p.id: p for p in prompts or []}
    tta_systems = {m.group("system") for f in files if (m := _TTA_BENCH_NAME.match(f.stem))}
    items, seen = [], set()
    for f in files:
        stem, name, sys_name = f.stem, printable(f.name), base
        if prompts is None:
            found = {(printable(stem), 0)}
        elif (m := _TTA_BENCH_NAME.match(stem)) and int(m.group("number")) in by_number:
            found = {(by_number[int(m.group("number"))].id, 0)}
            if len(tta_systems) > 1:
                sys_name = f"{base}/S{m.group('system')}"
        else:  # a name that is a prompt's id or safe name is that prompt's (score has no sample count)
            found = {(pid, 0) for pid in names.get(stem, ())} or claims(stem, names)
        if not found:
            error = f"{name}: file name matches no prompt id"
            items.append(AudioItem(base, name, f, error=error, problem="unmatched"))
            continue
        if len(found) > 1:
            could = " or ".join(f"sample {k} of prompt {pid!r}" for pid, k in sorted(found))
            error = f"{name}: ambiguous: could be {could}; rename it"
            items.append(AudioItem(base, name, f, error=error, problem="ambiguous"))
            continue
        ((prompt_id, sample),) = found
        if (sys_name, prompt_id, sample) in seen:
            error = f"{name}: a second file for prompt {prompt_id!r}, sample {sample}"
            items.append(AudioItem(sys_name, name, f, error=error, problem="duplicate"))
            continue
        seen.add((sys_name, prompt_id, sample))
        items.append(AudioItem(sys_name, prompt_id, f, by_id.get(prompt_id), sample))
    systems = sorted({i.system for i in items if i.error is None}) or [base]
    answered = {(s, pid) for s, pid, _ in seen}
    for s in systems:
        for p in prompts or []:
            if (s, p.id) not in answered:
                error = f"{printable(str(folder))}: no file for prompt {p.id!r} ({safe_name(p.id)}.wav)"
                items.append(AudioItem(s, p.id, None, p, error=error, problem="missing"))
    return items
