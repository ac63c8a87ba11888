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

LOG_NAME = "train_log.jsonl"


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


def load_state(out: Path, model: torch.nn.Module, opt: torch.optim.Optimizer) -> int:
    """Restore the last complete checkpoint (if any) and cut the log back to it; returns the step to
    go on from (0 with no checkpoint: the log is then started afresh)."""
    ckpt = next(
        (c for c in (out / "checkpoint", out / "checkpoint.old") if (c / "state.json").is_file()), None
    )
    step = 0
    if ckpt is not None:
        step = int(json.loads((ckpt / "state.json").read_text())["step"])
        model.load_state_dict(load_file(str(ckpt / "network.safetensors")))
        opt.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True))
    log = out / LOG_NAME
    if log.is_file():  # lines written after the checkpoint (a crash between the two) are redone
        lines = [ln for ln in log.read_text().splitlines() if json.loads(ln)["step"] < step]
        log.write_text("".join(ln + "\n" for ln in lines))
    return step
