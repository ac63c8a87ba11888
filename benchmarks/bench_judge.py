"""Judge throughput: ``judge:mini`` batched vs Resonate's one-clip-per-``generate`` loop, same model.

Resonate's released reward code asks its LALM one clip at a time: build the chat for one clip, run
the processor, call ``model.generate(max_new_tokens=1, output_scores=True)``, softmax the first
step's scores and take P(yes) / (P(yes) + P(no)). That procedure is restated here (its package is not
installable; it is a training script, not a library) on the shipped judge-mini, and compared with
``judge:mini``'s ``aqa`` (only the caption question is asked: ``w_events=0,w_relation=0,w_quality=0``),
which sends all questions through left-padded batched forward passes.

Run: ``python benchmarks/bench_judge.py [N]``; writes benchmarks/results/judge.md.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ttaeval import Clip, get_scorer
from ttaeval.synth import render
from ttaeval.synth.scenes import Scene
from ttaeval.synth.suites import accuracy_suite

OUT = Path(__file__).parent / "results" / "judge.md"


def one_clip_per_generate(scorer, audio: np.ndarray, caption: str) -> float:
    """Resonate's procedure for one clip (restated): processor, generate one token, read its scores."""
    processor, model = scorer._processor, scorer._model
    text = scorer.chat(scorer.question_templates.aqa.format(caption=caption))
    inputs = processor(text=[text], audio=[audio], sampling_rate=16_000, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(
            **inputs, max_new_tokens=1, do_sample=False, output_scores=True, return_dict_in_generate=True
        )
    probs = torch.softmax(out.scores[0][0].float(), dim=-1)
    yes, no = (processor.tokenizer.convert_tokens_to_ids(t) for t in ("Yes", "No"))
    return float(probs[yes] / (probs[yes] + probs[no]))


def main(n: int = 64, repeats: int = 5) -> str:
    torch.set_num_threads(os.cpu_count() or 1)
    scorer = get_scorer("judge:mini,w_events=0,w_relation=0,w_quality=0,batch_size=64,question_batch=32")
    prompts = list(accuracy_suite()[:n])
    clips = [Clip(render(Scene.from_dict(p.attributes["scene"])), 16_000, p) for p in prompts]

    def plain() -> list[float]:
        return [one_clip_per_generate(scorer, c.audio[0], c.prompt.text) for c in clips]

    def ours() -> list[float]:
        return [r.values["aqa"] for r in scorer.score(clips)]

    plain(), ours()  # warm-up
    times = {"plain": [], "ours": []}
    for _ in range(repeats):
        for name, fn in (("plain", plain), ("ours", ours)):
            start = time.perf_counter()
            values = fn()
            times[name].append(time.perf_counter() - start)
            if name == "plain":
                plain_values = values
            else:
                our_values = values
    diff = float(np.max(np.abs(np.array(plain_values) - np.array(our_values))))
    med = {k: float(np.median(v)) for k, v in times.items()}
    lines = [
        "# Judge throughput: judge:mini batched vs one clip per generate call",
        "",
        f"{n} clips of 4 s from the synthetic accuracy suite, the caption (aqa) question, judge-mini, "
        f"{torch.get_num_threads()} torch threads, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores; median of {repeats} runs after a warm-up (min-max in brackets).",
        "",
        "| | seconds | clips/s |",
        "|---|---|---|",
        f"| one clip per `generate` (Resonate's loop, restated) | {med['plain']:.2f} "
        f"({min(times['plain']):.2f}-{max(times['plain']):.2f}) | {n / med['plain']:.1f} |",
        f"| judge:mini, batched forward passes | {med['ours']:.2f} "
        f"({min(times['ours']):.2f}-{max(times['ours']):.2f}) | {n / med['ours']:.1f} |",
        "",
        f"Speed-up: **{med['plain'] / med['ours']:.2f}x** (target >= 4x). Largest aqa difference: {diff:.1e} "
        "(target <= 1e-5).",
        "",
    ]
    text = "\n".join(lines)
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(text)
    return text


if __name__ == "__main__":
    print(main(*(int(a) for a in sys.argv[1:2])))
