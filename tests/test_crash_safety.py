"""Crash safety of training (issue 10): `resonate-train grpo` killed with SIGKILL at random points
and restarted ends with the uninterrupted run's logs and weights; a second trainer pointed at a
busy run folder is refused. (`ttaeval run`'s kill test is in test_runner.py.)"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from helpers import ForkServer, one_torch_thread
from resonate_train.cli import app
from resonate_train.dpo import DPOConfig, DPOTrainer
from resonate_train.grpo import GRPOConfig, GRPOTrainer
from ttaeval.store import StoreError

KILLS = 12  # with test_runner's 8 kills of `ttaeval run`: 20 kill points
PRELOAD = [  # what `resonate-train grpo` imports with these rewards (torch's optimizers: _dynamo)
    "resonate_train.cli", "resonate_train.grpo", "resonate_train.model.official", "torch._dynamo",
    "ttaeval.protocols", "ttaeval.scorers.clap_mini", "ttaeval.scorers.signal", "ttaeval.synth",
]  # fmt: skip


def _grpo_toml(base: Path, path: Path) -> Path:
    path.write_text(
        f'base = "{base}"\n'
        'rewards = ["clap:mini@1.0", "signal#peak@0.1"]\n'
        "steps = 24\nprompts_per_step = 2\ngroup_size = 3\nrollout_steps = 3\n"
        "checkpoint_every = 2\neval_every = 4\neval_prompts = 2\neval_samples = 1\n"
    )
    return path


def _grpo(config: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "resonate_train", "grpo", "--config", str(config), "--out", str(out)]


def _env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    return env


def _records(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(x).items() if k != "seconds"} for x in path.read_text().splitlines()]


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


@pytest.mark.slow
def test_grpo_killed_at_random_points_ends_with_the_uninterrupted_logs_and_weights(tiny_resonate, tmp_path):
    config = _grpo_toml(tiny_resonate, tmp_path / "grpo.toml")
    straight = tmp_path / "straight"
    with one_torch_thread():  # the uninterrupted run: in this process, as the commands below compute
        done = CliRunner().invoke(app, _grpo(config, straight)[3:])
    assert done.exit_code == 0, done.output
    killed, rng, kills, resumed = tmp_path / "killed", random.Random(10), 0, 0
    # the killed commands are forked from a process that has imported the trainer once; the last
    # command is started as a user starts it
    with ForkServer(PRELOAD, _env()) as server:
        while kills < KILLS:
            proc = server.start("resonate_train", _grpo(config, killed)[3:], tmp_path / f"kill{kills}.log")
            # a random point: 0-2 log records past where this process starts, then up to one step more
            target = _lines(killed / "train_log.jsonl") + rng.randint(0, 2)
            while proc.poll() is None and _lines(killed / "train_log.jsonl") < target:
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.4))
            if proc.poll() is not None:  # it finished before this kill point
                break
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            resumed += "resumed at step" in proc.output()
    last = subprocess.run(_grpo(config, killed), env=_env(), capture_output=True, text=True, timeout=600)
    assert last.returncode == 0, last.stdout + last.stderr
    assert kills == KILLS and resumed >= KILLS // 2, (kills, resumed)  # the kills landed mid-run
    for log in ("train_log.jsonl", "eval_log.jsonl"):
        a, b = _records(straight / log), _records(killed / log)
        assert [r["step"] for r in a] == [r["step"] for r in b], log
        for x, y in zip(a, b):
            assert x.keys() == y.keys()
            assert all(x[k] == pytest.approx(y[k], abs=1e-6) for k in x), (log, x["step"])
    w1 = load_file(str(straight / "final" / "model.safetensors"))
    w2 = load_file(str(killed / "final" / "model.safetensors"))
    assert w1.keys() == w2.keys() and all((w1[k] - w2[k]).abs().max() <= 1e-6 for k in w1)


def test_a_second_trainer_on_a_busy_run_folder_is_refused(tiny_resonate, tmp_path):
    grpo = GRPOConfig(base=str(tiny_resonate), rewards=["signal#peak"], steps=1)
    first = GRPOTrainer(grpo, tmp_path / "grpo", log=lambda _: None)
    with pytest.raises(StoreError, match="in use by another resonate-train process"):
        GRPOTrainer(grpo, tmp_path / "grpo", log=lambda _: None)
    first.lock.release()  # as at the end of train(): the folder is free again
    GRPOTrainer(grpo, tmp_path / "grpo", log=lambda _: None)

    dpo = DPOConfig(base=str(tiny_resonate), reward="signal#peak", steps=1)
    held = DPOTrainer(dpo, tmp_path / "dpo", log=lambda _: None)
    with pytest.raises(StoreError, match=f"{tmp_path / 'dpo'} is in use"):
        DPOTrainer(dpo, tmp_path / "dpo", log=lambda _: None)
    del held


def test_a_log_record_torn_by_a_kill_is_dropped_on_resume(tmp_path):

    from resonate_train.training_state import LOG_NAME, load_state, save_state

    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    save_state(tmp_path, model, opt, 2, GRPOConfig())
    (tmp_path / LOG_NAME).write_text('{"step": 0}\n{"step": 1}\n{"step": 2}\n{"st')
    assert load_state(tmp_path, model, opt) == 2
    assert (tmp_path / LOG_NAME).read_text() == '{"step": 0}\n{"step": 1}\n'


def test_the_fork_server_gives_each_command_its_status_and_output(tmp_path):
    """The kill tests' harness: a forked command's exit status, output and SIGKILL are its own."""
    with ForkServer(["json.tool"], _env()) as server:
        ok = server.start("json.tool", ["--help"], tmp_path / "ok.log")
        bad = server.start("json.tool", [tmp_path / "missing.json"], tmp_path / "bad.log")
        broken = server.start("no_such_module", [], tmp_path / "broken.log")
        sleeper = server.start("http.server", ["0", "--bind", "127.0.0.1"], tmp_path / "sleeper.log")
        assert (ok.wait(), bad.wait(), broken.wait()) == (0, 2, 1)  # argparse exits 2 on a bad file
        assert "usage:" in ok.output() and "missing.json" in bad.output()
        assert "No module named no_such_module" in broken.output()
        assert sleeper.poll() is None  # still serving
        sleeper.send_signal(signal.SIGKILL)
        assert sleeper.wait() == -9
