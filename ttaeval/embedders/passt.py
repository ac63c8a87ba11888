"""``embed:passt`` — PaSST's 527 AudioSet logits per clip, as stable-audio-metrics' KL uses them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ttaeval.embedders.base import EMBEDDING, LOGITS, EmbeddingScorer, require_file
from ttaeval.embedders.openl3 import peak_normalize
from ttaeval.io.audio import Clip


@dataclass
class PasstScorer(EmbeddingScorer):
    """Peak-normalised to -1 dBFS, 32 kHz, 10 s windows every 5 s (``backbones.passt.sam_windows``),
    logits collected over windows (``collect``: mean or max). Artefacts: ``logits`` (softmax them for
    posteriors: the ``kl`` set metric does) and the same vector as ``audio_embedding``."""

    backend = "passt"
    artefacts = (LOGITS, EMBEDDING)
    sample_rate = 32_000
    checkpoint: Path | None = None
    """The weights of ``arch`` (hear21passt's release)."""
    arch: str = "passt_s_swa_p16_128_ap476"
    """hear21passt architecture name."""
    collect: str = "mean"
    """How window logits become the clip's: ``mean`` or ``max``."""
    device: str = "cpu"
    """Torch device: cpu, cuda, cuda:N, or auto (the local GPU, else the CPU; resolved once when the
    model loads; under torchrun, cuda means cuda:LOCAL_RANK)."""
    dtype: str = "float32"
    """Precision of the forward passes: "bfloat16" (or "float16" on GPUs) runs them under autocast
    with float32 weights; outputs are float32. Part of the id when not float32."""

    def __post_init__(self) -> None:
        from ttaeval.backbones.passt import PasstMel, load_passt

        self.bind_device()
        path = require_file(self.checkpoint, "passt", f"the {self.arch} weights")
        if self.collect not in ("mean", "max"):
            raise ValueError(f"passt collect must be 'mean' or 'max', got {self.collect!r}")
        self.net = load_passt(str(path), self.arch, self.device)
        self.mel = PasstMel().to(self.device)

    def embed_batch(self, clips: Sequence[Clip]) -> list[dict[str, np.ndarray]]:
        import torch

        from ttaeval.backbones.passt import sam_windows

        out = []
        for c in clips:
            x = peak_normalize(c.audio[0]).astype(np.float32)
            logits = []
            with torch.inference_mode():
                for w in sam_windows(x):
                    spec = self.mel(torch.from_numpy(w)[None].to(self.device))  # float32
                    with self.precision():
                        y = self.net(spec[:, None])[0][0]
                    logits.append(y.float().cpu().numpy())
            stack = np.stack(logits)
            row = stack.mean(0) if self.collect == "mean" else stack.max(0)
            out.append({LOGITS: row, EMBEDDING: row})
        return out
