"""What every CLAP backend shares: the ``clap`` metric, the cosine score, text caching, weight digests.

A backend subclasses ``ClapScorer`` and provides ``embed_audio`` (mono arrays at its rate ->
L2-normalised ``(n, dim)``) and ``encode_texts`` (texts -> L2-normalised ``(n, dim)``).
"""

from __future__ import annotations

import hashlib
from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ttaeval.audio import Clip
from ttaeval.scorers.base import MetricSpec, Scorer, ScoreResult


def weights_digest(path: Path, length: int = 16) -> str:
    """sha256 of a weights file, or of a folder's files (names and contents): the id names weights
    by content, never by path."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(path).as_posix().encode() + b"\0" if f != path else b"")
        with f.open("rb") as fh:
            for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:length]


class ClapScorer(Scorer):
    """Score = raw cosine of L2-normalised audio and text embeddings; keeps each clip's audio
    embedding as the ``audio_embedding`` artefact (for FAD with that CLAP)."""

    name = "clap"
    metrics = (MetricSpec("clap", True, (-1.0, 1.0), "cosine of audio and text embeddings"),)
    channels = 1
    uses_prompt = True

    @abstractmethod
    def embed_audio(self, audio: Sequence[np.ndarray]) -> np.ndarray:
        """Mono float32 arrays at ``sample_rate`` -> ``(n, dim)`` L2-normalised embeddings."""

    @abstractmethod
    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """Texts -> ``(n, dim)`` L2-normalised embeddings (no caching here)."""

    def text_embeddings(self, texts: Sequence[str]) -> np.ndarray:
        """``(n, dim)`` text embeddings, cached per text for the scorer's lifetime."""
        cache = self.__dict__.setdefault("_text_cache", {})
        missing = [t for t in dict.fromkeys(texts) if t not in cache]
        if missing:
            cache.update(zip(missing, self.encode_texts(missing)))
        return np.stack([cache[t] for t in texts])

    def score_batch(self, clips: Sequence[Clip]) -> list[ScoreResult]:
        audio = self.embed_audio([c.audio[0] for c in clips])
        text = self.text_embeddings([c.prompt.text for c in clips])
        cos = np.sum(audio * text, axis=1)
        return [ScoreResult({"clap": float(v)}, artefacts={"audio_embedding": e}) for v, e in zip(cos, audio)]
