"""Folders of audio for ``ttaeval score``: the synthetic accuracy suite answered by four made-up
"systems", one of them broken (``make demo`` itself runs ``ttaeval run`` on generators instead).

- ``clean``: each prompt's scene rendered as described (the upper bound);
- ``noisy``: the same audio under white noise at 5 dB SNR;
- ``wrong``: every prompt answered with the audio of the next prompt (fluent, but off-prompt);
- ``faulty``: the clean audio driven 18 dB too hot, so it clips, with one file truncated inside
  its header — the kinds of output a broken checkpoint produces.

Usage: ``python -m ttaeval.demo OUT_DIR`` writes ``OUT_DIR/acc_prompt.json`` and one folder of
wavs per system, named by prompt id.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from ttaeval.io.audio import Clip, save_audio
from ttaeval.synth.events import RATE
from ttaeval.synth.export import tta_bench_entry
from ttaeval.synth.scenes import Scene, render
from ttaeval.synth.suites import accuracy_suite


def write_demo(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    prompts = accuracy_suite()
    (out / "acc_prompt.json").write_text(json.dumps([tta_bench_entry(p) for p in prompts], indent=1))
    clean = [render(Scene.from_dict(p.attributes["scene"])) for p in prompts]
    rng = np.random.default_rng(0)
    for i, (prompt, x) in enumerate(zip(prompts, clean)):
        noise = rng.standard_normal(x.shape).astype(np.float32)
        noise *= np.sqrt(np.mean(x**2) / np.mean(noise**2) / 10 ** (5 / 10))
        systems = {
            "clean": x,
            "noisy": np.clip(x + noise, -1, 1),
            "wrong": clean[(i + 1) % len(clean)],
            "faulty": np.clip(x * 10 ** (18 / 20), -1, 1),
        }
        for name, audio in systems.items():
            save_audio(out / name / f"{prompt.id}.wav", Clip(audio, RATE))
    broken = out / "faulty" / f"{prompts[-1].id}.wav"
    broken.write_bytes(broken.read_bytes()[:30])  # cut inside the RIFF header


if __name__ == "__main__":
    write_demo(Path(sys.argv[1] if len(sys.argv) > 1 else "demo_out/audio"))
