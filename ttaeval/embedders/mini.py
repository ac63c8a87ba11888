"""``embed:mini`` — clap-mini's audio tower: 128-d L2-normalised embeddings of the mini world."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ttaeval.embedders.base import EMBEDDING, EmbeddingScorer
from ttaeval.io.audio import Clip


@dataclass
class MiniScorer(EmbeddingScorer):
    """The shipped clap-mini (or ``checkpoint``): 16 kHz mono, 4 s windows averaged."""

    backend = "mini"
    sample_rate = 16_000
    checkpoint: Path | None = None
    """clap-mini safetensors (default: the shipped weights)."""
    batch_size: int = 32
    """Windows per forward pass."""
    device: str = "cpu"
    """Torch device: cpu, cuda, cuda:N, or auto (the local GPU, else the CPU; resolved once when the
    model loads; under torchrun, cuda means cuda:LOCAL_RANK)."""
    dtype: str = "float32"
    """Precision of the forward passes: "bfloat16" (or "float16" on GPUs) runs them under autocast
    with float32 weights; outputs are float32. Part of the id when not float32."""

    def __post_init__(self) -> None:
        from ttaeval.backbones.clap_mini import DEFAULT_CHECKPOINT, load_clap_mini

        self.bind_device()
        self.checkpoint = Path(self.checkpoint) if self.checkpoint else DEFAULT_CHECKPOINT
        self.model = load_clap_mini(self.checkpoint).to(self.device)

    def embed_batch(self, clips: Sequence[Clip]) -> list[dict[str, np.ndarray]]:
        emb = self.model.embed_audio(
            [c.audio[0] for c in clips], batch_size=self.batch_size, dtype=self.dtype
        )
        return [{EMBEDDING: row} for row in emb]
