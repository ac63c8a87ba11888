"""``clap:mini`` — the CLAP score of the mini world, through the same contract as every CLAP.

16 kHz mono; 4 s windows averaged, never a random crop (see ``ttaeval.synth.clap_mini``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ttaeval.scorers.clap_common import ClapScorer, weights_digest
from ttaeval.synth.clap_mini import DEFAULT_CHECKPOINT, ClapMini, load_clap_mini


@dataclass
class ClapMiniScorer(ClapScorer):
    """CLAP score with clap-mini (shipped weights by default)."""

    backend = "mini"
    version = "1"
    sample_rate = 16_000

    checkpoint: Path | None = None
    """clap-mini safetensors; None = the weights shipped in the package."""
    batch_size: int = 32
    """Clips per forward pass (no effect on the numbers beyond float rounding)."""
    model: ClapMini = field(init=False, repr=False)

    def __post_init__(self) -> None:
        path = Path(self.checkpoint) if self.checkpoint else DEFAULT_CHECKPOINT
        self.model = load_clap_mini(path)
        self._digest = weights_digest(path)

    def identity_options(self) -> dict[str, object]:
        return {"weights": self._digest}

    def embed_audio(self, audio: Sequence[np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            return self.model.embed_audio(list(audio), batch_size=self.batch_size)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        with torch.inference_mode():
            return self.model.embed_text(texts).numpy()
