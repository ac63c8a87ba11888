"""The command line: score, export, leaderboard, scorers; exit codes; the demo."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from typer.testing import CliRunner

from helpers import ForkServer, tone, wait_for_rows
from ttaeval.cli import app

runner = CliRunner()


def make_suite(tmp_path: Path, n: int = 8) -> Path:
    prompts = [
        {"id": f"prompt_{i:04d}", "prompt_text": f"a tone at {200 + 40 * i} Hz"} for i in range(1, n + 1)
    ]
    path = tmp_path / "acc_prompt.json"
    path.write_text(json.dumps(prompts))
    return path


def good_folder(folder: Path, n: int = 8, gain: float = 0.3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, n + 1):
        sf.write(folder / f"prompt_{i:04d}.wav", (gain * tone(200 + 40 * i, 1.0) / 0.5).T, 16_000)
    return folder


def cli(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_the_command_lines_start_without_torch_transformers_or_scipy_stats():
    """Every `ttaeval` and `resonate-train` call (and every test that starts one) pays the CLI's
    imports: the heavy packages load inside the commands that need them."""
    code = (
        "import sys, ttaeval.cli, resonate_train.cli; "
        "print([m for m in ('torch', 'transformers', 'scipy.stats') if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    # a trainer loads the synthetic prompts without rendering them: no signal-processing import
    code = "import sys, ttaeval; ttaeval.load_prompts('synth:train'); print('scipy.signal' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_commands_that_run_no_model_never_import_torch(tmp_path):
    """Signal checks of a folder, or of a synthetic system, start in a second rather than paying
    torch's import: the device is resolved only for a scorer or system that holds a model."""
    suite = make_suite(tmp_path, n=2)
    folder = good_folder(tmp_path / "sys", n=2)
    code = (
        "import runpy, sys\n"
        "sys.argv = ['ttaeval', *sys.argv[1:]]\n"
        "try:\n    runpy.run_module('ttaeval', run_name='__main__')\n"
        "except SystemExit as stop:\n    print('exit', stop.code, 'torch' in sys.modules)\n"
    )
    score = ["score", folder, "--prompts", suite, "--scorer", "signal", "--out", tmp_path / "a"]
    run = ["run", "--suite", "synth:accuracy", "--limit", "2", "--system", "s=synth,degrade=noise"]
    run += ["--scorer", "signal", "--device", "auto", "--out", tmp_path / "b", "--quiet"]
    for args in (score, run):
        done = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True)
        assert done.stdout.strip().splitlines()[-1] == "exit 0 False", done.stdout + done.stderr


def test_scoring_a_mixed_folder_writes_one_record_per_file_with_errors_named(tmp_path):
    suite = make_suite(tmp_path, n=10)
    folder = good_folder(tmp_path / "sys", n=4)
    sf.write(folder / "prompt_0005.wav", np.ones((16_000, 1)), 16_000)  # clipped: scored, flagged
    sf.write(folder / "prompt_0006.wav", np.zeros((16_000, 1)), 16_000)  # silent: scored, flagged
    corrupt = folder / "prompt_0007.wav"
    sf.write(corrupt, tone().T, 16_000)
    corrupt.write_bytes(corrupt.read_bytes()[:30])
    (folder / "prompt_0008.wav").write_bytes(b"")
    nan = tone()
    nan[0, :10] = np.nan
    sf.write(folder / "prompt_0009.wav", nan.T, 16_000, subtype="FLOAT")
    (folder / "prompt_0010.wav").mkdir()  # a directory where a file is expected
    sf.write(folder / "bonus_track.wav", tone().T, 16_000)  # matches no prompt

    result = cli("score", folder, "--prompts", suite, "--scorer", "signal", "--out", tmp_path / "run")
    assert result.exit_code == 1, result.output
    assert "1 file name(s) matching no prompt; 4 file(s) could not be read" in " ".join(result.output.split())

    export = cli("export", tmp_path / "run", "--format", "csv")
    assert export.exit_code == 0
    table = pd.read_csv(io.StringIO(export.stdout))
    assert len(table) == 11  # one row per file
    by_id = table.set_index("prompt_id")
    assert pd.isna(by_id.loc["prompt_0001", "error"])
    assert by_id.loc["prompt_0001", "signal/peak"] == pytest.approx(0.3, abs=0.01)
    assert "clipped" in by_id.loc["prompt_0005", "warnings"]
    assert by_id.loc["prompt_0005", "signal/clipping_ratio"] == 1.0
    assert "silent" in by_id.loc["prompt_0006", "warnings"]
    assert "prompt_0007.wav: unreadable" in by_id.loc["prompt_0007", "error"]
    assert "prompt_0008.wav: unreadable" in by_id.loc["prompt_0008", "error"]
    assert "prompt_0009.wav: non-finite samples: 10 NaN/Inf" in by_id.loc["prompt_0009", "error"]
    assert "prompt_0010.wav: unreadable" in by_id.loc["prompt_0010", "error"]
    assert "matches no prompt id" in by_id.loc["bonus_track.wav", "error"]
    for pid in ("prompt_0007", "prompt_0008", "prompt_0009", "prompt_0010", "bonus_track.wav"):
        assert np.isnan(by_id.loc[pid, "signal/peak"])  # never a silent 0


