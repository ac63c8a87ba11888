"""Signal checks: loudness (ITU-R BS.1770 via pyloudnorm), peak, clipping, silence, DC, duration."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyloudnorm

from ttaeval.io.audio import Clip
from ttaeval.scorers.base import MetricSpec, Scorer, ScoreResult


@dataclass
class SignalScorer(Scorer):
    """Properties of the waveform itself; reads no prompt and works at any rate and channel count.

    Metrics: ``loudness_lufs`` (integrated, gated BS.1770; NaN with a reason for clips shorter than
    one 400 ms block, entirely below the -70 LUFS gate, or of more than 5 channels), ``peak``
    (max |x|), ``clipping_ratio`` (fraction of samples in flat runs of at least ``min_run`` equal
    samples at the clip's own peak: clipping at 0.5 or 0.99 of full scale is found as well as at
    1.0, and a clean sine touching its peak is not clipping),
    ``silence_ratio`` (fraction of ``frame_ms`` frames whose RMS is below ``silence_dbfs``),
    ``dc_offset`` (largest |channel mean|), ``duration_s``.
    """

    name = "signal"
    backend = "builtin"
    version = "2"
    metrics = (
        MetricSpec("loudness_lufs", None, (-math.inf, 10.0), "integrated loudness, ITU-R BS.1770-4"),
        MetricSpec("peak", None, (0.0, math.inf), "max absolute sample value"),
        MetricSpec("clipping_ratio", False, (0.0, 1.0), "fraction of samples in flat runs at the peak"),
        MetricSpec(
            "silence_ratio",
            None,
            (0.0, 1.0),
            "fraction of frames below the silence level (descriptive: a prompt may ask for pauses, "
            "and noise fills them, so less silence is not better)",
        ),
        MetricSpec("dc_offset", False, (0.0, math.inf), "largest absolute channel mean"),
        MetricSpec("duration_s", None, (0.0, math.inf), "length in seconds"),
    )

    min_run: int = 3
    """Consecutive samples at the clip's peak that make a clipped run (three equal samples never
    occur at the top of a smooth waveform; two can, when the true peak falls between samples)."""
    silence_dbfs: float = -60.0
    """A frame whose RMS is below this level (dBFS) is silent."""
    frame_ms: float = 50.0
    """Frame length for the silence ratio, in milliseconds."""
    batch_size: int = 64
    """Clips per call (no effect on the numbers)."""

    def score_batch(self, clips: Sequence[Clip]) -> list[ScoreResult]:
        return [self._score_one(clip) for clip in clips]

    def _score_one(self, clip: Clip) -> ScoreResult:
        x = clip.audio.astype(np.float64)
        values = {
            "peak": float(np.max(np.abs(x))),
            "clipping_ratio": self._clipping_ratio(x),
            "silence_ratio": self._silence_ratio(x, clip.sample_rate),
            "dc_offset": float(np.max(np.abs(x.mean(axis=1)))),
            "duration_s": clip.duration,
        }
        errors = {}
        loudness, reason = self._loudness(x, clip.sample_rate)
        values["loudness_lufs"] = loudness
        if reason:
            errors["loudness_lufs"] = reason
        return ScoreResult(values, errors)

    def _clipping_ratio(self, x: np.ndarray) -> float:
        peak = float(np.max(np.abs(x)))
        if peak == 0.0:  # silence is not clipping
            return 0.0
        clipped = 0
        for at_peak in np.abs(x) >= peak * (1 - 1e-6):  # per channel
            edges = np.diff(np.concatenate([[0], at_peak.astype(np.int8), [0]]))
            runs = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
            clipped += int(runs[runs >= self.min_run].sum())
        return clipped / x.size

    def __post_init__(self) -> None:
        if self.min_run < 2:
            raise ValueError(
                f"signal min_run must be at least 2 (one sample is every clip's peak), got {self.min_run}"
            )
        if not np.isfinite(self.silence_dbfs):
            raise ValueError(f"signal silence_dbfs must be a finite level in dBFS, got {self.silence_dbfs}")

    def _silence_ratio(self, x: np.ndarray, rate: int) -> float:
        frame = max(1, round(rate * self.frame_ms / 1000))
        n = x.shape[1] // frame
        # frames of (channels, frame); a clip shorter than one frame is judged whole
        frames = x[None] if n == 0 else x[:, : n * frame].reshape(x.shape[0], n, frame).transpose(1, 0, 2)
        rms = np.sqrt(np.mean(np.square(frames), axis=(1, 2)))
        level = 20 * np.log10(np.maximum(rms, 1e-12))
        return float(np.mean(level < self.silence_dbfs))

    @staticmethod
    def _loudness(x: np.ndarray, rate: int) -> tuple[float, str | None]:
        block = 0.4
        if x.shape[0] > 5:
            return (
                math.nan,
                f"loudness undefined: BS.1770 weights up to 5 channels, this clip has {x.shape[0]}",
            )
        if x.shape[1] < block * rate:
            return math.nan, f"loudness undefined: shorter than one {block * 1000:.0f} ms BS.1770 block"
        value = pyloudnorm.Meter(rate, block_size=block).integrated_loudness(x.T)
        if not math.isfinite(value):
            return math.nan, "loudness undefined: every block is below the -70 LUFS absolute gate (silent)"
        return float(value), None
