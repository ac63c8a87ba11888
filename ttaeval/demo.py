"""Audio for ``make demo``: three "systems" of numpy-made tones and noise, and their prompts.

``clean`` renders each prompt at a sensible level; ``hot`` renders the same sounds 14 dB too loud,
so they clip; ``faulty`` is quiet, carries a DC offset, cuts out half the time, and has one file
truncated in the middle of its header — the kinds of output a broken checkpoint produces. The
prompts are written in TTA-Bench's JSON format. Usage: ``python -m ttaeval.demo OUT_DIR``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from ttaeval.audio import Clip, save_audio

RATE = 16_000
DURATION = 2.0
EVENTS = {
    "a steady beep": lambda t, f: np.sin(2 * np.pi * f * t),
    "a rising chirp": lambda t, f: np.sin(2 * np.pi * f * t * (1 + t / DURATION)),
    "a buzzing hum": lambda t, f: np.sign(np.sin(2 * np.pi * f / 4 * t)) * 0.5,
    "a burst of noise": lambda t, f: np.random.default_rng(int(f)).standard_normal(t.size) * 0.3,
}
PITCHES = {"low": 220.0, "mid": 440.0, "high": 880.0}


def demo_prompts() -> list[dict]:
    prompts = []
    for event in EVENTS:
        for pitch in PITCHES:
            for count in (1, 2):
                noun = event.split(" ", 1)[1] + ("s" if count == 2 else "")
                text = f"{'one' if count == 1 else 'two'} {pitch} {noun}"
                prompts.append(
                    {
                        "id": f"prompt_{len(prompts) + 1:04d}",
                        "prompt_text": text.capitalize(),
                        "Dimensions of evaluation": "Accuracy",
                        "event_count": count,
                        "event_list": [event] * count,
                        "event_relation": "sequence" if count == 2 else "None",
                    }
                )
    return prompts


def render(prompt: dict, seed: int) -> np.ndarray:
    """The sound a prompt asks for: its event, at its pitch, ``event_count`` times."""
    event = prompt["event_list"][0]
    pitch = next(v for k, v in PITCHES.items() if f" {k} " in f" {prompt['prompt_text'].lower()} ")
    t = np.arange(int(RATE * DURATION)) / RATE
    n = prompt["event_count"]
    gate = np.zeros_like(t)
    for i in range(n):
        start, stop = i * DURATION / n + 0.1, (i + 1) * DURATION / n - 0.1
        gate[(t >= start) & (t < stop)] = 1.0
    gate = np.convolve(gate, np.hanning(321) / np.hanning(321).sum(), mode="same")
    jitter = 1 + 0.02 * np.random.default_rng(seed).standard_normal()
    return EVENTS[event](t, pitch * jitter) * gate


def write_demo(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    prompts = demo_prompts()
    (out / "prompts.json").write_text(json.dumps(prompts, indent=1), encoding="utf-8")
    rng = np.random.default_rng(0)
    for i, prompt in enumerate(prompts):
        x = render(prompt, seed=i)
        systems = {
            "clean": 0.25 * x,
            "hot": np.clip(0.25 * 5 * x, -1, 1),
            "faulty": 0.03 * x * (rng.random(x.size // 1600).repeat(1600) > 0.5) + 0.08,
        }
        for name, audio in systems.items():
            save_audio(out / name / f"{prompt['id']}.wav", Clip(audio[None].astype(np.float32), RATE))
    broken = out / "faulty" / f"{prompts[-1]['id']}.wav"
    broken.write_bytes(broken.read_bytes()[:30])  # cut inside the RIFF header


if __name__ == "__main__":
    write_demo(Path(sys.argv[1] if len(sys.argv) > 1 else "demo_out/audio"))