def test_clean_folder_exits_0_and_second_run_computes_nothing(tmp_path):
    suite = make_suite(tmp_path)
    folder = good_folder(tmp_path / "sys")
    args = ("score", folder, "--prompts", suite, "--scorer", "signal", "--out", tmp_path / "run")
    first = cli(*args)
    assert first.exit_code == 0, first.output
    assert "8 scores computed, 0 from cache" in first.output
    second = cli(*args)
    assert second.exit_code == 0
    assert "0 scores computed, 8 from cache" in second.output


def test_tta_bench_release_names_are_understood(tmp_path):
    suite = make_suite(tmp_path, n=3)
    folder = tmp_path / "release"
    folder.mkdir()
    for system in ("001", "002"):
        for i in (1, 2, 3):
            sf.write(folder / f"S{system}_P{i:04d}.wav", tone(300 * int(system), 0.5).T, 16_000)
    result = cli("score", folder, "--prompts", suite, "--scorer", "signal", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(io.StringIO(cli("export", tmp_path / "run").stdout))
    assert sorted(set(table["system"])) == ["release/S001", "release/S002"]
    assert sorted(set(table["prompt_id"])) == ["prompt_0001", "prompt_0002", "prompt_0003"]


def test_leaderboard_formats(tmp_path):
    suite = make_suite(tmp_path)
    for name, gain in (("quiet", 0.05), ("loud", 0.6)):
        folder = good_folder(tmp_path / name, gain=gain)
        assert (
            cli(
                "score", folder, "--prompts", suite, "--scorer", "signal", "--out", tmp_path / "run"
            ).exit_code
            == 0
        )
    md = cli("leaderboard", tmp_path / "run")
    assert md.exit_code == 0
    assert "| system | clips | failed |" in md.stdout and "signal/clipping_ratio ↓" in md.stdout
    board = pd.read_csv(io.StringIO(cli("leaderboard", tmp_path / "run", "--format", "csv").stdout))
    peak = board[board["metric"] == "signal/peak"].set_index("system")
    assert peak.loc["loud", "mean"] == pytest.approx(0.6, abs=0.01)
    assert peak.loc["quiet", "mean"] == pytest.approx(0.05, abs=0.01)
    assert (peak["n"] == 8).all()
    records = json.loads(cli("leaderboard", tmp_path / "run", "--format", "json").stdout)["leaderboard"]
    assert {r["system"] for r in records} == {"quiet", "loud"}
    loud = next(r for r in records if r["system"] == "loud" and r["metric"] == "signal/loudness_lufs")
    assert loud["ci_low"] <= loud["mean"] <= loud["ci_high"]


def test_export_json(tmp_path):
    suite = make_suite(tmp_path, n=2)
    cli(
        "score",
        good_folder(tmp_path / "s", n=2),
        "--prompts",
        suite,
        "--scorer",
        "signal",
        "--out",
        tmp_path / "r",
    )
    out = tmp_path / "clips.json"
    assert cli("export", tmp_path / "r", "--format", "json", "-o", out).exit_code == 0
    rows = json.loads(out.read_text())
    assert len(rows) == 2 and rows[0]["system"] == "s" and "signal/loudness_lufs" in rows[0]


@pytest.mark.parametrize(
    "extra, message",
    [
        (("--scorer", "nosuch"), "unknown scorer 'nosuch'"),
        (("--scorer", "signal,colour=red"), "has no option 'colour'"),
        (("--scorer", "signal", "--prompts", "missing.json"), "prompt source not found"),
    ],
)
def test_usage_errors_exit_2(tmp_path, extra, message):
    folder = good_folder(tmp_path / "s", n=1)
    result = cli("score", folder, "--out", tmp_path / "r", *extra)
    assert result.exit_code == 2
    assert message in result.output


def test_usage_errors_for_folders_and_run_dirs(tmp_path):
    assert cli("score", tmp_path / "nope", "--scorer", "signal", "--out", tmp_path / "r").exit_code == 2
    assert cli("export", tmp_path).exit_code == 2
    assert cli("leaderboard", tmp_path, "--format", "xml").exit_code == 2
    bad = tmp_path / "bad.json"
    bad.write_text("[{")
    result = cli(
        "score",
        good_folder(tmp_path / "s", 1),
        "--prompts",
        bad,
        "--scorer",
        "signal",
        "--out",
        tmp_path / "r",
    )
    assert result.exit_code == 2 and "invalid JSON" in result.output


def test_scorers_lists_the_registry_every_embedding_backend_and_the_set_metrics(monkeypatch):
    import importlib.util

    wide = CliRunner(env={"COLUMNS": "400"})
    result = wide.invoke(app, ["scorers"])
    assert result.exit_code == 0
    assert "signal:builtin" in result.output and "loudness_lufs" in result.output
    for backend in ("mini", "vggish", "panns", "openl3", "passt", "encodec"):
        assert f"embed:{backend}" in result.output
    assert "artefacts: audio_embedding, logits" in result.output  # panns
    for metric in ("fad", "fd", "fad_inf", "kad", "fad_per_clip", "kl", "is"):
        assert f"\n│ {metric} " in result.output
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "torchopenl3" else real(n, *a)
    )
    missing = wide.invoke(app, ["scorers"])  # what a missing package needs, verbatim
    assert "no: pip install 'ttaeval[fad]' && pip install --no-deps torchopenl3==1.0.1" in missing.output


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    return env


