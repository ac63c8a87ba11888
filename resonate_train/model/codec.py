"""Audio codecs: waveform <-> the latent sequence ``(B, T, C)`` the network models.

``MelCodec`` is the mini world's codec: a log-mel spectrogram (no weights) with a deterministic
inverse (a pseudo-inverse of the mel filters, then Griffin-Lim from zero phase for a fixed number
of iterations: the same latent always decodes to the same audio). The network's latent statistics
(``latent_mean``/``latent_std``) live with the network's weights, not here; decode always takes
latents in the codec's own (un-normalised) space.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from transformers.audio_utils import mel_filter_bank


@dataclass(frozen=True)
class MelCodec:
    """Log-mel ``(B, frames, n_mels)`` of 16 kHz mono audio; frames = samples // hop + 1."""

    sample_rate: int = 16_000
    n_fft: int = 1024
    hop_length: int = 512
    n_mels: int = 32
    griffin_lim_iters: int = 32
    floor: float = 1e-5

    @property
    def latent_dim(self) -> int:
        return self.n_mels

    def frames(self, seconds: float) -> int:
        return round(seconds * self.sample_rate) // self.hop_length + 1

    def to_dict(self) -> dict:
        return {"kind": "mel", **asdict(self)}

    def _filters(self) -> torch.Tensor:
        fb = mel_filter_bank(
            num_frequency_bins=self.n_fft // 2 + 1,
            num_mel_filters=self.n_mels,
            min_frequency=0.0,
            max_frequency=self.sample_rate / 2,
            sampling_rate=self.sample_rate,
            norm="slaney",
            mel_scale="slaney",
        )
        return torch.tensor(fb, dtype=torch.float32)  # (freq, mels)

    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        """``(B, samples)`` float audio -> ``(B, frames, n_mels)`` log-mel magnitudes."""
        window = torch.hann_window(self.n_fft, device=audio.device)
        spec = torch.stft(audio.float(), self.n_fft, self.hop_length, window=window, return_complex=True)
        mel = torch.einsum("bft,fm->btm", spec.abs(), self._filters().to(audio.device))
        return torch.log(mel.clamp(min=self.floor))

    @torch.no_grad()
    def decode(self, latent: torch.Tensor, samples: int | None = None) -> torch.Tensor:
        """``(B, frames, n_mels)`` log-mel -> ``(B, samples)`` audio (deterministic Griffin-Lim)."""
        fb = self._filters().to(latent.device)
        magnitude = (torch.exp(latent.float()) @ torch.linalg.pinv(fb)).clamp(min=0).transpose(1, 2)
        window = torch.hann_window(self.n_fft, device=latent.device)
        length = samples or (latent.shape[1] - 1) * self.hop_length
        phase = torch.ones_like(magnitude, dtype=torch.complex64)
        for _ in range(self.griffin_lim_iters):
            audio = torch.istft(magnitude * phase, self.n_fft, self.hop_length, window=window, length=length)
            rebuilt = torch.stft(audio, self.n_fft, self.hop_length, window=window, return_complex=True)
            phase = rebuilt / rebuilt.abs().clamp(min=1e-8)
        audio = torch.istft(magnitude * phase, self.n_fft, self.hop_length, window=window, length=length)
        return audio.clamp(-1.0, 1.0)
