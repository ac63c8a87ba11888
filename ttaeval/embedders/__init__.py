"""Embedding models as scorers (``embed:NAME``): the per-clip artefacts the set metrics read.

One file per model family, like fadtk's model loaders: ``mini`` (clap-mini), ``vggish``, ``panns``,
``openl3``, ``passt``, ``encodec``; their networks live in ``ttaeval.backbones``. Each is registered
in the one scorer registry (``ttaeval scorers`` lists them), so ``ttaeval run``/``score`` store
their embeddings content-keyed and resumable like any score, and the set metrics
(``ttaeval.metrics``) compute FAD, KL, IS ... from the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ttaeval.embedders.base import EMBEDDING, FRAMES, LOGITS, EmbeddingScorer, fad_samples
from ttaeval.io.audio import Clip

__all__ = [
    "EMBEDDING",
    "FRAMES",
    "LOGITS",
    "EmbeddingScorer",
    "fad_samples",
    "frechet_audio_distance",
    "get_embedder",
]


def get_embedder(name: str, **options: Any) -> EmbeddingScorer:
    """``get_embedder("vggish", checkpoint=PATH)`` is ``get_scorer("embed:vggish", checkpoint=PATH)``."""
    from ttaeval.scorers import get_scorer

    scorer = get_scorer(f"embed:{name}", **options)
    assert isinstance(scorer, EmbeddingScorer)
    return scorer


def frechet_audio_distance(
    embedder: EmbeddingScorer, clips: Sequence[Clip], reference: Sequence[Clip]
) -> float:
    """FAD between two clip sets under one embedder, in memory (float64 statistics; every frame a
    sample for per-frame models)."""
    from ttaeval.metrics.formulas import fad

    return fad(embedder.fad_samples(clips), embedder.fad_samples(reference))