@pytest.mark.slow
def test_killed_runs_resume_to_the_same_export(tmp_path):
    """SIGKILL `ttaeval score` at 4 random points (after a random number of committed results, then a
    random fraction of a batch more); the resumed store exports what a clean run does. The
    killed commands are forked from a process that has imported ttaeval once; the reference and the
    final resume start as a user starts them."""
    suite = make_suite(tmp_path, n=120)
    folder = good_folder(tmp_path / "sys", n=120)
    args = ["score", str(folder), "--prompts", str(suite), "--scorer", "signal"]
    args += ["--scorer", "signal,silence_dbfs=-30", "--batch-size", "4", "--out"]
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    subprocess.run(
        [sys.executable, "-m", "ttaeval", *args, str(reference)], check=True, env=_env(), capture_output=True
    )

    rng = np.random.default_rng(0)
    kills = 0
    preload = ["scipy.signal", "ttaeval.cli", "ttaeval.scorers.signal", "ttaeval.scoring"]
    with ForkServer(preload, _env()) as server:
        for i, rows in enumerate(sorted(rng.integers(8, 200, 4))):  # of 240, in commits of 8
            proc = server.start("ttaeval", [*args, str(killed)], tmp_path / f"kill{i}.log")
            if wait_for_rows(killed / "run.sqlite", "results", int(rows), proc):
                time.sleep(rng.uniform(0.0, 0.03))  # a batch takes about that long here
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.wait()
    assert kills >= 3, "the runs finished before they could be killed; the test proves nothing"
    subprocess.run(
        [sys.executable, "-m", "ttaeval", *args, str(killed)], check=True, env=_env(), capture_output=True
    )
    exports = [cli("export", run) for run in (killed, reference)]
    assert all(e.exit_code == 0 for e in exports) and exports[0].stdout == exports[1].stdout


