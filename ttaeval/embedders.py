"""Audio embedders for set metrics (FAD and its family): clips in, ``(n, dim)`` float32 out.

One small class per embedding model (like fadtk's model loaders), registered lazily by name.
Issue-4 backends (VGGish, PANNs, CLAP, EnCodec) join the same registry.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from ttaeval.audio import Clip, prepare
from ttaeval.registry import Registry
from ttaeval.setmetrics import fad


class Embedder(ABC):
    """Turns clips into embeddings; the caller's clips are converted to its rate and channels."""

    name: ClassVar[str]
    sample_rate: ClassVar[int]
    channels: ClassVar[int] = 1

    def embed(self, clips: Sequence[Clip]) -> np.ndarray:
        """``(len(clips), dim)`` float32 embeddings, one per clip."""
        prepared = [prepare(c, self.sample_rate, self.channels) for c in clips]
        out = self.embed_prepared(prepared)
        if out.ndim != 2 or out.shape[0] != len(clips):
            raise RuntimeError(f"{self.name} returned shape {out.shape} for {len(clips)} clips")
        return out.astype(np.float32)

    @abstractmethod
    def embed_prepared(self, clips: Sequence[Clip]) -> np.ndarray:
        """Embed clips already at ``sample_rate``/``channels``."""


EMBEDDERS: Registry[type[Embedder]] = Registry("embedder")
EMBEDDERS.register("mini", "ttaeval.synth.clap_mini:MiniEmbedder", requires=("torch",))


def get_embedder(name: str, **options: object) -> Embedder:
    return EMBEDDERS.get(name)(**options)


def frechet_audio_distance(embedder: Embedder, clips: Sequence[Clip], reference: Sequence[Clip]) -> float:
    """FAD between two clip sets under one embedder (float64 statistics)."""
    return fad(embedder.embed(clips), embedder.embed(reference))
