"""``embed:panns`` — PANNs Cnn14: 2048-d clip embeddings (``fc1`` after ReLU) and 527 AudioSet logits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ttaeval.embedders.base import EMBEDDING, LOGITS, EmbeddingScorer, require_file, same_length_batches
from ttaeval.io.audio import Clip


@dataclass
class PannsScorer(EmbeddingScorer):
    """PANNs Cnn14 as audioldm-eval and frechet_audio_distance run it: each clip embedded whole.

    Artefacts: ``audio_embedding`` (2048-d) for FD, ``logits`` (527, pre-sigmoid) for KL and IS.
    """

    backend = "panns"
    artefacts = (EMBEDDING, LOGITS)
    checkpoint: Path | None = None
    """Cnn14_16k_mAP=0.438.pth (variant 16k, audioldm-eval's) or Cnn14_mAP=0.431.pth (32k)."""
    variant: str = "16k"
    """``16k`` or ``32k``: the network's sample rate and front end."""
    batch_size: int = 8
    """Clips of equal length run together (no padding enters a clip)."""
    device: str = "cpu"
    """Torch device: cpu, cuda, cuda:N, or auto (the local GPU, else the CPU; resolved once when the
    model loads; under torchrun, cuda means cuda:LOCAL_RANK)."""
    dtype: str = "float32"
    """Precision of the forward passes: "bfloat16" (or "float16" on GPUs) runs them under autocast
    with float32 weights; outputs are float32. Part of the id when not float32."""

    def __post_init__(self) -> None:
        from ttaeval.backbones.panns import CONFIGS, load_cnn14

        self.bind_device()
        if self.variant not in CONFIGS:
            raise ValueError(f"panns variant must be one of {sorted(CONFIGS)}, got {self.variant!r}")
        path = require_file(self.checkpoint, "panns", "Cnn14_16k_mAP=0.438.pth or Cnn14_mAP=0.431.pth")
        self.config = CONFIGS[self.variant]
        self.sample_rate = self.config.sample_rate  # type: ignore[misc]
        self.model = load_cnn14(str(path), self.config, self.device)

    def embed_batch(self, clips: Sequence[Clip]) -> list[dict[str, np.ndarray]]:
        import torch

        out: list[dict[str, np.ndarray]] = [{} for _ in clips]
        with torch.inference_mode():
            for idx in same_length_batches(clips, self.batch_size):
                wave = torch.from_numpy(np.stack([clips[i].audio[0] for i in idx])).to(self.device)
                with self.precision():  # the log-mel front end stays float32 (Cnn14.forward)
                    result = self.model(wave)
                emb, logits = (result[k].float().cpu().numpy() for k in ("embedding", "logits"))
                for row, i in enumerate(idx):
                    out[i] = {EMBEDDING: emb[row], LOGITS: logits[row]}
        return out
