"""Export a trained checkpoint for shipping: its weights in half precision (half the bytes) next to
the logs of the run that made it, so a study's report can be regenerated from the shipped folder.

    resonate-train export runs/grpo_clap_s0/final resonate_train/weights/study2/grpo_clap_s0
"""

from __future__ import annotations

import shutil
from pathlib import Path

from resonate_train.system import ResonateSystem

RUN_FILES = ("train_log.jsonl", "eval_log.jsonl", "grpo_config.json", "dpo_config.json")
"""A run's records that travel with its checkpoint (training curves, the recipe as it ran)."""


def export_checkpoint(checkpoint: str | Path, out: str | Path, weights_dtype: str = "float16") -> Path:
    """Write ``checkpoint`` (a folder saved by training, e.g. ``run/final``) to ``out`` with its weights
    stored as ``weights_dtype``, and copy the run's records found beside it or in its run folder."""
    checkpoint, out = Path(checkpoint), Path(out)
    if out.resolve() == checkpoint.resolve():
        raise ValueError(f"export: {out} is the checkpoint itself; give another folder")
    ResonateSystem.load(checkpoint).save(out, weights_dtype=weights_dtype)
    for name in RUN_FILES:
        for source in (checkpoint / name, checkpoint.parent / name):
            if source.is_file():
                shutil.copyfile(source, out / name)
                break
    return out
