"""Synthetic suites in TTA-Bench's layout: accuracy, generalization, robustness, and references.

- ``accuracy``: scenes from the training distribution, captioned with training templates.
- ``generalization``: every scene holds a combination never used in training — a pair of event
  types that never co-occur there, or an event with an attribute value it never has there (a quiet
  hum, a long whistle, three kick drums, a quiet bell) — and half the captions use the held-out
  templates.
- ``robustness``: TTA-Bench's six perturbations (uppercase, synonym, misspelling, space, rewrite,
  punctuate) applied to accuracy prompts; ``notes`` holds the source prompt id, as in TTA-Bench.
- references: renderings of the accuracy scenes with other seeds, for FAD.

Every prompt carries TTA-Bench's fields and, in ``scene``, the machine-readable scene it describes,
so its reference audio can always be rendered again. Everything is deterministic.
"""

from __future__ import annotations

import itertools
from functools import cache

import numpy as np

from ttaeval.io.prompts import Prompt
from ttaeval.synth.events import EVENT_TYPES
from ttaeval.synth.scenes import (
    LENGTHS,
    LOUDNESS,
    PITCHES,
    WORDS,
    Event,
    Scene,
    caption,
    event_description,
)

SUITE_SIZES = {"accuracy": 200, "generalization": 200}
ROBUSTNESS_PER_PERTURBATION = 50
PERTURBATIONS = ("uppercase", "synonym", "misspelling", "space", "rewrite", "punctuate")
ID_OFFSETS = {"accuracy": 0, "generalization": 200, "robustness": 400}
SEEDS = {
    "accuracy": 11,
    "generalization": 12,
    "robustness": 13,
    "reference": 14,
    "train": 15,
    "validation": 16,
}

_TYPES = sorted(EVENT_TYPES)
_PAIRS = list(itertools.combinations(_TYPES, 2))
# Held-out combinations: fixed by a seed, never present in training or accuracy scenes.
HELD_OUT_PAIRS = frozenset(
    frozenset(_PAIRS[i]) for i in np.random.default_rng(2024).choice(len(_PAIRS), 14, replace=False)
)
# Event/attribute combinations training never hears. Attributes that act the same on every type
# (level, length, count) are held out, not pitch: a pitch a type never has moves its spectrum
# somewhere no training clip of that type is, which tests extrapolation rather than composition.
HELD_OUT_ATTRIBUTES = frozenset(
    {
        ("hum", "loudness", "quiet"),
        ("whistle", "length", "long"),
        ("kick drum", "count", 3),
        ("bell", "loudness", "quiet"),
    }
)


def is_held_out(scene: Scene) -> bool:
    """Whether a scene holds a combination that training never sees."""
    types = [e.type for e in scene.events]
    pairs = {frozenset(p) for p in itertools.combinations(set(types), 2)}
    return bool(pairs & HELD_OUT_PAIRS) or any(
        (e.type, attr, getattr(e, attr)) in HELD_OUT_ATTRIBUTES
        for e in scene.events
        for attr in ("loudness", "length", "count")
    )


def random_event(rng: np.random.Generator, kind: str | None = None) -> Event:
    kind = kind or _TYPES[int(rng.integers(len(_TYPES)))]
    countable = EVENT_TYPES[kind].countable
    return Event(
        kind,
        PITCHES[int(rng.integers(2))],
        tuple(LOUDNESS)[int(rng.integers(2))],
        LENGTHS[int(rng.integers(2))],
        int(rng.integers(1, 4)) if countable else 1,
    )


def random_scene(rng: np.random.Generator, held_out: bool = False) -> Scene:
    """A scene from the training distribution, or (``held_out``) one with an unseen combination."""
    while True:
        n = int(rng.choice([1, 2, 3], p=[0.3, 0.4, 0.3]))
        kinds = list(rng.choice(_TYPES, n, replace=False))
        events = tuple(random_event(rng, str(k)) for k in kinds)
        relation = "None" if n == 1 else ("sequence", "parallelism")[int(rng.integers(2))]
        scene = Scene(events, relation, int(rng.integers(2**31)))
        if is_held_out(scene) == held_out:
            return scene


