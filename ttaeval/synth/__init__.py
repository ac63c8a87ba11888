"""The mini world: procedural sound scenes captioned in TTA-Bench's format, and models trained on it.

Its suites load wherever a prompt source is accepted: ``synth:accuracy``, ``synth:generalization``,
``synth:robustness``, ``synth:all``.
"""

from ttaeval.synth.scenes import Event, Scene, caption, render
from ttaeval.synth.suites import load_synth, perturb, reference_scenes

__all__ = ["Event", "Scene", "caption", "load_synth", "perturb", "reference_scenes", "render"]
