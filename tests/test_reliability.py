"""Regression tests of the defects found by trying to break the tools (issue 28), one or more per
defect, each named after what must hold."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from typer.testing import CliRunner

from helpers import tone
from ttaeval.cli import app
from ttaeval.io.folder import safe_name
from ttaeval.store import RunStore

runner = CliRunner()


def cli(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def flat(text: str) -> str:
    """Output with Rich's line wrapping undone."""
    return " ".join(text.split())


def jsonl_suite(path: Path, ids: list[str]) -> Path:
    lines = [json.dumps({"audio_id": pid, "prompt": f"a tone number {i}"}) for i, pid in enumerate(ids)]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def wav(path: Path | bytes, freq: float = 440.0) -> None:
    with open(path, "wb") as f:
        sf.write(f, tone(freq, 0.5).T, 16_000, format="WAV")


def test_a_file_name_that_is_not_utf8_is_stored_escaped_and_the_rest_are_scored(tmp_path):
    folder = tmp_path / "sys"
    folder.mkdir()
    wav(folder / "a.wav")
    wav(os.fsencode(folder) + b"/\xff\xfeprompt.wav", 330.0)  # a name no UTF-8 decoder accepts
    for attempt in range(2):  # the second run reads everything from the cache
        result = cli("score", folder, "--scorer", "signal", "--out", tmp_path / "run")
        assert result.exit_code == 0, result.output
        assert "2 clips: " + ("2 scores computed" if attempt == 0 else "0 scores computed") in flat(
            result.output
        )
    export = cli("export", tmp_path / "run")
    table = pd.read_csv(io.StringIO(export.stdout))
    assert sorted(table["prompt_id"]) == ["\\udcff\\udcfeprompt", "a"]
    assert table["signal/peak"].notna().all()
    suite = jsonl_suite(tmp_path / "suite.jsonl", ["a"])  # with prompts: matches none, the others scored
    result = cli("score", folder, "--prompts", suite, "--scorer", "signal", "--out", tmp_path / "run2")
    assert result.exit_code == 1 and "1 file name(s) matching no prompt" in flat(result.output)
    assert "\\udcff\\udcfeprompt.wav: file name matches no prompt id" in flat(result.output)


def test_prompts_without_a_file_are_recorded_failures_in_score_as_in_run(tmp_path):
    suite = jsonl_suite(tmp_path / "suite.jsonl", [f"p{i}" for i in range(5)])
    folder = tmp_path / "sys"
    folder.mkdir()
    wav(folder / "p0.wav")
    wav(folder / "p3.wav")
    result = cli("score", folder, "--prompts", suite, "--scorer", "signal", "--out", tmp_path / "run")
    assert result.exit_code == 1, result.output
    assert "5 clips" in flat(result.output) and "3 prompt(s) without a file" in flat(result.output)
    table = pd.read_csv(io.StringIO(cli("export", tmp_path / "run").stdout)).set_index("prompt_id")
    assert table.loc[["p1", "p2", "p4"], "error"].str.contains("no file for prompt").all()
    assert table.loc[["p0", "p3"], "error"].isna().all()
    folder_run = cli(
        "run", "--suite", suite, "--system", f"sys=folder:{folder}", "--scorer", "signal",
        "--out", tmp_path / "run_folder", "--quiet",
    )  # fmt: skip
    assert folder_run.exit_code == 1
    ran = pd.read_csv(io.StringIO(cli("export", tmp_path / "run_folder").stdout)).set_index("prompt_id")
    assert ran["error"].isna().tolist() == table.loc[ran.index, "error"].isna().tolist()


def test_clip_file_names_are_injective_and_safe_on_case_insensitive_file_systems(tmp_path):
    ids = ["a b", safe_name("a b"), "Dog", "dog", "../x", "x"]
    assert len({safe_name(i).lower() for i in ids}) == len(ids)
    suite = jsonl_suite(tmp_path / "suite.jsonl", ids)
    result = cli(
        "run", "--suite", suite, "--system", "s=synth,answer=random", "--scorer", "signal",
        "--out", tmp_path / "run", "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    files = list((tmp_path / "run" / "audio" / "s").iterdir())
    assert len({f.name.lower() for f in files}) == len(ids)
    with RunStore(tmp_path / "run") as store:
        clips = store.clips()
    assert clips["source"].str.lower().nunique() == len(ids)
    for _, row in clips.iterrows():  # each prompt's file holds that prompt's audio
        audio, rate = sf.read(tmp_path / "run" / row["source"], dtype="float32", always_2d=True)
        from ttaeval.io.audio import content_key

        assert content_key(audio.T, rate) == row["clip_key"]


def test_score_re_scores_the_audio_run_writes_with_the_same_numbers(tmp_path):
    ids = ["plain", "with space", "Upper", "a/b"]
    suite = jsonl_suite(tmp_path / "suite.jsonl", ids)
    args = ["--suite", suite, "--system", "s=synth,answer=random", "--scorer", "signal", "--quiet"]
    args += ["--samples-per-prompt", "2"]
    assert cli("run", *args, "--out", tmp_path / "run").exit_code == 0
    result = cli(
        "score", tmp_path / "run" / "audio" / "s", "--prompts", suite, "--scorer", "signal",
        "--system", "s", "--out", tmp_path / "rescored",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "8 clips" in flat(result.output)
    ran = pd.read_csv(io.StringIO(cli("export", tmp_path / "run").stdout))
    rescored = pd.read_csv(io.StringIO(cli("export", tmp_path / "rescored").stdout))
    key = ["prompt_id", "sample"]
    merged = ran.merge(rescored, on=key, suffixes=("_run", "_score"))
    assert len(merged) == 8
    np.testing.assert_array_equal(merged["signal/peak_run"], merged["signal/peak_score"])
    moved = tmp_path / "moved"  # a stray file is told apart from an unreadable one
    (tmp_path / "run" / "audio" / "s").rename(moved)
    (moved / "stray.wav").write_bytes(b"")
    (moved / "plain_0.wav").write_bytes(b"RIFF")
    result = cli("score", moved, "--prompts", suite, "--scorer", "signal", "--out", tmp_path / "r3")
    assert "1 file name(s) matching no prompt; 1 file(s) could not be read" in flat(result.output)
