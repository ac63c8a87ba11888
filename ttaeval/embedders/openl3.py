"""``embed:openl3`` — OpenL3 frame embeddings as stable-audio-metrics computes its FD."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ttaeval.checkpoints import skipped_init
from ttaeval.embedders.base import EMBEDDING, FRAMES, EmbeddingScorer, per_frame_artefacts, require_file
from ttaeval.io.audio import Clip


def peak_normalize(audio: np.ndarray, dbfs: float = -1.0) -> np.ndarray:
    """pyloudnorm's peak normalisation (stable-audio-metrics' first step), float64; silence is
    returned as it is instead of divided by zero."""
    import pyloudnorm

    audio = np.asarray(audio, dtype=np.float64)
    return pyloudnorm.normalize.peak(audio, dbfs) if np.any(audio) else audio


@dataclass
class OpenL3Scorer(EmbeddingScorer):
    """Each clip is peak-normalised to -1 dBFS, taken at ``bandwidth`` Hz (the evaluation bandwidth:
    the framework resamples to it with soxr) and resampled to OpenL3's 48 kHz (soxr); 1 s frames
    every ``hop`` seconds, centred (half a frame of zeros before the start, the end zero-padded to a
    whole frame), as openl3's ``get_audio_embedding``. ``channels=2`` embeds left and right
    separately and concatenates them (1024-d; a mono clip, or equal channels, is embedded once and
    its embedding duplicated), ``channels=1`` is mono (512-d). The network is torchopenl3's
    ``PytorchOpenl3`` port (mel256 / env or music / 512); the TensorFlow original is not reachable
    here.
    """

    backend = "openl3"
    per_frame = True
    artefacts = (EMBEDDING, FRAMES)
    checkpoint: Path | None = None
    """torchopenl3_mel256_{content}_512.pth.tar."""
    content: str = "env"
    """``env`` (AudioCaps, stable-audio-metrics' choice) or ``music``."""
    input: str = "mel256"
    """The network's input representation (torchopenl3 ships mel256 weights only here)."""
    hop: float = 0.5
    """Seconds between frames."""
    channels: int = 1
    """1: mono, 512-d; 2: left and right embedded separately, 1024-d (stable-audio-metrics' stereo)."""
    bandwidth: int = 44_100
    """The rate clips are taken at before the 48 kHz resampling."""
    batch_size: int = 32
    """Frames per forward pass."""
    device: str = "cpu"
    """Torch device: cpu, cuda, cuda:N, or auto (the local GPU, else the CPU; resolved once when the
    model loads; under torchrun, cuda means cuda:LOCAL_RANK)."""
    dtype: str = "float32"
    """Precision of the forward passes: "bfloat16" (or "float16" on GPUs) runs them under autocast
    with float32 weights; outputs are float32. Part of the id when not float32."""

    def __post_init__(self) -> None:
        from ttaeval.optional import import_reference

        self.bind_device()
        models = import_reference("torchopenl3.models", "embed:openl3")
        path = require_file(self.checkpoint, "openl3", f"torchopenl3_mel256_{self.content}_512.pth.tar")
        if self.channels not in (1, 2):
            raise ValueError(f"openl3 channels must be 1 or 2, got {self.channels}")
        if self.content not in ("env", "music") or self.input != "mel256":
            raise ValueError(
                f"openl3: content must be env or music and input mel256, got {self.content}, {self.input}"
            )
        if self.hop <= 0:
            raise ValueError(f"openl3 hop must be positive, got {self.hop}")
        import torch

        with skipped_init():  # the checkpoint replaces every weight
            net = models.PytorchOpenl3(input_repr=self.input, embedding_size=512, content_type=self.content)
        state = torch.load(path, map_location="cpu", weights_only=True)
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:
            raise ValueError(f"openl3: {path} does not fit: {str(exc).splitlines()[0]}") from None
        self.net = net.to(self.device).eval()
        self.sample_rate = self.bandwidth  # type: ignore[misc]

    def frames(self, wave: np.ndarray) -> np.ndarray:
        """``(frames, 48000)`` 1 s frames of a 48 kHz waveform, centred, every ``hop`` seconds."""
        frame, hop = 48_000, int(self.hop * 48_000)
        x = np.concatenate([np.zeros(frame // 2, np.float32), wave.astype(np.float32)])
        count = 1 if len(x) <= frame else 1 + -(-(len(x) - frame) // hop)
        x = np.pad(x, (0, max(0, frame + (count - 1) * hop - len(x))))
        return np.stack([x[i * hop : i * hop + frame] for i in range(count)])

    def embed_batch(self, clips: Sequence[Clip]) -> list[dict[str, np.ndarray]]:
        import soxr
        import torch

        out = []
        for c in clips:
            audio = peak_normalize(c.audio)
            per_channel = []
            for i, ch in enumerate(audio):
                if i and np.array_equal(ch, audio[i - 1]):  # mono made stereo: the same frames again
                    per_channel.append(per_channel[-1])
                    continue
                wave = soxr.resample(ch, self.sample_rate, 48_000, quality="HQ").astype(np.float32)
                frames = torch.from_numpy(self.frames(wave))[:, None]
                with torch.inference_mode(), self.precision():
                    emb = [
                        self.net(frames[s : s + self.batch_size].to(self.device)).float().cpu().numpy()
                        for s in range(0, len(frames), self.batch_size)
                    ]
                per_channel.append(np.concatenate(emb))
            out.append(per_frame_artefacts(np.concatenate(per_channel, axis=1)))
        return out
