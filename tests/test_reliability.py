"""Regression tests of the defects found by trying to break the tools (issue 28), one or more per
defect, each named after what must hold."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from typer.testing import CliRunner

from helpers import tone
from ttaeval.cli import app
from ttaeval.io.folder import safe_name
from ttaeval.store import RunStore

runner = CliRunner(env={"COLUMNS": "1000"})


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


def test_user_text_is_never_read_as_rich_markup(tmp_path):
    folder = tmp_path / "sys"
    folder.mkdir()
    wav(folder / "[bold]loud.wav")
    suite = jsonl_suite(tmp_path / "suite.jsonl", ["[/x]"])
    result = cli("score", folder, "--prompts", suite, "--scorer", "signal", "--out", tmp_path / "run")
    assert result.exit_code == 1, result.output  # recorded failures, no MarkupError
    assert "[bold]loud.wav: file name matches no prompt id" in flat(result.output)
    assert "no file for prompt '[/x]'" in flat(result.output)
    missing = tmp_path / "[red]prompts[/red].jsonl"
    result = cli("score", folder, "--prompts", missing, "--scorer", "signal", "--out", tmp_path / "run2")
    assert result.exit_code == 2 and "[red]prompts[/red].jsonl" in flat(result.output)
    from ttaeval.optional import install_hint

    hint = install_hint("laion_clap", "laion")
    assert "ttaeval[laion]" in hint
    from ttaeval.cli import _usage_error, console

    with console.capture() as captured:
        _usage_error(hint)
    assert "ttaeval[laion]" in captured.get()


def test_messages_are_one_line_each_in_a_narrow_log(tmp_path):
    """A log file is 80 columns to Rich: a long path must still come out whole, on one line."""
    missing = tmp_path / ("a_long_folder_name_" * 6) / "prompts.jsonl"
    args = ["score", tmp_path, "--prompts", missing, "--scorer", "signal", "--out", tmp_path / "r"]
    result = CliRunner(env={"COLUMNS": "80"}).invoke(app, [str(a) for a in args])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and str(missing) in lines[0], result.output


def _good_run_folder(tmp_path: Path) -> tuple[Path, Path]:
    suite = jsonl_suite(tmp_path / "suite.jsonl", [f"p{i}" for i in range(3)])
    folder = tmp_path / "sys"
    folder.mkdir()
    for i in range(3):
        wav(folder / f"p{i}.wav", 300.0 + 100 * i)
    return suite, folder


def test_each_exit_code_of_the_contract_through_the_cli(tmp_path):
    suite, folder = _good_run_folder(tmp_path)
    ok = cli("score", folder, "--prompts", suite, "--scorer", "signal", "--out", tmp_path / "run")
    assert ok.exit_code == 0, ok.output  # 0: every clip scored
    (folder / "p1.wav").write_bytes(b"RIFF....")
    some = cli("score", folder, "--prompts", suite, "--scorer", "signal", "--out", tmp_path / "run")
    assert some.exit_code == 1 and "p1.wav: unreadable" in some.output  # 1: a clip failed, recorded
    usage = cli("score", folder, "--prompts", suite, "--scorer", "nosuch", "--out", tmp_path / "run")
    assert usage.exit_code == 2 and "nosuch" in usage.output  # 2: usage
    bad_toml = tmp_path / "run.toml"
    bad_toml.write_text('out = 5\nsystems = {a = "synth"}\nsuite = "synth:accuracy"\n')
    usage = cli("run", "--config", bad_toml)
    assert usage.exit_code == 2 and "run.toml: out = 5 is a int; expected Path" in usage.output
    import sqlite3

    db = sqlite3.connect(tmp_path / "run" / "run.sqlite")
    db.execute("UPDATE meta SET value='99' WHERE key='schema'")
    db.commit()
    db.close()
    for verb in (["leaderboard"], ["export"], ["report", "--out", str(tmp_path / "rep")]):
        newer = cli(verb[0], tmp_path / "run", *verb[1:])  # 3: storage (a newer store)
        assert newer.exit_code == 3, newer.output
        assert "run.sqlite: schema 99 is newer" in newer.output and "Traceback" not in newer.output
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "run.sqlite").write_bytes(b"not a database at all" * 100)
    corrupt = cli("leaderboard", tmp_path / "broken")
    assert corrupt.exit_code == 3 and "broken/run.sqlite: file is not a database" in corrupt.output
    debug = cli("--debug", "leaderboard", tmp_path / "broken")
    assert debug.exit_code == 3 and "Traceback" in debug.output


def _export(run_dir: Path) -> pd.DataFrame:
    result = cli("export", run_dir)
    assert result.exit_code == 0, result.output
    table = pd.read_csv(io.StringIO(result.stdout)).drop(columns=["source"])
    return table.sort_values(["system", "prompt_id", "sample"]).reset_index(drop=True)


def test_a_full_disk_exits_3_naming_the_file_and_a_resume_loses_nothing(tmp_path):
    import resource
    import signal
    import subprocess
    import sys

    suite = jsonl_suite(tmp_path / "suite.jsonl", [f"p{i}" for i in range(24)])
    args = ["run", "--suite", str(suite), "--system", "a=synth,answer=random", "--scorer", "signal"]
    args += ["--batch-size", "4", "--quiet"]
    assert cli(*args, "--out", tmp_path / "whole").exit_code == 0

    def small_disk() -> None:  # files may not grow past 300 kB: writes fail with EFBIG, as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "1000"}
    full = subprocess.run(
        [sys.executable, "-m", "ttaeval", *args, "--out", str(tmp_path / "run")],
        capture_output=True, text=True, env=env, preexec_fn=small_disk, timeout=300,
    )  # fmt: skip
    assert full.returncode == 3, full.stderr
    assert "Traceback" not in full.stderr and "failed:" in full.stderr
    assert str(tmp_path / "run") in full.stderr  # names the file it could not write
    again = cli(*args, "--out", tmp_path / "run")
    assert again.exit_code == 0, again.output
    pd.testing.assert_frame_equal(_export(tmp_path / "run"), _export(tmp_path / "whole"))


def test_verify_finds_damage_and_a_repaired_run_recomputes_exactly_what_was_lost(tmp_path):
    import sqlite3

    suite = jsonl_suite(tmp_path / "suite.jsonl", [f"p{i}" for i in range(40)])
    args = ["run", "--suite", suite, "--system", "a=synth,answer=random", "--scorer", "signal", "--quiet"]
    assert cli(*args, "--out", tmp_path / "run").exit_code == 0
    before = _export(tmp_path / "run")
    assert cli("verify", tmp_path / "run").exit_code == 0
    db = sqlite3.connect(tmp_path / "run" / "run.sqlite")  # values deleted behind the store's back
    db.execute("DELETE FROM metric_values WHERE clip_key IN (SELECT clip_key FROM clips LIMIT 3)")
    db.commit()
    db.close()
    found = cli("verify", tmp_path / "run")
    assert found.exit_code == 3 and "3 results marked done without values" in found.output
    assert cli("verify", tmp_path / "run", "--repair").exit_code == 0
    resumed = cli(*args, "--out", tmp_path / "run")
    assert "3 scores computed" in resumed.output
    pd.testing.assert_frame_equal(_export(tmp_path / "run"), before)

    store = tmp_path / "run" / "run.sqlite"  # one damaged page
    pages = store.stat().st_size // 4096
    with open(store, "r+b") as f:
        f.seek(4096 * (pages // 2))
        f.write(np.random.default_rng(0).bytes(4096))
    refused = cli(*args, "--out", tmp_path / "run")
    assert refused.exit_code == 3 and "the store is corrupt" in refused.output
    assert cli("leaderboard", tmp_path / "run").exit_code == 3
    assert cli("verify", tmp_path / "run").exit_code == 3
    repaired = cli("verify", tmp_path / "run", "--repair")
    assert repaired.exit_code == 0 and "damaged file is kept" in repaired.output
    assert cli(*args, "--out", tmp_path / "run").exit_code == 0
    pd.testing.assert_frame_equal(_export(tmp_path / "run"), before)


def test_values_are_validated_before_any_work(tmp_path):
    import pytest

    from ttaeval.runner import RunConfig
    from ttaeval.scorers import get_scorer

    base = {"out": tmp_path / "r", "systems": {"a": "synth"}, "suite": "synth:accuracy"}
    for bad, message in [
        ({"limit": -1}, "limit must be at least 1"),
        ({"limit": 0}, "limit must be at least 1"),
        ({"duration": -4.0}, "duration must be in"),
        ({"duration": 1e9}, "duration must be in"),
        ({"scorers": "signal"}, "scorers must be a list"),
        ({"steps": 0}, "steps must be at least 1"),
    ]:
        with pytest.raises(ValueError, match=message):
            RunConfig(**base, **bad)
    with pytest.raises(ValueError, match="silence_dbfs"):
        get_scorer("signal,silence_dbfs=nan")
    result = cli("run", "--suite", "synth:accuracy", "--system", "a=synth", "--duration", "-4",
                 "--out", tmp_path / "r2")  # fmt: skip
    assert result.exit_code == 2 and not (tmp_path / "r2" / "audio").exists()


def test_a_store_where_every_clip_failed_gives_empty_tables_with_the_failure_counts(tmp_path):
    suite = jsonl_suite(tmp_path / "suite.jsonl", ["a", "b"])
    for name in ("sys", "ref"):
        (tmp_path / name).mkdir()
        for pid in ("a", "b"):
            (tmp_path / name / f"{pid}.wav").write_bytes(b"RIFF")  # unreadable
    result = cli(
        "run", "--suite", suite, "--system", f"x=folder:{tmp_path / 'sys'}", "--reference",
        f"folder:{tmp_path / 'ref'}", "--scorer", "signal", "--scorer", "embed:mini",
        "--set-metric", "fad:embed:mini", "--out", tmp_path / "run",
    )  # fmt: skip
    assert result.exit_code == 1, result.output  # clips failed, recorded: not a crash, not a usage error
    assert "| x | 2 | 2 |" in result.stdout
    board = cli("leaderboard", tmp_path / "run")
    assert board.exit_code == 0 and "| x | 2 | 2 |" in board.stdout and "FAD" in board.stdout
    report = cli("report", tmp_path / "run", "--out", tmp_path / "rep")
    assert report.exit_code == 0, report.output
    scored = cli("score", tmp_path / "sys", "--prompts", suite, "--scorer", "signal", "--out", tmp_path / "s")
    assert scored.exit_code == 1
    board = cli("leaderboard", tmp_path / "s")
    assert board.exit_code == 0 and "| sys | 2 | 2 |" in board.stdout


def test_ctrl_c_exits_130_and_the_run_resumes(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    suite = jsonl_suite(tmp_path / "suite.jsonl", [f"p{i}" for i in range(1500)])
    base = ["run", "--suite", str(suite), "--system", "a=synth,answer=random", "--scorer", "signal"]
    base += ["--duration", "0.5", "--quiet", "--out", str(tmp_path / "run")]
    args = [*base, "--batch-size", "2"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ttaeval", *args], env=env, stderr=subprocess.PIPE, text=True
    )
    store = tmp_path / "run" / "run.sqlite"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:  # interrupt once clips are committed
        if store.exists() and (tmp_path / "run" / "audio" / "a").is_dir():
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    with RunStore(tmp_path / "run") as kept:
        assert 0 < len(kept.clips()) < 1500  # interrupted mid-run, what was committed kept
    assert cli(*base, "--batch-size", "100").exit_code == 0  # the rest, in batches of another size
    with RunStore(tmp_path / "run") as done:
        scores = done.scores()
    assert scores["prompt_id"].nunique() == 1500 and (scores["status"] != "failed").all()


def test_ctrl_c_while_a_clip_is_encoded_is_an_interrupt_once_it_is_written(monkeypatch):
    """soundfile writes in-memory WAVs through Python callbacks inside libsndfile, where a
    KeyboardInterrupt is swallowed and the short write then fails soundfile's assertion: a Ctrl-C at
    that moment was an internal error (exit 3), not an interrupt (130)."""
    import signal

    from ttaeval.io import audio

    class InterruptedOnce(io.BytesIO):
        def write(self, data):
            if not getattr(self, "sent", False):
                self.sent = True
                signal.raise_signal(signal.SIGINT)
            return super().write(data)

    samples = tone(440, 0.5)[0]
    expected = audio.float_wav_bytes(samples, 16_000)
    handler = signal.getsignal(signal.SIGINT)
    monkeypatch.setattr(audio.io, "BytesIO", InterruptedOnce)
    with pytest.raises(KeyboardInterrupt):
        audio.float_wav_bytes(samples, 16_000)
    assert signal.getsignal(signal.SIGINT) is handler  # given back
    monkeypatch.undo()
    assert sf.read(io.BytesIO(expected), dtype="float32")[0].tolist() == samples.tolist()


def test_a_read_only_run_folder_is_read_and_refused_for_writing_losing_nothing(tmp_path):
    import subprocess

    import pytest

    from ttaeval.store import StorageError

    suite = jsonl_suite(tmp_path / "suite.jsonl", [f"p{i}" for i in range(6)])
    args = ["run", "--suite", suite, "--system", "a=synth,answer=random", "--system", "ref=synth"]
    args += ["--reference", "ref", "--scorer", "signal", "--scorer", "embed:mini", "--quiet"]
    run_dir = tmp_path / "run"
    assert cli(*args, "--limit", "4", "--out", run_dir).exit_code == 1  # ref fails: not synthetic prompts
    with RunStore(run_dir, read_only=True) as store:  # a reader that cannot write
        assert len(store.clips()) == 8
        with pytest.raises(StorageError, match="readonly"):
            store.forget_clips("a")
    board = cli("leaderboard", run_dir)  # the reference's clips all failed: counted, not an error
    assert board.exit_code == 0 and "| ref | 4 | 4 |" in board.stdout and "KAD" in board.stdout
    mounted = subprocess.run(["mount", "--bind", str(run_dir), str(run_dir)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot bind-mount here ({mounted.stderr.decode().strip()}); the rest needs it")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(run_dir)], check=True)
        before = (run_dir / "run.sqlite").read_bytes()
        assert cli("leaderboard", run_dir).exit_code == 0
        assert cli("export", run_dir).exit_code == 0
        assert cli("report", run_dir, "--out", tmp_path / "report").exit_code == 0
        refused = cli(*args, "--out", run_dir)
        assert refused.exit_code == 3 and "Read-only file system" in refused.output
        assert (run_dir / "run.sqlite").read_bytes() == before
    finally:
        subprocess.run(["umount", str(run_dir)], check=True)
    assert cli(*args, "--out", run_dir).exit_code == 1  # resumed where it was: 2 prompts more
    assert len(_export(run_dir)) == 12
