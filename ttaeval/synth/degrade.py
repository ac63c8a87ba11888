"""Graded degradations of clean audio: the quality ladder of the mini world.

Three kinds at strengths 0 (clean) to 4 (worst), each a single, audible signal fault:
``noise`` (white noise at a falling SNR), ``clipping`` (driven past full scale by a rising gain) and
``bandlimit`` (an 8th-order low-pass at a falling cut-off). judge-mini learns to rate them; the
benchmark runner uses them as stand-in systems until trained generators exist.
"""

from __future__ import annotations

import numpy as np
import scipy.signal

KINDS = ("noise", "clipping", "bandlimit")
STRENGTHS = (0, 1, 2, 3, 4)
SNR_DB = (None, 30.0, 20.0, 10.0, 0.0)
DRIVE_DB = (None, 4.0, 10.0, 16.0, 24.0)
CUTOFF_HZ = (None, 4000.0, 2000.0, 1000.0, 500.0)


def degrade(audio: np.ndarray, kind: str, strength: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """``audio`` (channels, samples) with one fault of ``kind`` at ``strength`` (0 = unchanged)."""
    if kind not in KINDS:
        raise ValueError(f"unknown degradation {kind!r}; known: {', '.join(KINDS)}")
    if strength not in STRENGTHS:
        raise ValueError(f"strength must be one of {STRENGTHS}, got {strength!r}")
    x = np.asarray(audio, dtype=np.float64)
    if strength == 0:
        return x.astype(np.float32)
    if kind == "noise":
        noise = rng.standard_normal(x.shape)
        power = np.mean(x**2) / 10 ** (SNR_DB[strength] / 10)
        y = np.clip(x + noise * np.sqrt(power), -1.0, 1.0)
    elif kind == "clipping":
        peak = max(float(np.max(np.abs(x))), 1e-6)
        y = np.clip(x / peak * 10 ** (DRIVE_DB[strength] / 20), -1.0, 1.0) * 0.99
    else:
        sos = scipy.signal.butter(8, CUTOFF_HZ[strength], btype="lowpass", fs=rate, output="sos")
        y = scipy.signal.sosfiltfilt(sos, x, axis=-1)
    return y.astype(np.float32)
