"""``clap:mini`` — the CLAP score of the mini world, through the same contract as every CLAP.

Score = raw cosine of L2-normalised audio and text embeddings (16 kHz mono; 4 s windows averaged,
never a random crop). Each clip's audio embedding is kept as the ``audio_embedding`` artefact, so
FAD(mini) is computed from the store without embedding a clip twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ttaeval.audio import Clip
from ttaeval.scorers.base import MetricSpec, Scorer, ScoreResult
from ttaeval.synth.clap_mini import DEFAULT_CHECKPOINT, ClapMini, load_clap_mini


def file_digest(path: Path, length: int = 16) -> str:
    """sha256 of a weights file (the scorer id names weights by content, not by path)."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:length]


@dataclass
class ClapMiniScorer(Scorer):
    """CLAP score with clap-mini (shipped weights by default)."""

    name = "clap"
    backend = "mini"
    version = "1"
    metrics = (MetricSpec("clap", True, (-1.0, 1.0), "cosine of audio and text embeddings"),)
    sample_rate = 16_000
    channels = 1
    uses_prompt = True

    checkpoint: Path | None = None
    """clap-mini safetensors; None = the weights shipped in the package."""
    batch_size: int = 32
    """Clips per forward pass (no effect on the numbers beyond float rounding)."""
    model: ClapMini = field(init=False, repr=False)
    _text_cache: dict[str, np.ndarray] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        path = Path(self.checkpoint) if self.checkpoint else DEFAULT_CHECKPOINT
        self.model = load_clap_mini(path)
        self._digest = file_digest(path)

    def identity_options(self) -> dict[str, object]:
        return {"weights": self._digest}

    def text_embeddings(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) embeddings, cached per text."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
        if missing:
            with torch.no_grad():
                embs = self.model.embed_text(missing).numpy()
            self._text_cache.update(zip(missing, embs))
        return np.stack([self._text_cache[t] for t in texts])

    def score_batch(self, clips: Sequence[Clip]) -> list[ScoreResult]:
        with torch.inference_mode():
            audio = self.model.embed_audio([c.audio[0] for c in clips], batch_size=self.batch_size)
        text = self.text_embeddings([c.prompt.text for c in clips])
        cos = np.sum(audio * text, axis=1)
        return [ScoreResult({"clap": float(v)}, artefacts={"audio_embedding": e}) for v, e in zip(cos, audio)]
