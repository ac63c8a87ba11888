"""Write the synthetic suites to disk in TTA-Bench's layout, with their audio.

    DIR/acc_prompt.json, generalization_prompt.json, robustness_prompt.json   (TTA-Bench's names)
    DIR/audio/<prompt id>.wav       each prompt's scene rendered (a robustness prompt: its source's scene)
    DIR/reference/<prompt id>.wav   reference renderings of the accuracy scenes (other seeds), for FAD

Loading DIR with ``load_prompts`` gives back exactly the prompts of ``synth:all``.
"""

from __future__ import annotations

import json
from pathlib import Path

from ttaeval.io.audio import Clip, save_audio
from ttaeval.io.prompts import Prompt
from ttaeval.synth.events import RATE
from ttaeval.synth.scenes import Scene, render
from ttaeval.synth.suites import SUITES, reference_scenes

FILE_NAMES = {
    "accuracy": "acc_prompt.json",
    "generalization": "generalization_prompt.json",
    "robustness": "robustness_prompt.json",
}


def tta_bench_entry(p: Prompt) -> dict:
    return {
        "id": p.id,
        "prompt_text": p.text,
        "Dimensions of evaluation": p.dimension.capitalize(),
        **p.attributes,
    }


def export_suites(out: str | Path, audio: bool = True, limit: int | None = None) -> dict[str, int]:
    """Write the suites (and, with ``audio``, their wavs and the references); returns counts.
    ``limit``: only the first ``limit`` prompts of each suite, and their references."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name in FILE_NAMES:
        prompts = SUITES[name]()[:limit]
        (out / FILE_NAMES[name]).write_text(
            json.dumps([tta_bench_entry(p) for p in prompts], indent=1) + "\n"
        )
        counts[name] = len(prompts)
        if audio:
            for p in prompts:
                wav = render(Scene.from_dict(p.attributes["scene"]))
                save_audio(out / "audio" / f"{p.id}.wav", Clip(wav, RATE), subtype="FLOAT")
    if audio:
        refs = reference_scenes()[:limit]
        for p, scene in refs:
            save_audio(out / "reference" / f"{p.id}.wav", Clip(render(scene), RATE), subtype="FLOAT")
        counts["reference"] = len(refs)
    return counts
