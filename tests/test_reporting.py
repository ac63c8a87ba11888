"""Trainers' scalars to TensorBoard / Weights & Biases beside the JSONL logs, and their progress lines."""

from __future__ import annotations

import json
import sys
import types

import pytest

from resonate_train.grpo import GRPOConfig, GRPOTrainer
from resonate_train.reporting import Progress, Reporter


def _grpo(base, **kw) -> GRPOConfig:
    return GRPOConfig(
        base=str(base), steps=2, prompts_per_step=2, group_size=3, rollout_steps=3, eval_every=0,
        rewards=["signal#peak"], **kw,
    )  # fmt: skip


def _log(folder) -> list[dict]:
    return [json.loads(x) for x in (folder / "train_log.jsonl").read_text().splitlines()]


def test_grpo_reports_its_logged_scalars_to_tensorboard(tiny_resonate, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    lines = []
    GRPOTrainer(_grpo(tiny_resonate, report_to="tensorboard"), tmp_path / "run", log=lines.append).train()
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    logged = _log(tmp_path / "run")
    for key in ("reward_mean", "kl", "loss", "grad_norm"):
        got = events.Scalars(f"train/{key}")
        assert [e.step for e in got] == [r["step"] for r in logged]
        assert [e.value for e in got] == pytest.approx([r[key] for r in logged], rel=1e-6)
    assert lines[-1].startswith("[2/2, ETA 0 s] step 1: reward")  # not a terminal: plain lines with the ETA


def test_wandb_gets_the_config_once_and_every_record_at_its_step(tmp_path, monkeypatch):
    calls = []

    class Run:
        def log(self, data, step):
            calls.append(("log", data, step))

        def finish(self):
            calls.append(("finish",))

    fake = types.SimpleNamespace(init=lambda **kw: calls.append(("init", kw)) or Run())
    monkeypatch.setitem(sys.modules, "wandb", fake)
    reporter = Reporter("wandb", tmp_path, {"lr": 1e-4}, "grpo_clap")
    Reporter("wandb", tmp_path, {"lr": 1e-4}, "grpo_clap")  # a resumed run: the same wandb run
    reporter.log({"step": 3, "loss": 0.5, "prompt_ids": ["a"], "ok": True, "nan": float("nan")}, "train")
    reporter.close()
    init = calls[0][1]
    assert init["config"] == {"lr": 1e-4} and init["resume"] == "allow" and init["dir"] == str(tmp_path)
    assert init["id"] == calls[1][1]["id"]
    assert ("log", {"train/loss": 0.5}, 3) in calls and calls[-1] == ("finish",)


def test_a_missing_backend_names_the_extra_and_unknown_targets_are_refused(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # not installed
    with pytest.raises(ImportError, match=r"pip install 'ttaeval\[wandb\]'"):
        Reporter("wandb", tmp_path, {}, "x")
    with pytest.raises(ValueError, match="report_to must be one of none, tensorboard, wandb"):
        GRPOConfig(report_to="mlflow")


def test_progress_lines_carry_the_step_and_the_time_left(monkeypatch):
    lines = []
    clock = iter([100.0, 160.0, 220.0])
    monkeypatch.setattr("resonate_train.reporting.time.perf_counter", lambda: next(clock))
    progress = Progress(total=10, done=4, log=lines.append, label="steps")  # resumed at step 4
    progress.advance(5, "a")  # 1 step in 60 s, 5 left
    progress.advance(6, "b")
    assert lines == ["[5/10, ETA 5 min] a", "[6/10, ETA 4 min] b"]
