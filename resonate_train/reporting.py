"""Where a trainer's scalars go besides its JSONL logs (which stay the record every report reads):
TensorBoard or Weights & Biases, as ``report_to`` in TRL and diffusers; and the progress of its
steps, with an ETA, on the terminal or as plain lines in a log file.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

REPORT_TO = ("none", "tensorboard", "wandb")
INSTALL = {"tensorboard": "pip install 'ttaeval[tensorboard]'", "wandb": "pip install 'ttaeval[wandb]'"}


def check_report_to(value: str) -> None:
    if value not in REPORT_TO:
        raise ValueError(f"report_to must be one of {', '.join(REPORT_TO)}, not {value!r}")


class Reporter:
    """Mirrors log records to ``report_to``: every finite number of a record, under
    ``PREFIX/NAME``, at the record's ``step``. TensorBoard writes ``OUT/tensorboard``; wandb starts
    a run in ``OUT`` (project from ``WANDB_PROJECT``, default ``resonate_train``; offline with
    ``WANDB_MODE=offline``) with the trainer's config, resumed with the training run."""

    def __init__(self, report_to: str, out: Path, config: dict[str, Any], name: str) -> None:
        check_report_to(report_to)
        self.report_to, self._writer, self._run = report_to, None, None
        try:
            if report_to == "tensorboard":
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(log_dir=str(out / "tensorboard"))
            elif report_to == "wandb":
                import wandb

                folder = hashlib.sha1(str(out.resolve()).encode()).hexdigest()[:10]
                run_id = f"{name}-{folder}"  # the same run folder resumes the same wandb run
                self._run = wandb.init(
                    project=os.environ.get("WANDB_PROJECT", "resonate_train"),
                    name=name,
                    id=run_id,
                    resume="allow",
                    dir=str(out),
                    config=config,
                )
        except ImportError as exc:
            raise ImportError(f"report_to={report_to!r} needs {exc.name}: {INSTALL[report_to]}") from None

    def log(self, record: dict[str, Any], prefix: str) -> None:
        scalars = {
            f"{prefix}/{k}": float(v)
            for k, v in record.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        }
        step = int(record["step"])
        if self._writer is not None:
            for key, value in scalars.items():
                self._writer.add_scalar(key, value, step)
            self._writer.flush()
        if self._run is not None:
            self._run.log(scalars, step=step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._run is not None:
            self._run.finish()


def _prints_to_stdout(log) -> bool:
    """Whether ``log`` is a plain print to stdout (the CLI's), which the progress bar may take over."""
    import typer

    return log is print or log is typer.echo


class Progress:
    """Steps done, their rate and the time left: a rich progress bar on a terminal; on anything
    else (a log file, CI) each line the trainer logs gets ``[step/total, ETA]`` in front."""

    def __init__(self, total: int, done: int, log, label: str) -> None:
        self.total, self.start_step, self.log = total, done, log
        self.started = time.perf_counter()
        self._bar = None
        if sys.stdout.isatty() and _prints_to_stdout(log):
            from rich.progress import BarColumn, MofNCompleteColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                TimeRemainingColumn(), transient=True,
            )  # fmt: skip
            self._bar.start()
            self._task = self._bar.add_task(label, total=total, completed=done)

    def eta(self, step: int) -> str:
        done = step - self.start_step
        if done <= 0:
            return "ETA ?"
        left = (time.perf_counter() - self.started) / done * (self.total - step)
        return f"ETA {left / 60:.0f} min" if left >= 90 else f"ETA {left:.0f} s"

    def advance(self, step: int, message: str) -> None:
        """``step`` steps are done; ``message`` describes the last."""
        if self._bar is not None:
            self._bar.update(self._task, completed=step)
            self._bar.console.print(message, markup=False, highlight=False)
        else:
            self.log(f"[{step}/{self.total}, {self.eta(step)}] {message}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
