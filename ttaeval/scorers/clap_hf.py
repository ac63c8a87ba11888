"""``clap:hf`` — CLAP score with a transformers ``ClapModel`` + ``ClapProcessor`` from a local folder
(e.g. a downloaded ``laion/clap-htsat-unfused``).

Score = raw cosine of the L2-normalised projected embeddings. Audio is 48 kHz mono. Determinism:
a clip longer than the feature extractor's window (``max_length_s``, 10 s for LAION CLAP) is
covered by ``ceil(length / window)`` full windows, evenly spaced from its start to its end
(``clap_common.window_starts``), whose normalised embeddings are averaged and normalised again —
the processor never sees more than one window, so its random crop never draws. The processor's own
settings (truncation, padding) are used as saved.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ttaeval.scorers.clap_common import (
    ClapScorer,
    check_tokenizer,
    pool_windows,
    split_windows,
    weights_digest,
)


@dataclass
class HFClapScorer(ClapScorer):
    """CLAP score with a transformers ClapModel folder."""

    backend = "hf"
    version = "2"
    sample_rate = 48_000

    model: Path | None = None
    """Folder holding the ClapModel weights/config and the ClapProcessor (feature extractor + tokenizer)."""
    batch_size: int = 16
    """Windows per forward pass."""
    device: str = "cpu"
    """torch device: cpu, cuda, cuda:N, or auto (the local GPU, else the CPU; resolved once when the
    model loads; under torchrun, cuda means cuda:LOCAL_RANK)."""
    dtype: str = "float32"
    """Precision of the forward passes: "bfloat16" (or "float16" on GPUs) runs them under autocast
    with float32 weights; outputs are float32. Part of the id when not float32."""
    _model: object = field(init=False, repr=False, default=None)
    _processor: object = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        self.bind_device()
        if self.model is None:
            raise ValueError(
                "clap:hf needs model=PATH: a folder with a transformers ClapModel and its ClapProcessor"
            )
        path = Path(self.model)
        if not path.is_dir():
            raise FileNotFoundError(f"clap:hf model folder not found: {path}")
        from transformers import ClapModel, ClapProcessor

        from ttaeval.optional import quiet_loading

        self._processor = ClapProcessor.from_pretrained(str(path), local_files_only=True)
        check_tokenizer(self._processor.tokenizer, f"clap:hf {path}")
        with quiet_loading():
            self._model = ClapModel.from_pretrained(str(path), local_files_only=True).to(self.device).eval()
        self._digest = weights_digest(path)

    def identity_options(self) -> dict[str, object]:
        return {"weights": self._digest}

    @staticmethod
    def _features(out):
        """The projected embedding: transformers 5 wraps it in ``pooler_output``, 4 returns it."""
        return out if hasattr(out, "ndim") else out.pooler_output

    def embed_audio(self, audio: Sequence[np.ndarray]) -> np.ndarray:
        import torch

        pieces, owner = split_windows(audio, int(self._processor.feature_extractor.nb_max_samples))
        embs = []
        with torch.inference_mode():
            for s in range(0, len(pieces), self.batch_size):
                inputs = self._processor.feature_extractor(
                    pieces[s : s + self.batch_size], sampling_rate=self.sample_rate, return_tensors="pt"
                ).to(self.device)
                with self.precision():
                    emb = self._features(self._model.get_audio_features(**inputs))
                embs.append(torch.nn.functional.normalize(emb.float(), dim=-1).cpu().numpy())
        return pool_windows(np.concatenate(embs), owner, len(audio))

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        import torch

        tokens = self._processor.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        with torch.inference_mode(), self.precision():
            emb = self._features(self._model.get_text_features(**tokens.to(self.device)))
        return torch.nn.functional.normalize(emb.float(), dim=-1).cpu().numpy()
