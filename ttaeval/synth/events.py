"""Procedural sound events: 14 types a listener can tell apart, each with audible attributes.

Every renderer takes the occurrence length in samples, a pitch class ("low"/"high") and a
generator, and returns one occurrence as float64 with peak 1 (levels are applied by the scene).
Pitch changes the frequency content of every type (for noises: the band; for click trains and
knocks: the rate and resonance), so "high" and "low" differ audibly for all of them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

RATE = 16_000


def _signal():
    """scipy.signal, imported on the first rendering: loading the prompts (a trainer's whole use of
    the suites) does without its half second of import."""
    import scipy.signal

    return scipy.signal


def _t(n: int) -> np.ndarray:
    return np.arange(n) / RATE


def _envelope(n: int, attack: float = 0.01, release: float = 0.03) -> np.ndarray:
    env = np.ones(n)
    a, r = min(n // 2, int(attack * RATE)), min(n // 2, int(release * RATE))
    if a:
        env[:a] = np.linspace(0, 1, a)
    if r:
        env[n - r :] = np.linspace(1, 0, r)
    return env


def _decay(n: int, seconds: float) -> np.ndarray:
    return np.exp(-_t(n) / seconds)


@functools.lru_cache(maxsize=512)
def _bandpass(low: float, high: float) -> np.ndarray:
    """A 4th-order Butterworth band-pass (most bands recur from clip to clip: designed once each)."""
    sos = _signal().butter(4, [low, high], btype="bandpass", fs=RATE, output="sos")
    sos.setflags(write=False)  # shared: each filtering takes a copy (scipy's needs a writable one)
    return sos


def _band(x: np.ndarray, low: float, high: float) -> np.ndarray:
    return _signal().sosfilt(_bandpass(low, high).copy(), x)


def _norm(x: np.ndarray) -> np.ndarray:
    peak = np.max(np.abs(x))
    return x / peak if peak > 0 else x


def _pick(pitch: str, low: float, high: float, rng: np.random.Generator, spread: float = 0.08) -> float:
    base = low if pitch == "low" else high
    return base * (1 + spread * rng.uniform(-1, 1))


def beep(n, pitch, rng):
    f = _pick(pitch, 440, 1500, rng)
    return np.sin(2 * np.pi * f * _t(n)) * _envelope(n)


def chirp_up(n, pitch, rng):
    f = _pick(pitch, 300, 1200, rng)
    return _signal().chirp(_t(n), f, n / RATE, 2.5 * f, method="logarithmic") * _envelope(n)


def chirp_down(n, pitch, rng):
    f = _pick(pitch, 750, 3000, rng)
    return _signal().chirp(_t(n), f, n / RATE, f / 2.5, method="logarithmic") * _envelope(n)


def noise_burst(n, pitch, rng):
    lo, hi = (150, 1200) if pitch == "low" else (2500, 7000)
    return _norm(_band(rng.standard_normal(n), lo, hi)) * _envelope(n, 0.005, 0.05)


def pink_noise(n, pitch, rng):
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / RATE)
    spec /= np.sqrt(np.maximum(freqs, 20.0))
    x = np.fft.irfft(spec, n)
    x = _band(x, 60, 1500) if pitch == "low" else _band(x, 1500, 7500)
    return _norm(x) * _envelope(n, 0.05, 0.1)


def click_train(n, pitch, rng):
    rate = _pick(pitch, 8, 30, rng)
    x = np.zeros(n)
    x[(np.arange(0, n / RATE, 1 / rate) * RATE).astype(int)] = 1.0
    lo, hi = (600, 2500) if pitch == "low" else (3000, 7500)
    click = _band(rng.standard_normal(64), lo, hi) * np.hanning(64)
    return _norm(np.convolve(x, click)[:n])


def kick_drum(n, pitch, rng):
    f0 = _pick(pitch, 55, 130, rng)
    t = _t(n)
    freq = f0 * (1 + 2.5 * np.exp(-t / 0.03))
    phase = 2 * np.pi * np.cumsum(freq) / RATE
    return np.sin(phase) * _decay(n, 0.12) * _envelope(n, 0.001, 0.01)


def bell(n, pitch, rng):
    f = _pick(pitch, 350, 1300, rng, spread=0.05)
    t = _t(n)
    partials = [(1.0, 1.0), (2.76, 0.6), (5.40, 0.4), (8.93, 0.25)]
    x = sum(a * np.sin(2 * np.pi * f * r * t) * _decay(n, 0.5 / r**0.5) for r, a in partials)
    return _norm(x) * _envelope(n, 0.002, 0.02)


def siren(n, pitch, rng):
    f = _pick(pitch, 500, 1300, rng)
    t = _t(n)
    inst = f * (1 + 0.35 * np.sin(2 * np.pi * 0.9 * t - np.pi / 2))
    return np.sin(2 * np.pi * np.cumsum(inst) / RATE) * _envelope(n, 0.05, 0.1)


def hum(n, pitch, rng):
    f = _pick(pitch, 60, 180, rng, spread=0.03)
    t = _t(n)
    x = sum(np.sin(2 * np.pi * f * k * t) / k for k in range(1, 7))
    return _norm(x) * _envelope(n, 0.1, 0.1)


def rain(n, pitch, rng):
    bed = _band(rng.standard_normal(n), 800, 6000) * 0.3
    drops = np.zeros(n)
    count = int(n / RATE * (60 if pitch == "low" else 250))
    drops[rng.integers(0, n, max(1, count))] = rng.uniform(0.3, 1.0, max(1, count))
    tick = _band(rng.standard_normal(80), 2000, 7000) * np.hanning(80)
    x = bed + np.convolve(drops, tick)[:n]
    if pitch == "low":
        x = _band(x, 300, 2500)
    return _norm(x) * _envelope(n, 0.1, 0.1)


def engine(n, pitch, rng):
    f = _pick(pitch, 30, 75, rng, spread=0.05)
    t = _t(n)
    saw = _signal().sawtooth(2 * np.pi * f * t)
    sos = _signal().butter(2, 8 * f, btype="lowpass", fs=RATE, output="sos")
    x = _signal().sosfilt(sos, saw) * (1 + 0.4 * np.sin(2 * np.pi * f / 4 * t))
    return _norm(x + 0.05 * _band(rng.standard_normal(n), 100, 800)) * _envelope(n, 0.08, 0.1)


def whistle(n, pitch, rng):
    f = _pick(pitch, 900, 2600, rng)
    t = _t(n)
    x = np.sin(2 * np.pi * f * t + 0.3 * np.sin(2 * np.pi * 5 * t))
    return _norm(x + 0.15 * _band(rng.standard_normal(n), f * 0.8, f * 1.25)) * _envelope(n, 0.04, 0.06)


def knock(n, pitch, rng):
    """Three resonant hits; a longer knock rings longer between wider-spaced hits."""
    hits, spacing = 3, max(1, n // 3)
    f = _pick(pitch, 180, 700, rng)
    x = np.zeros(n)
    for h in range(hits):
        m = min(int(spacing * 0.9), n - h * spacing)
        if m <= 8:
            break
        x[h * spacing : h * spacing + m] += _band(rng.standard_normal(m), f * 0.7, f * 1.4) * _decay(
            m, spacing / RATE / 5
        )
    return _norm(x)


@dataclass(frozen=True)
class EventType:
    """A kind of sound: its renderer, how captions name it, and whether it can be counted."""

    name: str
    render: Callable[[int, str, np.random.Generator], np.ndarray]
    nouns: tuple[str, ...]  # singular names; the first is canonical, the rest paraphrases
    countable: bool = True


def _plural(noun: str) -> str:
    head, _, tail = noun.partition(" of ")
    if head.endswith(("sh", "ch", "s", "x")):
        head += "es"
    elif head.endswith("y") and head[-2] not in "aeiou":
        head = head[:-1] + "ies"
    else:
        head += "s"
    return f"{head} of {tail}" if tail else head


EVENT_TYPES: dict[str, EventType] = {
    e.name: e
    for e in [
        EventType("beep", beep, ("beep", "tone", "bleep")),
        EventType("rising chirp", chirp_up, ("rising chirp", "upward sweep", "rising tone")),
        EventType("falling chirp", chirp_down, ("falling chirp", "downward sweep", "falling tone")),
        EventType("noise burst", noise_burst, ("burst of noise", "noise burst", "blast of static")),
        EventType(
            "pink noise", pink_noise, ("pink noise", "soft rushing noise", "steady hiss"), countable=False
        ),
        EventType(
            "click train", click_train, ("train of clicks", "rapid clicking", "ticking"), countable=False
        ),
        EventType("kick drum", kick_drum, ("kick drum", "bass drum hit", "drum thump")),
        EventType("bell", bell, ("bell", "chime", "bell strike")),
        EventType("siren", siren, ("siren", "wailing siren", "alarm siren"), countable=False),
        EventType("hum", hum, ("hum", "electrical hum", "drone"), countable=False),
        EventType("rain", rain, ("rain", "rainfall", "patter of rain"), countable=False),
        EventType("engine", engine, ("engine idling", "idling engine", "running motor"), countable=False),
        EventType("whistle", whistle, ("whistle", "whistle blast", "shrill whistle")),
        EventType("knock", knock, ("knock", "door knock", "wooden knock")),
    ]
}


def noun_phrase(event: str, count: int, variant: int) -> str:
    """How a caption names ``count`` occurrences of an event, in paraphrase ``variant``."""
    noun = EVENT_TYPES[event].nouns[variant % len(EVENT_TYPES[event].nouns)]
    return noun if count == 1 else _plural(noun)
