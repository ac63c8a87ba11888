"""The 44.1 kHz 1-D mel VAE that Resonate decodes with (MMAudio's autoencoder, "44k" mode), and its
mel converter — written from their documented behaviour, laid out so the released ``v1-44.pth``
loads key for key.

The VAE works on natural-log mels (128 bands, hop 512 at 44.1 kHz), standardised per band with
``data_mean``/``data_std``; 40 latent channels at half the mel frame rate (~43 latents a second).
It is an EDM2-style "magnitude preserving" network: convolutions without biases whose weights are
normalised per output row (``MPConv1d.fuse``, what the release's ``remove_weight_norm`` does, and
what its forward requires), SiLU divided by 0.596, residual sums ``lerp(a, b, 0.3)`` rescaled to
unit variance, pixel norm over channels at the start of each residual block, activations clamped to
+-256 after every block. Encoder: 512 -> 1024 -> 2048 channels with one 2x downsampling, two
residual blocks a level, a middle (block, single-head attention, block) and 80 output channels
(mean and log-variance). The decoder mirrors it with three blocks a level and a nearest-exact 2x
upsampling.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SAMPLE_RATE = 44_100
HOP = 512
LATENTS_PER_SECOND = SAMPLE_RATE / HOP / 2
"""One latent is two mel frames, 1024 samples."""


def latent_length(seconds: float) -> int:
    """Latents for ``seconds`` of audio: ``ceil(seconds * 44100 / 512 / 2)`` as the release (10 s: 431)."""
    return math.ceil(seconds * SAMPLE_RATE / HOP / 2)


def pixel_norm(x: torch.Tensor, dim: int | tuple[int, ...], eps: float = 1e-4) -> torch.Tensor:
    """``x / (eps + |x| / sqrt(n))`` with the norm over ``dim`` (n elements): unit RMS along it."""
    norm = torch.linalg.vector_norm(x, dim=dim, keepdim=True, dtype=torch.float32)
    n = x.numel() // norm.numel()
    return x / (eps + norm / math.sqrt(n)).to(x.dtype)


def mp_silu(x: torch.Tensor) -> torch.Tensor:
    return F.silu(x) / 0.596


def mp_sum(a: torch.Tensor, b: torch.Tensor, t: float = 0.3) -> torch.Tensor:
    return a.lerp(b, t) / math.sqrt((1 - t) ** 2 + t**2)


class MPConv1d(nn.Module):
    """A bias-free Conv1d whose stored weight is raw until ``fuse`` normalises each output row to unit
    norm and divides it by sqrt(fan-in) (in place, float32); the forward refuses a raw weight."""

    def __init__(self, dim_in: int, dim_out: int, kernel_size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim_out, dim_in, kernel_size))
        self.fused = False

    @torch.no_grad()
    def fuse(self) -> None:
        w = pixel_norm(self.weight.float(), dim=(1, 2))
        self.weight.copy_((w / math.sqrt(w[0].numel())).to(self.weight.dtype))
        self.fused = True

    def forward(self, x: torch.Tensor, gain: torch.Tensor | float = 1.0) -> torch.Tensor:
        if not self.fused:
            raise RuntimeError("MPConv1d weights are raw: call fuse() (MelVAE.fuse) after loading them")
        w = self.weight * gain
        return F.conv1d(x, w, padding=w.shape[-1] // 2)


class ResBlock(nn.Module):
    """Pixel norm, then (mp_silu, conv) twice; the normalised input (through a 1x1 conv when the
    width changes) joins by ``mp_sum``."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.conv1 = MPConv1d(dim_in, dim_out, 3)
        self.conv2 = MPConv1d(dim_out, dim_out, 3)
        self.nin_shortcut = MPConv1d(dim_in, dim_out, 1) if dim_in != dim_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pixel_norm(x, dim=1)
        h = self.conv2(mp_silu(self.conv1(mp_silu(x))))
        return mp_sum(self.nin_shortcut(x) if self.nin_shortcut is not None else x, h)