def scene_prompt(pid: str, scene: Scene, text: str, dimension: str, **extra: object) -> Prompt:
    attrs = {
        "event_count": len(scene.events),
        "event_list": [event_description(e) for e in scene.events],
        "event_relation": scene.relation,
        "source": "synth",
        **extra,
        "scene": scene.to_dict(),
    }
    return Prompt(pid, text, dimension, attrs)


def _pid(dimension: str, i: int) -> str:
    return f"prompt_{ID_OFFSETS[dimension] + i + 1:04d}"


@cache
def accuracy_suite() -> tuple[Prompt, ...]:
    rng = np.random.default_rng(SEEDS["accuracy"])
    out = []
    for i in range(SUITE_SIZES["accuracy"]):
        scene = random_scene(rng)
        out.append(scene_prompt(_pid("accuracy", i), scene, caption(scene, rng), "accuracy"))
    return tuple(out)


@cache
def generalization_suite() -> tuple[Prompt, ...]:
    rng = np.random.default_rng(SEEDS["generalization"])
    out = []
    for i in range(SUITE_SIZES["generalization"]):
        scene = random_scene(rng, held_out=True)
        text = caption(scene, rng, held_out=bool(i % 2))
        out.append(scene_prompt(_pid("generalization", i), scene, text, "generalization"))
    return tuple(out)


@cache
def robustness_suite() -> tuple[Prompt, ...]:
    rng = np.random.default_rng(SEEDS["robustness"])
    sources = accuracy_suite()
    out = []
    for kind in PERTURBATIONS:
        picks = rng.choice(len(sources), ROBUSTNESS_PER_PERTURBATION, replace=False)
        for j in sorted(picks):
            src = sources[int(j)]
            scene = Scene.from_dict(src.attributes["scene"])
            text = perturb(src.text, kind, rng, scene)
            pid = _pid("robustness", len(out))
            out.append(scene_prompt(pid, scene, text, "robustness", perturbation_type=kind, notes=src.id))
    return tuple(out)


def reference_scenes(n_per_prompt: int = 1) -> list[tuple[Prompt, Scene]]:
    """Reference renderings: the accuracy scenes with new seeds (same content, other realisations)."""
    rng = np.random.default_rng(SEEDS["reference"])
    out = []
    for p in accuracy_suite():
        scene = Scene.from_dict(p.attributes["scene"])
        for _ in range(n_per_prompt):
            out.append((p, Scene(scene.events, scene.relation, int(rng.integers(2**31)))))
    return out


DEMO_SOURCES = 40
TRAIN_PROMPTS = 2000
VALIDATION_PROMPTS = 200


@cache
def train_suite() -> tuple[Prompt, ...]:
    """Prompts from the training distribution (never a held-out combination), for trainers'
    rollouts: disjoint in seed from every evaluation suite."""
    rng = np.random.default_rng([SEEDS["train"], 1])
    return tuple(
        scene_prompt(f"train_{i + 1:05d}", scene, caption(scene, rng), "train")
        for i, scene in enumerate(random_scene(rng) for _ in range(TRAIN_PROMPTS))
    )


@cache
def validation_suite() -> tuple[Prompt, ...]:
    """Training-distribution prompts of their own seed, for choosing a trainer's settings: a caption
    that is also a training or evaluation prompt's is drawn again."""
    taken = {p.text for suite in (train_suite, accuracy_suite, generalization_suite) for p in suite()}
    rng = np.random.default_rng([SEEDS["validation"], 1])
    out: list[Prompt] = []
    while len(out) < VALIDATION_PROMPTS:
        scene = random_scene(rng)
        text = caption(scene, rng)
        if text not in taken:
            out.append(scene_prompt(f"val_{len(out) + 1:05d}", scene, text, "validation"))
    return tuple(out)


@cache
def demo_suite() -> tuple[Prompt, ...]:
    """A small cut of all three for ``make demo``: the first 40 accuracy and generalization prompts,
    and every robustness prompt perturbing one of those 40 (so its robustness ratio has its source)."""
    sources = accuracy_suite()[:DEMO_SOURCES]
    ids = {p.id for p in sources}
    robust = [p for p in robustness_suite() if p.attributes["notes"] in ids]
    return (*sources, *generalization_suite()[:DEMO_SOURCES], *robust)


