"""Pair a folder of audio files with prompts, by id — never by listing order.

A file's stem is a prompt id (``prompt_0001.wav``, ``Y--0w1YA1Hm4.wav``), or TTA-Bench's release
naming ``S001_P0001.wav`` (system 001, prompt number 1 -> the prompt whose id ends in 0001).
Files that match no prompt are reported, not dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ttaeval.io.audio import AUDIO_EXTENSIONS, UNSUPPORTED_AUDIO_EXTENSIONS
from ttaeval.io.prompts import Prompt

_TTA_BENCH_NAME = re.compile(r"^S(?P<system>\d+)_P(?P<number>\d+)$")
_TRAILING_NUMBER = re.compile(r"(\d+)$")


@dataclass(frozen=True)
class AudioItem:
    """One file to score: which system and prompt it answers, or why it cannot be paired."""

    system: str
    prompt_id: str
    path: Path
    prompt: Prompt | None = None
    sample: int = 0
    error: str | None = None


def audio_files(folder: Path) -> list[Path]:
    """Audio files directly in ``folder`` (by extension, including formats that cannot be read, so
    they are reported), sorted by name."""
    known = AUDIO_EXTENSIONS + UNSUPPORTED_AUDIO_EXTENSIONS
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in known)


def collect_folder(
    folder: str | Path, prompts: list[Prompt] | None, system: str | None = None
) -> tuple[list[AudioItem], list[tuple[str, Prompt]]]:
    """Pair every audio file in ``folder`` with its prompt.

    Args:
        folder: the folder of generated audio.
        prompts: the suite; None when scoring without prompts (each file is its own item).
        system: the system name; defaults to the folder's name. When the folder holds TTA-Bench
            files of several systems (``S001_...``, ``S002_...``), each becomes ``{system}/S001`` ...

    Returns:
        The items (one per file, sorted; unpaired files carry an error and their file name as
        prompt id), and the (system, prompt) pairs that have no file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"audio folder not found: {folder}")
    base = system or folder.resolve().name
    files = audio_files(folder)
    by_id = {p.id: p for p in prompts or []}
    by_number: dict[int, Prompt] = {}
    for p in prompts or []:
        m = _TRAILING_NUMBER.search(p.id)
        if m:
            by_number.setdefault(int(m.group(1)), p)
    tta_systems = {m.group("system") for f in files if (m := _TTA_BENCH_NAME.match(f.stem))}
    items, seen = [], set()
    for f in files:
        stem, sys_name, prompt = f.stem, base, None
        m = _TTA_BENCH_NAME.match(stem)
        if prompts is None:
            prompt_id = stem
        elif stem in by_id:
            prompt_id, prompt = stem, by_id[stem]
        elif m and int(m.group("number")) in by_number:
            prompt = by_number[int(m.group("number"))]
            prompt_id = prompt.id
            if len(tta_systems) > 1:
                sys_name = f"{base}/S{m.group('system')}"
        else:
            items.append(AudioItem(base, f.name, f, error=f"{f.name}: file name matches no prompt id"))
            continue
        if (sys_name, prompt_id) in seen:
            items.append(
                AudioItem(sys_name, f.name, f, error=f"{f.name}: a second file for prompt {prompt_id!r}")
            )
            continue
        seen.add((sys_name, prompt_id))
        items.append(AudioItem(sys_name, prompt_id, f, prompt))
    systems = sorted({i.system for i in items if i.error is None}) or [base]
    missing = [(s, p) for s in systems for p in prompts or [] if (s, p.id) not in seen]
    return items, missing
