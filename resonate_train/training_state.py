"""Checkpoint and resume of a training run: weights, optimiser, step, and the log up to that step.

Written to ``OUT/checkpoint.tmp``, then the old checkpoint is renamed aside and the new one into
place, so a crash at any point leaves a complete checkpoint (``checkpoint`` or ``checkpoint.old``).
Optimiser state is read back with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ttaeval.store import RunLock

LOG_NAME = "train_log.jsonl"
EVAL_LOG_NAME = "eval_log.jsonl"
LOGS = (LOG_NAME, EVAL_LOG_NAME)
"""Step-keyed JSONL logs of a run: cut back to the checkpoint's step on resume."""


def lock_run(out: Path) -> RunLock:
    """Hold the run folder for this process: a second trainer pointed at it is refused with a clear
    message instead of interleaving checkpoints and logs (released on exit, even by SIGKILL)."""
    return RunLock(out, owner="resonate-train")


def save_state(out: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, step: int, config: Any) -> None:
    ckpt, tmp, old = out / "checkpoint", out / "checkpoint.tmp", out / "checkpoint.old"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / "network.safetensors"))
    torch.save(opt.state_dict(), tmp / "optimizer.pt")
    (tmp / "state.json").write_text(json.dumps({"step": step, "config": asdict(config)}))
    shutil.rmtree(old, ignore_errors=True)
    if ckpt.exists():
        ckpt.rename(old)  # a crash from here on leaves checkpoint.old, which load_state falls back to
    tmp.rename(ckpt)
    shutil.rmtree(old, ignore_errors=True)


def load_state(
    out: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, *, trim_logs: bool = True
) -> int:
    """Restore the last complete checkpoint (if any) and cut the logs back to it; returns the step to
    go on from (0 with no checkpoint: the logs are then started afresh). Only the process that
    writes the logs trims them (``trim_logs``)."""
    ckpt = next(
        (c for c in (out / "checkpoint", out / "checkpoint.old") if (c / "state.json").is_file()), None
    )
    step = 0
    if ckpt is not None:
        step = int(json.loads((ckpt / "state.json").read_text())["step"])
        model.load_state_dict(load_file(str(ckpt / "network.safetensors")))
        opt.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True))
    for name in LOGS if trim_logs else ():
        log = out / name  # its records of step >= the checkpoint's were written after it: redone
        if log.is_file():
            lines = [ln for ln in log.read_text().splitlines() if _step_of(ln) < step]
            log.write_text("".join(ln + "\n" for ln in lines))
    return step


def _step_of(line: str) -> float:
    """A log record's step; a record torn by a kill mid-write reads as after every checkpoint."""
    try:
        return json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return float("inf")