SUITES = {
    "accuracy": accuracy_suite,
    "generalization": generalization_suite,
    "robustness": robustness_suite,
    "demo": demo_suite,
    "train": train_suite,
    "validation": validation_suite,
}


def load_synth(name: str) -> list[Prompt]:
    """``synth:accuracy`` | ``synth:generalization`` | ``synth:robustness`` | ``synth:all`` (the
    three) | ``synth:demo`` (a small cut of the three) | ``synth:train`` (2,000 training-distribution
    prompts, for trainers) | ``synth:validation`` (200 more, for choosing trainers' settings)."""
    if name == "all":
        return [p for key in ("accuracy", "generalization", "robustness") for p in SUITES[key]()]
    if name not in SUITES:
        raise KeyError(f"unknown synthetic suite {name!r}; available: {', '.join([*SUITES, 'all'])}")
    return list(SUITES[name]())


# -- TTA-Bench's six perturbations ----------------------------------------------------------------
_SYNONYMS = {w: alts for alts in WORDS.values() for w in alts}
_SYNONYMS.update({n: e.nouns for e in EVENT_TYPES.values() for n in e.nouns})


def perturb(text: str, kind: str, rng: np.random.Generator, scene: Scene | None = None) -> str:
    """Apply one of TTA-Bench's perturbations; the meaning stays, the surface changes."""
    words = text.split(" ")
    if kind == "uppercase":  # a few letters in capitals, as in TTA-Bench's "passinG"
        chars = list(text)
        letters = [i for i, c in enumerate(chars) if c.isalpha() and c.islower()]
        for i in rng.choice(letters, min(len(letters), int(rng.integers(1, 4))), replace=False):
            chars[i] = chars[i].upper()
        return "".join(chars)
    if kind == "synonym":  # swap described words for another word of the same meaning
        lowered = text.lower()
        candidates = [w for w in sorted(_SYNONYMS, key=len, reverse=True) if f" {w} " in f" {lowered} "]
        for w in candidates[:2]:
            alts = [a for a in _SYNONYMS[w] if a != w]
            lowered = f" {lowered} ".replace(f" {w} ", f" {alts[int(rng.integers(len(alts)))]} ", 1).strip()
        return lowered[0].upper() + lowered[1:]
    if kind == "misspelling":  # one or two words with a swapped, dropped or doubled letter
        idx = [i for i, w in enumerate(words) if len(w) > 3]
        for i in rng.choice(idx, min(len(idx), 2), replace=False):
            words[i] = _misspell(words[i], rng)
        return " ".join(words)
    if kind == "space":  # two words run together and a doubled space elsewhere
        if len(words) < 2:
            return text + " "
        i = int(rng.integers(len(words) - 1))
        merged = [*words[:i], words[i] + words[i + 1], *words[i + 2 :]]
        j = int(rng.integers(1, len(merged))) if len(merged) > 1 else 0
        if j:
            merged[j] = " " + merged[j]
        return " ".join(merged)
    if kind == "rewrite":  # the same scene in other training words
        if scene is None:
            raise ValueError("the rewrite perturbation needs the scene")
        for _ in range(20):
            new = caption(scene, rng)
            if new.lower() != text.lower():
                return new
        return new
    if kind == "punctuate":  # punctuation that carries no meaning
        marks = [",", "!", "...", ";", " -"]
        for i in sorted(rng.choice(len(words), min(len(words), 2), replace=False), reverse=True):
            words[i] = words[i] + marks[int(rng.integers(len(marks)))]
        return " ".join(words) + ("!" if rng.random() < 0.5 else ".")
    raise ValueError(f"unknown perturbation {kind!r}; known: {', '.join(PERTURBATIONS)}")


def _misspell(word: str, rng: np.random.Generator) -> str:
    j = int(rng.integers(1, len(word) - 1))
    op = int(rng.integers(3))
    if op == 0:  # swap two neighbours
        return word[:j] + word[j + 1] + word[j] + word[j + 2 :]
    if op == 1:  # drop a letter
        return word[:j] + word[j + 1 :]
    return word[:j] + word[j] + word[j:]  # double a letter
