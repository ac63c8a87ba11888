"""PANNs Cnn14 (Kong et al., 2020): AudioSet tagging CNN, 2048-d embedding and 527 class logits.

Front end: torchlibrosa's conv STFT (Hann, centre, reflect padding) and log-mel filter bank
(power spectrogram, 10·log10 with amin 1e-10, no top-dB clipping), then batch norm over mel bins.
Six conv blocks (two 3x3 conv + BN + ReLU, 2x2 average pooling; the last block does not pool) of 64
to 2048 channels; mean over frequency, then max + mean over time; ``fc1`` + ReLU gives the embedding,
``fc_audioset`` the logits (sigmoid = the clip-wise posteriors). Parameter names follow the released
checkpoints (``Cnn14_16k_mAP=0.438.pth``, ``Cnn14_mAP=0.431.pth``: ``torch.load(...)["model"]``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ttaeval.checkpoints import skipped_init
from ttaeval.devices import no_autocast


@dataclass(frozen=True)
class Cnn14Config:
    """Front-end settings of a released Cnn14 checkpoint."""

    sample_rate: int
    window_size: int
    hop_size: int
    fmin: int
    fmax: int
    mel_bins: int = 64
    classes_num: int = 527


CONFIGS = {
    "16k": Cnn14Config(16_000, 512, 160, 50, 8_000),  # Cnn14_16k_mAP=0.438 (audioldm_eval)
    "32k": Cnn14Config(32_000, 1024, 320, 50, 14_000),  # Cnn14_mAP=0.431 (the paper's main model)
}


class ConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor, pool: tuple[int, int]) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.avg_pool2d(x, pool)


class Cnn14(nn.Module):
    """Waveforms ``(batch, samples)`` -> ``{"embedding": (batch, 2048), "logits": (batch, 527)}``."""

    def __init__(self, config: Cnn14Config) -> None:
        super().__init__()
        from torchlibrosa.stft import LogmelFilterBank, Spectrogram

        self.config = config
        n_fft = config.window_size
        self.spectrogram_extractor = Spectrogram(
            n_fft=n_fft, hop_length=config.hop_size, win_length=n_fft, window="hann", center=True,
            pad_mode="reflect", freeze_parameters=True,
        )  # fmt: skip
        self.logmel_extractor = LogmelFilterBank(
            sr=config.sample_rate, n_fft=n_fft, n_mels=config.mel_bins, fmin=config.fmin, fmax=config.fmax,
            ref=1.0, amin=1e-10, top_db=None, freeze_parameters=True,
        )  # fmt: skip
        self.bn0 = nn.BatchNorm2d(config.mel_bins)
        widths = [1, 64, 128, 256, 512, 1024, 2048]
        for i in range(6):
            self.add_module(f"conv_block{i + 1}", ConvBlock(widths[i], widths[i + 1]))
        self.fc1 = nn.Linear(2048, 2048)
        self.fc_audioset = nn.Linear(2048, config.classes_num)

    def forward(self, wave: torch.Tensor) -> dict[str, torch.Tensor]:
        with no_autocast(wave.device):  # the log-mel front end in float32, also under autocast
            x = self.logmel_extractor(self.spectrogram_extractor(wave.float()))  # (batch, 1, frames, mels)
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)
        for i in range(6):
            x = getattr(self, f"conv_block{i + 1}")(x, (2, 2) if i < 5 else (1, 1))
        x = x.mean(dim=3)
        x = x.amax(dim=2) + x.mean(dim=2)
        embedding = F.relu(self.fc1(x))
        return {"embedding": embedding, "logits": self.fc_audioset(embedding)}


def load_cnn14(checkpoint: str, config: Cnn14Config, device: str = "cpu") -> Cnn14:
    """A released Cnn14 checkpoint (``{"model": state_dict}`` or a bare state dict), strictly."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state = state.get("model", state)
    with skipped_init():  # the checkpoint replaces every weight
        model = Cnn14(config)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(
            f"PANNs Cnn14: {checkpoint} does not fit the {config} model: {str(exc).splitlines()[0]}"
        ) from None
    return model.to(device).eval()
