"""``embed:encodec`` — EnCodec's encoder output before quantisation, one frame per hop."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ttaeval.embedders.base import EMBEDDING, FRAMES, EmbeddingScorer, per_frame_artefacts
from ttaeval.io.audio import Clip


@dataclass
class EncodecScorer(EmbeddingScorer):
    """What frechet_audio_distance's "encodec" FAD uses (its ``model.encoder(audio)``, no
    normalisation): 75 Hz, 128-d frames for ``facebook/encodec_24khz``. Loaded from a transformers
    ``EncodecModel`` folder; the 48 kHz model is stereo, and mono clips are duplicated to both
    channels (the framework converts them) as frechet_audio_distance does."""

    backend = "encodec"
    per_frame = True
    artefacts = (EMBEDDING, FRAMES)
    weight_options = ("model",)
    model: Path | None = None
    """Folder of a transformers EncodecModel (e.g. facebook/encodec_24khz)."""
    device: str = "cpu"
    """Torch device: cpu, cuda, cuda:N, or auto (the local GPU, else the CPU; resolved once when the
    model loads; under torchrun, cuda means cuda:LOCAL_RANK)."""
    dtype: str = "float32"
    """Precision of the forward passes: "bfloat16" (or "float16" on GPUs) runs them under autocast
    with float32 weights; outputs are float32. Part of the id when not float32."""

    def __post_init__(self) -> None:
        self.bind_device()
        if not self.model or not Path(self.model).is_dir():
            raise FileNotFoundError(
                f"encodec model folder not found: {self.model} (model=DIR with a transformers EncodecModel, "
                "e.g. facebook/encodec_24khz)"
            )
        from transformers import EncodecModel

        from ttaeval.optional import quiet_loading

        with quiet_loading():
            self.net = EncodecModel.from_pretrained(self.model, local_files_only=True).to(self.device).eval()
        self.sample_rate = self.net.config.sampling_rate  # type: ignore[misc]
        self.channels = self.net.config.audio_channels  # type: ignore[misc]

    def embed_batch(self, clips: Sequence[Clip]) -> list[dict[str, np.ndarray]]:
        import torch

        out = []
        with torch.inference_mode():
            for c in clips:  # one by one: no padding enters a clip's frames
                x = torch.from_numpy(c.audio)[None].to(self.device)
                with self.precision():
                    y = self.net.encoder(x)[0]
                out.append(per_frame_artefacts(y.T.float().cpu().numpy()))
        return out
