"""Small signal makers for tests."""

from __future__ import annotations

import numpy as np


def tone(freq: float = 440.0, seconds: float = 1.0, rate: int = 16_000, amp: float = 0.5, channels: int = 1):
    """A sine, float32 ``(channels, samples)``."""
    t = np.arange(int(seconds * rate)) / rate
    return np.repeat((amp * np.sin(2 * np.pi * freq * t))[None], channels, axis=0).astype(np.float32)


def dominant_frequency(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / rate)[np.argmax(spectrum)])
