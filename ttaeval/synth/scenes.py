"""Scenes of 1-3 events, related as TTA-Bench relates them, rendered and captioned deterministically.

A ``Scene`` is data (event types, attributes, relation, seed): the same scene always renders the
same audio. Captions come from templates with paraphrases; some templates are held out of
training (``HELD_OUT`` variants) so the generalization suite can test unseen wording.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ttaeval.synth.events import EVENT_TYPES, RATE, noun_phrase

DURATION = 4.0
PITCHES = ("low", "high")
LOUDNESS = {"loud": 0.7, "quiet": 0.12}  # peak levels, about 15 dB apart
LENGTHS = ("short", "long")
RELATIONS = ("None", "sequence", "parallelism")


@dataclass(frozen=True)
class Event:
    """One event of a scene: its type and audible attributes."""

    type: str
    pitch: str = "low"
    loudness: str = "loud"
    length: str = "short"
    count: int = 1

    def __post_init__(self) -> None:
        if self.type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {self.type!r}; known: {', '.join(EVENT_TYPES)}")
        if not EVENT_TYPES[self.type].countable and self.count != 1:
            raise ValueError(f"{self.type} is not countable: count must be 1")


@dataclass(frozen=True)
class Scene:
    """Events and how they relate: ``None`` (one event), ``sequence`` (in order), ``parallelism``."""

    events: tuple[Event, ...]
    relation: str
    seed: int

    def to_dict(self) -> dict:
        return {"events": [asdict(e) for e in self.events], "relation": self.relation, "seed": self.seed}

    @classmethod
    def from_dict(cls, d: dict) -> Scene:
        return cls(tuple(Event(**e) for e in d["events"]), d["relation"], int(d["seed"]))


def occurrences(span: tuple[float, float], event: Event) -> list[tuple[int, int]]:
    """Occurrence (start, length) in samples for an event inside its time span."""
    start, stop = span
    width = stop - start
    if not EVENT_TYPES[event.type].countable:
        length = min(0.8, width * 0.9) if event.length == "short" else width * 0.95
        return [(int((start + (width - length) / 2) * RATE), int(length * RATE))]
    slot = width / event.count
    length = min(0.15 if event.length == "short" else 0.6, slot * (0.35 if event.length == "short" else 0.8))
    return [
        (int((start + i * slot + (slot - length) / 2) * RATE), int(length * RATE)) for i in range(event.count)
    ]


def render(scene: Scene, duration: float = DURATION) -> np.ndarray:
    """The scene as float32 ``(1, samples)`` at 16 kHz, with a -66 dBFS noise floor."""
    rng = np.random.default_rng(scene.seed)
    n = int(duration * RATE)
    out = rng.standard_normal(n) * 5e-4
    k = len(scene.events)
    for i, event in enumerate(scene.events):
        if scene.relation == "sequence":
            span = (0.1 + i * (duration - 0.2) / k, 0.1 + (i + 1) * (duration - 0.2) / k)
        else:
            span = (0.1, duration - 0.1)
        level = LOUDNESS[event.loudness]
        for start, length in occurrences(span, event):
            piece = EVENT_TYPES[event.type].render(max(length, 16), event.pitch, rng)
            piece = piece[: n - start]
            out[start : start + piece.size] += level * piece
    peak = np.max(np.abs(out))
    if peak > 0.99:
        out *= 0.99 / peak
    return out[None].astype(np.float32)


# -- captions ------------------------------------------------------------------------------------
COUNT_WORDS = {1: ("a", "one", "a single"), 2: ("two", "a pair of", "two"), 3: ("three", "three", "three")}
WORDS = {
    "low": ("low", "low-pitched", "deep"),
    "high": ("high", "high-pitched", "shrill"),
    "loud": ("loud", "strong", "powerful"),
    "quiet": ("quiet", "soft", "faint"),
    "short": ("short", "brief", "quick"),
    "long": ("long", "sustained", "lengthy"),
}
# Event phrase templates; the last is held out of training (generalization only).
PHRASES = (
    "{count} {loud} {length} {pitch} {noun}",
    "{count} {length} {pitch} {noun} that {is} {loud}",
    "{count} {pitch} {noun}, {length} and {loud}",
    "{count} {noun} that {sounds} {pitch}, {loud} and {length}",
)
# Scene templates per relation and number of events; the last of each is held out of training.
SCENES = {
    ("None", 1): ("{0}", "the sound of {0}", "{0} can be heard", "listen to {0} here"),
    ("sequence", 2): (
        "{0} followed by {1}",
        "{0}, then {1}",
        "first {0}, after that {1}",
        "{0} and afterwards {1}",
    ),
    ("sequence", 3): (
        "{0} followed by {1} and then {2}",
        "{0}, then {1}, then {2}",
        "first {0}, after that {1}, and finally {2}",
        "{0} and afterwards {1} and afterwards {2}",
    ),
    ("parallelism", 2): (
        "{0} along with {1}",
        "{0} and {1} at the same time",
        "{0} over {1}",
        "{0} together with {1} simultaneously",
    ),
    ("parallelism", 3): (
        "{0} along with {1} and {2}",
        "{0}, {1} and {2} at the same time",
        "{0} over {1} and {2}",
        "{0} together with {1} and {2} simultaneously",
    ),
}
HELD_OUT_TEMPLATE = 3  # index of the held-out template in PHRASES and in every SCENES entry


def event_phrase(event: Event, template: int, variant: int) -> str:
    """One event's words; ``variant`` picks the paraphrase of each word (same scene, other words)."""
    countable = EVENT_TYPES[event.type].countable
    count = COUNT_WORDS[event.count][variant % 3] if countable else ""
    text = PHRASES[template].format(
        count=count,
        loud=WORDS[event.loudness][variant % 3],
        length=WORDS[event.length][(variant // 3) % 3],
        pitch=WORDS[event.pitch][(variant // 9) % 3],
        noun=noun_phrase(event.type, event.count, variant // 27),
        **({"is": "is", "sounds": "sounds"} if event.count == 1 else {"is": "are", "sounds": "sound"}),
    )
    return " ".join(text.split())


def caption(scene: Scene, rng: np.random.Generator, held_out: bool = False) -> str:
    """A caption of the scene from the training templates, or from the held-out ones."""
    template = HELD_OUT_TEMPLATE if held_out else int(rng.integers(HELD_OUT_TEMPLATE))
    phrases = [event_phrase(e, template, int(rng.integers(81))) for e in scene.events]
    text = SCENES[scene.relation, len(phrases)][template].format(*phrases)
    return text[0].upper() + text[1:]


def event_description(event: Event) -> str:
    """The canonical words for one event (TTA-Bench's ``event_list`` entries)."""
    return event_phrase(event, 0, 0).removeprefix("a ").removeprefix("one ")