class Attention(nn.Module):
    """Single-head self-attention over time: q, k, v are the qkv conv's channels 0::3, 1::3, 2::3,
    each pixel-normalised over channels; scale 1/sqrt(C); joined by ``mp_sum``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.qkv = MPConv1d(dim, 3 * dim, 1)
        self.proj_out = MPConv1d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, length = x.shape
        qkv = pixel_norm(self.qkv(x).reshape(b, c, 3, length), dim=1)
        q, k, v = (qkv[:, :, i].transpose(1, 2)[:, None] for i in range(3))  # (B, 1, L, C)
        h = F.scaled_dot_product_attention(q, k, v)[:, 0].transpose(1, 2)
        return mp_sum(x, self.proj_out(h))


class Downsample(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv1 = MPConv1d(dim, dim, 1)
        self.conv2 = MPConv1d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.avg_pool1d(self.conv1(x), kernel_size=2, stride=2))


class Upsample(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = MPConv1d(dim, dim, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest-exact"))


class Middle(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.block_1, self.attn_1, self.block_2 = ResBlock(dim, dim), Attention(dim), ResBlock(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Level(nn.Module):
    """Residual blocks of one resolution (``attn`` stays empty in the released configuration)."""

    def __init__(self, dims: list[int], resample: nn.Module | None, name: str) -> None:
        super().__init__()
        self.block = nn.ModuleList(ResBlock(a, b) for a, b in itertools.pairwise(dims))
        self.attn = nn.ModuleList()
        if resample is not None:
            self.add_module(name, resample)


class Encoder(nn.Module):
    def __init__(
        self, dim_in: int, width: int, mults: tuple[int, ...], blocks: int, latent: int, clip: float
    ):
        super().__init__()
        self.clip = clip
        self.conv_in = MPConv1d(dim_in, width, 3)
        self.down = nn.ModuleList()
        prev = width
        for i, m in enumerate(mults):
            dims = [prev] + [width * m] * blocks
            self.down.append(Level(dims, Downsample(dims[-1]) if i == 0 else None, "downsample"))
            prev = dims[-1]
        self.mid = Middle(prev)
        self.conv_out = MPConv1d(prev, 2 * latent, 3)
        self.learnable_gain = nn.Parameter(torch.zeros([]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            for block in level.block:
                h = block(h).clamp(-self.clip, self.clip)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid(h).clamp(-self.clip, self.clip)
        return self.conv_out(mp_silu(h), gain=self.learnable_gain + 1)


class Decoder(nn.Module):
    def __init__(
        self, dim_out: int, width: int, mults: tuple[int, ...], blocks: int, latent: int, clip: float
    ):
        super().__init__()
        self.clip = clip
        prev = width * mults[-1]
        self.conv_in = MPConv1d(latent, prev, 3)
        self.mid = Middle(prev)
        levels = []
        for i in reversed(range(len(mults))):
            dims = [prev] + [width * mults[i]] * (blocks + 1)
            levels.append(Level(dims, Upsample(dims[-1]) if i == 1 else None, "upsample"))
            prev = dims[-1]
        self.up = nn.ModuleList(reversed(levels))  # indexed by resolution level, run from the deepest
        self.conv_out = MPConv1d(prev, dim_out, 3)
        self.learnable_gain = nn.Parameter(torch.zeros([]))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z)).clamp(-self.clip, self.clip)
        for level in reversed(self.up):
            for block in level.block:
                h = block(h).clamp(-self.clip, self.clip)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(mp_silu(h), gain=self.learnable_gain + 1)


class MelVAE(nn.Module):
    """``encode``: log-mel ``(B, 128, T)`` -> posterior mean and std ``(B, 40, T // 2)``;
    ``decode``: latents ``(B, 40, L)`` -> log-mel ``(B, 128, 2 L)``. Call ``fuse`` once after
    loading weights (``load_mel_vae`` does)."""

    def __init__(
        self,
        mels: int = 128,
        latent: int = 40,
        width: int = 512,
        mults: tuple[int, ...] = (1, 2, 4),
        clip: float = 256.0,
    ) -> None:
        super().__init__()
        self.register_buffer("data_mean", torch.zeros(1, mels, 1))
        self.register_buffer("data_std", torch.ones(1, mels, 1))
        self.encoder = Encoder(mels, width, mults, 2, latent, clip)
        self.decoder = Decoder(mels, width, mults, 2, latent, clip)

    def fuse(self) -> MelVAE:
        for m in self.modules():
            if isinstance(m, MPConv1d) and not m.fused:
                m.fuse()
        return self

    def encode(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        moments = self.encoder((mel - self.data_mean) / self.data_std)
        mean, logvar = moments.chunk(2, dim=1)
        return mean, torch.exp(0.5 * logvar.clamp(-30.0, 20.0))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z) * self.data_std + self.data_mean


class MelConverter(nn.Module):
    """Waveform ``(B, N)`` at 44.1 kHz -> natural-log mel ``(B, 128, N // 512)``: clamped to [-1, 1],
    reflect-padded by (n_fft - hop) / 2, STFT (periodic Hann 2048, hop 512, not centred), magnitude
    sqrt(re^2 + im^2 + 1e-9), a Slaney mel filterbank 0-22050 Hz, ln(max(mel, 1e-5))."""

    def __init__(
        self, sample_rate: int = SAMPLE_RATE, n_fft: int = 2048, hop: int = HOP, mels: int = 128
    ) -> None:
        super().__init__()
        from transformers.audio_utils import mel_filter_bank

        basis = mel_filter_bank(
            num_frequency_bins=n_fft // 2 + 1, num_mel_filters=mels, min_frequency=0.0,
            max_frequency=sample_rate / 2, sampling_rate=sample_rate, norm="slaney", mel_scale="slaney",
        )  # fmt: skip
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer(
            "mel_basis", torch.from_numpy(np.asarray(basis, np.float32).T.copy()), persistent=False
        )
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        pad = (self.n_fft - self.hop) // 2
        x = F.pad(wave.clamp(-1.0, 1.0)[:, None], (pad, pad), mode="reflect")[:, 0]
        spec = torch.stft(x, self.n_fft, self.hop, window=self.window, center=False, return_complex=True)
        magnitude = torch.sqrt(spec.real**2 + spec.imag**2 + 1e-9)
        return torch.log(torch.clamp(self.mel_basis @ magnitude, min=1e-5))
