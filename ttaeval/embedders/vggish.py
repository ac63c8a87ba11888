"""``embed:vggish`` — VGGish as FAD uses it: 128-d per 0.96 s example, no PCA, no final ReLU."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ttaeval.embedders.base import EMBEDDING, FRAMES, EmbeddingScorer, per_frame_artefacts, require_file
from ttaeval.io.audio import Clip


@dataclass
class VGGishScorer(EmbeddingScorer):
    """VGGish at 16 kHz: 25 ms frames every 10 ms, 64 mel bands, 96-frame examples without overlap;
    every example is a FAD sample (``frames``). A clip shorter than one example (0.96 s) fails."""

    backend = "vggish"
    sample_rate = 16_000
    per_frame = True
    artefacts = (EMBEDDING, FRAMES)
    checkpoint: Path | None = None
    """vggish-10086976.pth (the torch port of the released VGGish)."""
    final_relu: bool = False
    """Keep the last ReLU (FAD drops it, as frechet_audio_distance does)."""
    batch_size: int = 64
    """Examples per forward pass."""
    device: str = "cpu"
    """Torch device: cpu, cuda, cuda:N, or auto (the local GPU, else the CPU; resolved once when the
    model loads; under torchrun, cuda means cuda:LOCAL_RANK)."""
    dtype: str = "float32"
    """Precision of the forward passes: "bfloat16" (or "float16" on GPUs) runs them under autocast
    with float32 weights; outputs are float32. Part of the id when not float32."""

    def __post_init__(self) -> None:
        from ttaeval.backbones.vggish import load_vggish

        self.bind_device()
        path = require_file(self.checkpoint, "vggish", "vggish-10086976.pth")
        self.model = load_vggish(str(path), self.final_relu, self.device)

    def embed_batch(self, clips: Sequence[Clip]) -> list[dict[str, np.ndarray]]:
        import torch

        from ttaeval.backbones.vggish import log_mel_examples

        examples = [log_mel_examples(c.audio[0]) for c in clips]
        flat = np.concatenate(examples)
        out = []
        with torch.inference_mode():
            for s in range(0, len(flat), self.batch_size):
                x = torch.from_numpy(flat[s : s + self.batch_size, None]).to(self.device)
                with self.precision():
                    y = self.model(x)
                out.append(y.float().cpu().numpy())
        emb = np.concatenate(out) if out else np.zeros((0, 128), np.float32)
        frames = np.split(emb, np.cumsum([len(e) for e in examples])[:-1])
        return [per_frame_artefacts(f) for f in frames]
