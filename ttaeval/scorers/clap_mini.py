"""``clap:mini`` — the CLAP score of the mini world, through the same contract as every CLAP.

16 kHz mono; 4 s windows averaged, never a random crop (see ``ttaeval.backbones.clap_mini``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from ttaeval.backbones.clap_mini import DEFAULT_CHECKPOINT, HELDOUT_CHECKPOINT, ClapMini, load_clap_mini
from ttaeval.checkpoints import weights_digest
from ttaeval.scorers.clap_common import ClapScorer


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
    device: str = "cpu"
    """torch device: cpu, cuda, cuda:N, or auto (the local GPU, else the CPU; resolved once when the
    model loads; under torchrun, cuda means cuda:LOCAL_RANK)."""
    dtype: str = "float32"
    """Precision of the forward passes: "bfloat16" (or "float16" on GPUs) runs them under autocast
    with float32 weights; outputs are float32. Part of the id when not float32."""
    model: ClapMini = field(init=False, repr=False)

    default_checkpoint: ClassVar[Path] = DEFAULT_CHECKPOINT

    def __post_init__(self) -> None:
        self.bind_device()
        path = Path(self.checkpoint) if self.checkpoint else self.default_checkpoint
        self.model = load_clap_mini(path).to(self.device)
        self._digest = weights_digest(path)

    def identity_options(self) -> dict[str, object]:
        return {"weights": self._digest}

    def embed_audio(self, audio: Sequence[np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            return self.model.embed_audio(list(audio), batch_size=self.batch_size, dtype=self.dtype)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        with torch.inference_mode():
            return self.model.embed_text(texts, dtype=self.dtype).cpu().numpy()


@dataclass
class HeldoutClapMiniScorer(ClapMiniScorer):
    """``clap:mini-heldout``: a second clap-mini, trained with another seed and architecture
    (``ttaeval.synth.train_clap``'s docstring has the command), so a model fine-tuned on clap-mini
    rewards is also judged by a CLAP it never saw, as Resonate evaluates with msclap after training
    on LAION-CLAP."""

    backend = "mini-heldout"
    default_checkpoint: ClassVar[Path] = HELDOUT_CHECKPOINT
