"""Bad inputs (issue 10): a corpus of broken, odd and valid-but-unusual files and prompts, generated
here, scored through every shipped scorer by ``ttaeval score``. Each file ends as scores or as an
error naming the file and the cause — never a crash, never a silent 0 — and the good files around
it are scored."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from helpers import tone
from ttaeval.cli import app
from ttaeval.io.prompts import PromptError, load_prompts

SCORERS = ["signal", "clap:mini", "clap:mini-heldout", "judge:mini"]
# Metrics every scored clip must have whatever its prompt (the judge's events/relation need the
# synthetic world's event lists; loudness is undefined for clips shorter than its 0.4 s block).
ALWAYS = [
    "signal/peak",
    "signal/duration_s",
    "clap/clap",
    "clap:mini-heldout/clap",
    "judge/aqa",
    "judge/quality",
]


def _wav(x: np.ndarray, rate: int = 16_000, subtype: str = "PCM_16", fmt: str = "WAV") -> Callable:
    return lambda p: sf.write(p, np.asarray(x).T, rate, subtype=subtype, format=fmt)


def _cut(keep: float) -> Callable:
    def write(p: Path) -> None:
        sf.write(p, tone(330, 1.0).T, 16_000)
        data = p.read_bytes()
        p.write_bytes(data[: int(keep * len(data)) if keep < 1 else int(keep)])

    return write


def _bad_magic(p: Path) -> None:
    sf.write(p, tone(330, 1.0).T, 16_000)
    p.write_bytes(b"JUNK" + p.read_bytes()[4:])


def _with(sample: float) -> np.ndarray:
    x = tone(330, 1.0)
    x[0, 100:110] = sample
    return x


def _dc(p: Path) -> None:
    sf.write(p, (tone(330, 1.0, amp=0.2) + 0.3).T, 16_000)


# name -> (file suffix, writer, expected: ("scored", warning or "") or ("error", cause))
KINDS: dict[str, tuple[str, Callable, tuple[str, str]]] = {
    "good 16 kHz mono": (".wav", _wav(tone(300, 1.0)), ("scored", "")),
    "header truncated to 30 bytes": (".wav", _cut(30), ("error", "unreadable")),
    "corrupt header magic": (".wav", _bad_magic, ("error", "unreadable")),
    "data cut at 60%": (".wav", _cut(0.6), ("scored", "truncated: header says 16000 frames, file holds")),
    "zero-length file": (".wav", lambda p: p.write_bytes(b""), ("error", "unreadable")),
    "NaN samples": (".wav", _wav(_with(np.nan), subtype="FLOAT"), ("error", "non-finite samples: 10")),
    "Inf samples": (".wav", _wav(_with(np.inf), subtype="FLOAT"), ("error", "non-finite samples: 10")),
    "full-scale clipping": (".wav", _wav(np.clip(20 * tone(300, 1.0), -1, 1)), ("scored", "clipped")),
    "digital silence": (".wav", _wav(np.zeros((1, 16_000))), ("scored", "silent")),
    "DC offset": (".wav", _dc, ("scored", "dc offset")),
    "8-bit PCM": (".wav", _wav(tone(300, 1.0), subtype="PCM_U8"), ("scored", "")),
    "24-bit PCM": (".wav", _wav(tone(300, 1.0), subtype="PCM_24"), ("scored", "")),
    "float64 WAV": (".wav", _wav(tone(300, 1.0).astype(np.float64), subtype="DOUBLE"), ("scored", "")),
    "float64 WAV past full scale": (
        ".wav",
        _wav(4.0 * tone(300, 1.0), subtype="DOUBLE"),
        ("scored", "clipped"),
    ),
    "stereo": (".wav", _wav(tone(300, 1.0, channels=2)), ("scored", "")),
    "8 channels": (".wav", _wav(tone(300, 1.0, channels=8)), ("scored", "")),
    "8 kHz": (".wav", _wav(tone(300, 1.0, rate=8_000), rate=8_000), ("scored", "")),
    "192 kHz": (".wav", _wav(tone(300, 1.0, rate=192_000), rate=192_000), ("scored", "")),
    "0.05 s long": (".wav", _wav(tone(300, 0.05)), ("scored", "")),
    "10 minutes long": (".wav", _wav(tone(300, 600.0, rate=8_000), rate=8_000), ("scored", "")),
    "past the 10-minute limit": (".wav", _wav(np.zeros((1, 8_000 * 601)), rate=8_000), ("error", "too long")),
    "24-bit FLAC": (".flac", _wav(tone(300, 1.0), subtype="PCM_24", fmt="FLAC"), ("scored", "")),
    "Ogg Vorbis": (".ogg", _wav(tone(300, 1.0), subtype="VORBIS", fmt="OGG"), ("scored", "")),
    "FLAC content named .wav": (".wav", _wav(tone(300, 1.0), fmt="FLAC"), ("scored", "")),
    "random bytes named .mp3": (".mp3", lambda p: p.write_bytes(os.urandom(4000)), ("error", "unreadable")),
    "unsupported format (.m4a)": (
        ".m4a",
        lambda p: p.write_bytes(b"\0\0\0\x20ftypM4A "),
        ("error", "unsupported"),
    ),
    "a directory named .wav": (".wav", lambda p: p.mkdir(), ("error", "unreadable: is a directory")),
    "dangling symlink": (
        ".wav",
        lambda p: p.symlink_to(p.with_name("gone.bin")),
        ("error", "unreadable: dangling symlink → "),
    ),
    "symlink loop": (".wav", lambda p: p.symlink_to(p), ("error", "unreadable: symlink loop")),
    # Permission denied (which root never sees) and named pipes (which would hang this test were it
    # to regress) are tested in test_audio_files.py.
}


def _write_corpus(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    folder, names = tmp_path / "sys", {}
    folder.mkdir()
    prompts = []
    for i, (kind, (suffix, write, _)) in enumerate(KINDS.items(), 1):
        pid = f"prompt_{i:04d}"
        write(folder / f"{pid}{suffix}")
        names[pid] = kind
        prompts.append({"id": pid, "prompt_text": "a dog barks while rain falls"})
    suite = tmp_path / "prompts.json"
    suite.write_text(json.dumps(prompts))
    return folder, suite, names


@pytest.mark.slow
def test_every_kind_of_bad_file_ends_as_scores_or_a_named_error_through_every_scorer(tmp_path):
    folder, suite, names = _write_corpus(tmp_path)
    run = tmp_path / "run"
    args = ["score", str(folder), "--prompts", str(suite), "--out", str(run)]
    for s in SCORERS:
        args += ["--scorer", s]
    result = CliRunner().invoke(app, args)  # a truncated file: in its row's warnings (checked below)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code == 1, result.output  # some files could not be scored: said by the exit code
    table = pd.read_csv(io.StringIO(CliRunner().invoke(app, ["export", str(run), "--format", "csv"]).stdout))
    assert len(table) == len(KINDS)  # one row per file, nothing dropped
    metrics = [c for c in table.columns if "/" in c]
    assert set(ALWAYS) <= set(metrics)
    for row in table.to_dict("records"):
        pid = row["prompt_id"].split(".")[0]
        kind = names[pid]
        outcome, detail = KINDS[kind][2]
        if outcome == "error":
            assert isinstance(row["error"], str) and pid in row["error"] and detail in row["error"], kind
            assert all(np.isnan(row[m]) for m in metrics), f"{kind}: a failed file has a score"
        else:
            notes = row["error"].split("; ") if isinstance(row["error"], str) else []
            # only notes on metrics that do not apply or are undefined for this clip (loudness of silence)
            assert all(": n/a: " in n or "undefined" in n for n in notes), f"{kind}: {row['error']}"
            assert all(np.isfinite(row[m]) for m in ALWAYS), f"{kind}: {[(m, row[m]) for m in ALWAYS]}"
            if detail:
                assert detail in str(row["warnings"]), kind
    scored = table[table["error"].isna()]
    assert (scored["signal/duration_s"] > 0).all()


def test_odd_but_valid_prompt_texts_are_scored_by_every_scorer(tmp_path):
    texts = {
        "long": "a dog barks " * 834,  # ~10,000 characters
        "cjk": "狗在叫，雨在下",
        "arabic": "كلب ينبح والمطر يهطل",
        "emoji": "🐕 barking, 🌧️ falling",
        "control": "a dog\x00 barks\x1b[31m while\train\x07 falls",
    }
    folder = tmp_path / "sys"
    folder.mkdir()
    for pid in texts:
        sf.write(folder / f"{pid}.wav", tone(300, 1.0).T, 16_000)
    suite = tmp_path / "prompts.json"
    suite.write_text(json.dumps([{"id": k, "prompt_text": v} for k, v in texts.items()]))
    loaded = {p.id: p.text for p in load_prompts(suite)}
    assert loaded["long"] == texts["long"].strip() and loaded["control"] == texts["control"]
    args = ["score", str(folder), "--prompts", str(suite), "--out", str(tmp_path / "run")]
    for s in SCORERS:
        args += ["--scorer", s]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    table = pd.read_csv(io.StringIO(CliRunner().invoke(app, ["export", str(tmp_path / "run")]).stdout))
    assert len(table) == len(texts)
    assert np.isfinite(table[ALWAYS].to_numpy()).all()


@pytest.mark.parametrize(
    ("entries", "cause"),
    [
        ([{"id": "a", "prompt_text": ""}], "field 'prompt_text' is empty"),
        ([{"id": "a", "prompt_text": " \t\n "}], "field 'prompt_text' is empty"),
        ([{"id": " ", "prompt_text": "x"}], "field 'id' is empty"),
        ([{"id": "a", "prompt_text": "x"}, {"id": "a", "prompt_text": "y"}], "duplicate prompt id 'a'"),
        ([{"id": "a", "prompt_text": 3}], "must be a string"),
        ([{"id": "a"}], "missing field 'prompt_text'"),
        ([], "no prompts"),
    ],
)
def test_malformed_prompts_are_refused_naming_the_file_and_the_fault(tmp_path, entries, cause):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(entries))
    with pytest.raises(PromptError, match=r"bad\.json") as err:
        load_prompts(path)
    assert cause in str(err.value)


_VALUE = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=20))
_ENTRY = st.one_of(
    _VALUE,
    st.dictionaries(
        st.sampled_from(["id", "prompt_text", "Dimensions of evaluation", "x"]), _VALUE, max_size=4
    ),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(_ENTRY, st.lists(_ENTRY, max_size=6)), as_jsonl=st.booleans())
def test_any_json_prompt_file_loads_cleanly_or_is_refused_with_a_prompt_error(tmp_path, data, as_jsonl):
    if as_jsonl:
        path = tmp_path / "p.jsonl"
        rows = data if isinstance(data, list) else [data]
        rows = [
            {"prompt": r.get("prompt_text"), "audio_id": r.get("id")} if isinstance(r, dict) else r
            for r in rows
        ]
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    else:
        path = tmp_path / "p.json"
        path.write_text(json.dumps(data))
    try:
        prompts = load_prompts(path)
    except PromptError as exc:
        assert str(path) in str(exc)
        return
    assert prompts and len({p.id for p in prompts}) == len(prompts)
    assert all(p.id.strip() == p.id and p.id and p.text.strip() == p.text and p.text for p in prompts)
