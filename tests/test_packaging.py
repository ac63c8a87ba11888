"""The built wheel holds everything a user needs: its package data (the mini world's weights) and
entry points, so that `ttaeval run` on the mini world works from the wheel alone, not the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_wheel_alone_runs_the_mini_world(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(ROOT),
         "-w", str(tmp_path / "dist")],
        check=True, cwd=tmp_path, env={**os.environ, "PIP_NO_INDEX": "1"},
    )  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("ttaeval-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        z.extractall(tmp_path / "site")
    for needed in (
        "ttaeval/synth/weights/clap_mini.safetensors",
        "ttaeval/synth/weights/clap_mini_heldout.safetensors",
        "ttaeval/synth/weights/judge_mini/model.safetensors",
        "ttaeval/synth/weights/judge_mini_eval/model.safetensors",
        "resonate_train/weights/resonate_mini/model.safetensors",
    ):
        assert needed in names, needed
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert (
        "resonate = resonate_train.generator:ResonateGenerator"
        in (tmp_path / "site" / entry_points).read_text()
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "HF_HUB_OFFLINE": "1"}
    where = subprocess.run(
        [sys.executable, "-c", "import ttaeval, resonate_train as r; print(ttaeval.__file__, r.__file__)"],
        capture_output=True, text=True, env=env, cwd=tmp_path, check=True,
    ).stdout  # fmt: skip
    assert where.count(str(tmp_path / "site")) == 2, where  # the wheel's copy, not the checkout
    run = subprocess.run(
        [sys.executable, "-m", "ttaeval", "run", "--out", "run", "--suite", "synth:demo", "--limit", "4",
         "--system", "clean=synth", "--system", "mini=resonate", "--scorer", "clap:mini",
         "--scorer", "judge:mini", "--scorer", "signal", "--quiet"],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    board = subprocess.run(
        [sys.executable, "-m", "ttaeval", "leaderboard", "run", "--format", "csv"],
        capture_output=True, text=True, env=env, cwd=tmp_path, check=True,
    ).stdout  # fmt: skip
    assert "mini," in board and "judge/aqa" in board
