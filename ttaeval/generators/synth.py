"""``synth`` — the mini world's stand-in systems: a synthetic prompt's scene rendered from the clip's
seed (a new realisation of exactly what the prompt describes), optionally degraded.

Until trained generators exist these are the systems of the demo: ``synth`` (the upper bound),
``synth,degrade=noise,strength=3`` (graded faults, ``ttaeval.synth.degrade``) and
``synth,answer=random`` (fluent audio of a random scene: a system that ignores its text). Only
prompts of the synthetic suites (which carry their ``scene``) can be rendered; others are recorded
as failures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ttaeval.generators import GenerationFailure, GenerationSettings, Generator
from ttaeval.io.audio import Clip
from ttaeval.io.prompts import Prompt
from ttaeval.synth.degrade import KINDS, STRENGTHS, degrade
from ttaeval.synth.events import RATE
from ttaeval.synth.scenes import DURATION, Scene, render
from ttaeval.synth.suites import random_scene


@dataclass
class SynthGenerator(Generator):
    """Render each prompt's scene with the clip's seed."""

    degrade: str = ""
    """A degradation kind (noise, clipping, bandlimit) applied after rendering; empty for none."""
    strength: int = 2
    """The degradation's strength, 1 (mild) to 4 (worst)."""
    seed_offset: int = 0
    """Added to every clip seed: another realisation of the same scenes (a reference set for FAD
    that is not the very audio of the ``synth`` system)."""
    answer: str = "own"
    """``own``: render the prompt's scene; ``random``: render a random scene drawn from the clip's
    seed (off-prompt audio, for a system that ignores its text)."""

    kind = "synth"

    def __post_init__(self) -> None:
        if self.degrade and self.degrade not in KINDS:
            raise ValueError(f"synth: degrade must be one of {', '.join(KINDS)}, not {self.degrade!r}")
        if self.strength not in STRENGTHS:
            raise ValueError(f"synth: strength must be one of {STRENGTHS}, not {self.strength}")
        if self.answer not in ("own", "random"):
            raise ValueError(f"synth: answer must be own or random, not {self.answer!r}")

    def resolve(self, settings: GenerationSettings) -> dict:
        return {"duration": settings.duration or DURATION}

    def generate(
        self,
        prompts: Sequence[Prompt],
        seeds: Sequence[int],
        settings: GenerationSettings,
        samples: Sequence[int] | None = None,
    ) -> list[Clip | GenerationFailure]:
        duration = settings.duration or DURATION
        out: list[Clip | GenerationFailure] = []
        for prompt, seed in zip(prompts, seeds):
            seed = (int(seed) + self.seed_offset) % 2**31
            if self.answer == "random":
                scene = random_scene(np.random.default_rng(seed))
            elif "scene" in prompt.attributes:
                scene = Scene.from_dict(prompt.attributes["scene"])
            else:
                out.append(
                    GenerationFailure(f"synth: prompt {prompt.id!r} is not a synthetic prompt (no scene)")
                )
                continue
            audio = render(Scene(scene.events, scene.relation, int(seed)), duration)
            if self.degrade:
                rng = np.random.default_rng(seed)
                audio = degrade(audio, self.degrade, self.strength, RATE, rng)
            out.append(Clip(audio, RATE, prompt=prompt, source=f"synth:{prompt.id}"))
        return out
