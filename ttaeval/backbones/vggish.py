"""VGGish (Hershey et al., 2017) as FAD uses it: 128-d embeddings of 0.96 s log-mel examples,
without the PCA/quantisation post-processing and without the final ReLU.

Input, as the published VGGish preprocessing defines it: 16 kHz mono; frames of 25 ms (400 samples)
every 10 ms, no padding; periodic Hann window; magnitude of a 512-point FFT; 64 mel bands between
125 and 7500 Hz (HTK mel scale, triangles computed in mel, DC bin zeroed); log(mel + 0.01); examples
of 96 frames with a hop of 96 (a clip shorter than 0.975 s has no example). Network: four VGG
stages (64, 128, 256x2, 512x2 channels, 3x3 conv + ReLU, 2x2 max pooling) and three fully connected
layers (4096, 4096, 128); the conv output is flattened channels-last, as the TensorFlow original.
Parameter names follow the torch port's released ``vggish-10086976.pth``.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from ttaeval.checkpoints import skipped_init

SAMPLE_RATE = 16_000
WINDOW, HOP, FFT = 400, 160, 512
MEL_BANDS, MEL_LOW, MEL_HIGH = 64, 125.0, 7500.0
EXAMPLE_FRAMES = 96


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    return 1127.0 * np.log1p(np.asarray(f, dtype=np.float64) / 700.0)


@functools.cache
def mel_matrix() -> np.ndarray:
    """``(FFT // 2 + 1, MEL_BANDS)`` weights, triangles in the mel domain, DC row zero."""
    bins_mel = _hz_to_mel(np.linspace(0.0, SAMPLE_RATE / 2, FFT // 2 + 1))
    edges = np.linspace(_hz_to_mel(MEL_LOW), _hz_to_mel(MEL_HIGH), MEL_BANDS + 2)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins_mel[:, None] - lower) / (center - lower)
    falling = (upper - bins_mel[:, None]) / (upper - center)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0
    return weights


def log_mel_examples(wave: np.ndarray) -> np.ndarray:
    """``(examples, 96, 64)`` float32 log-mel patches of a 16 kHz mono waveform."""
    x = np.asarray(wave, dtype=np.float64)
    frames = 1 + (len(x) - WINDOW) // HOP if len(x) >= WINDOW else 0
    count = 1 + (frames - EXAMPLE_FRAMES) // EXAMPLE_FRAMES if frames >= EXAMPLE_FRAMES else 0
    if count == 0:
        return np.zeros((0, EXAMPLE_FRAMES, MEL_BANDS), np.float32)
    idx = np.arange(WINDOW)[None, :] + HOP * np.arange(frames)[:, None]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WINDOW) / WINDOW)  # periodic Hann
    spectrum = np.abs(np.fft.rfft(x[idx] * window, FFT))
    log_mel = np.log(spectrum @ mel_matrix() + 0.01)
    return log_mel[: count * EXAMPLE_FRAMES].reshape(count, EXAMPLE_FRAMES, MEL_BANDS).astype(np.float32)


class VGGish(nn.Module):
    """``(examples, 1, 96, 64)`` log-mel patches -> ``(examples, 128)`` embeddings."""

    def __init__(self, final_relu: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 1
        for stage in ([64], [128], [256, 256], [512, 512]):
            for cout in stage:
                layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True)]
                cin = cout
            layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)
        head: list[nn.Module] = [
            nn.Linear(512 * 4 * 6, 4096),
            nn.ReLU(True),
            nn.Linear(4096, 4096),
            nn.ReLU(True),
        ]
        head.append(nn.Linear(4096, 128))
        if final_relu:
            head.append(nn.ReLU(True))
        self.embeddings = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # channels-last memory: oneDNN's CPU convolutions run ~1.4x faster (benchmarks/RESULTS.md),
        # same numbers to float rounding; the flatten below is channels last too, as in TF
        x = self.features(x.contiguous(memory_format=torch.channels_last))
        return self.embeddings(x.permute(0, 2, 3, 1).reshape(x.shape[0], -1))


def load_vggish(checkpoint: str, final_relu: bool = False, device: str = "cpu") -> VGGish:
    """The released torch VGGish weights (a state dict), strictly."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    with skipped_init():  # the checkpoint replaces every weight
        model = VGGish(final_relu)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"VGGish: {checkpoint} does not fit: {str(exc).splitlines()[0]}") from None
    return model.to(device, memory_format=torch.channels_last).eval()