@pytest.mark.slow
def test_demo_folders_score_end_to_end(tmp_path):
    from ttaeval.demo import write_demo

    write_demo(tmp_path / "audio")
    for system, code in (("clean", 0), ("noisy", 0), ("wrong", 0), ("faulty", 1)):
        result = cli(
            "score",
            tmp_path / "audio" / system,
            "--prompts",
            tmp_path / "audio" / "acc_prompt.json",
            "--scorer",
            "clap:mini",
            "--scorer",
            "signal",
            "--out",
            tmp_path / "run",
        )
        assert result.exit_code == code, result.output
    board = pd.read_csv(io.StringIO(cli("leaderboard", tmp_path / "run", "--format", "csv").stdout))
    clap = board[board["metric"] == "clap/clap"].set_index("system")
    assert clap.loc["clean", "ci_low"] > clap.loc["noisy", "ci_high"]
    assert clap.loc["clean", "ci_low"] > clap.loc["wrong", "ci_high"]
    clipping = board[board["metric"] == "signal/clipping_ratio"].set_index("system")["mean"]
    assert clipping["faulty"] > 0.01 > clipping["clean"]
    assert board[board["system"] == "faulty"]["n_failed"].max() == 1


def test_correlate_metrics_with_human_ratings(tmp_path):
    import scipy.stats

    folder = tmp_path / "sys"
    folder.mkdir()
    gains = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    for i, g in enumerate(gains, start=1):
        sf.write(folder / f"prompt_{i:04d}.wav", (g * tone(300, 1.0) / 0.5).T, 16_000)
    assert (
        cli(
            "score",
            folder,
            "--prompts",
            make_suite(tmp_path),
            "--scorer",
            "signal",
            "--out",
            tmp_path / "run",
        ).exit_code
        == 0
    )
    rng = np.random.default_rng(0)
    ovl = np.array(gains) * 10 + rng.normal(0, 0.5, len(gains))  # louder clips rated higher, noisily
    ratings = pd.DataFrame({"prompt_id": [f"prompt_{i:04d}" for i in range(1, 9)], "OVL": ovl})
    ratings.loc[len(ratings)] = ["prompt_0099", 5.0]  # a rating with no clip: left out
    ratings.to_csv(tmp_path / "human.csv", index=False)
    result = cli(
        "correlate",
        tmp_path / "run",
        "--human",
        tmp_path / "human.csv",
        "--metric",
        "signal/peak",
        "--format",
        "csv",
    )
    assert result.exit_code == 0, result.output
    row = pd.read_csv(io.StringIO(result.stdout)).iloc[0]
    peaks = pd.read_csv(io.StringIO(cli("export", tmp_path / "run").stdout)).sort_values("prompt_id")[
        "signal/peak"
    ]
    assert row["n"] == 8
    assert row["LCC"] == pytest.approx(scipy.stats.pearsonr(peaks, ovl).statistic)
    assert row["SRCC"] == pytest.approx(scipy.stats.spearmanr(peaks, ovl).statistic)
    assert row["KTAU"] == pytest.approx(scipy.stats.kendalltau(peaks, ovl).statistic)
    assert row["SRCC_low"] <= row["SRCC"] <= row["SRCC_high"]
    markdown = cli(
        "correlate", tmp_path / "run", "--human", tmp_path / "human.csv", "--metric", "signal/peak"
    )
    assert "| signal/peak | OVL | 8 |" in markdown.stdout
    # bad ratings are usage errors that name the file and the problem
    pd.DataFrame({"clip": ["a"], "OVL": [1.0]}).to_csv(tmp_path / "bad.csv", index=False)
    bad = cli("correlate", tmp_path / "run", "--human", tmp_path / "bad.csv")
    assert bad.exit_code == 2 and "prompt_id" in bad.output
    unknown = cli("correlate", tmp_path / "run", "--human", tmp_path / "human.csv", "--metric", "nope/x")
    assert unknown.exit_code == 2 and "no metric 'nope/x'" in unknown.output


@pytest.mark.parametrize(
    "args",
    [
        ["leaderboard", "runs/x", "--no-such-option"],
        [
            "run",
            "--out",
            "x",
            "--suite",
            "synth:demo",
            "--scorer",
            "signal",
            "--system",
            "a=synth",
            "--batch-size",
            "0",
        ],
        ["resonate-train", "grpo", "--out", "x", "--no-such-option"],
    ],
)
def test_a_bad_option_is_a_usage_error_exit_2_whatever_click_typer_runs_on(args, tmp_path):
    """typer >= 0.29 runs on its own copy of click: its usage errors must still exit 2 with click's
    message, not 3 as an internal error."""
    if args[0] == "resonate-train":
        from resonate_train.cli import app as trainer

        out = CliRunner().invoke(trainer, args[1:])
    else:
        from ttaeval.cli import app

        out = CliRunner().invoke(app, args)
    assert out.exit_code == 2, out.output
    assert "internal error" not in out.output
