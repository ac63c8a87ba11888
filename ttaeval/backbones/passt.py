"""PaSST (Koutini et al., 2022) as stable-audio-metrics uses it for KL: 527 AudioSet logits.

The network is hear21passt's own ``PaSST`` (``models.passt.get_model``, e.g.
``passt_s_swa_p16_128_ap476``), imported without ``hear21passt/__init__`` (whose preprocessing
imports torchaudio). Its input is restated here from hear21passt's ``AugmentMelSTFT`` in eval
mode: 32 kHz; pre-emphasis ``x[n] - 0.97 x[n-1]``; STFT with a 1024-point FFT, 800-sample
symmetric Hann window, hop 320, centred (reflect padding); power; Kaldi mel banks (128 bins,
0-15000 Hz, mel = 1127 ln(1 + f/700), triangles in the mel domain, a zero column for the Nyquist
bin); ``(log(mel + 1e-5) + 4.5) / 5``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch

from ttaeval.checkpoints import skipped_init

PACKAGE = "_ttaeval_hear21passt_models"


def passt_models():
    """``hear21passt.models`` imported without the package's ``__init__`` (which needs torchaudio);
    its ``passt`` module is loaded."""
    if PACKAGE in sys.modules:
        return sys.modules[PACKAGE]
    from ttaeval.optional import install_hint

    spec = importlib.util.find_spec("hear21passt")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"passt needs hear21passt's model code: {install_hint('hear21passt')}")
    root = Path(spec.submodule_search_locations[0]) / "models"
    models = importlib.util.spec_from_file_location(
        PACKAGE, root / "__init__.py", submodule_search_locations=[str(root)]
    )
    module = importlib.util.module_from_spec(models)
    sys.modules[PACKAGE] = module
    models.loader.exec_module(module)
    importlib.import_module(f"{PACKAGE}.passt")
    return module


def kaldi_mel_banks(
    n_mels: int = 128, n_fft: int = 1024, sr: int = 32_000, low: float = 0.0, high: float = 15_000.0
):
    """``(n_mels, n_fft // 2 + 1)`` Kaldi mel filters (no VTLN warping), Nyquist column zero."""

    def mel(f):
        return 1127.0 * np.log1p(np.asarray(f, dtype=np.float64) / 700.0)

    delta = (mel(high) - mel(low)) / (n_mels + 1)
    b = np.arange(n_mels)[:, None]
    left, center, right = mel(low) + b * delta, mel(low) + (b + 1) * delta, mel(low) + (b + 2) * delta
    bins_mel = mel(sr / n_fft * np.arange(n_fft // 2))[None, :]
    up = (bins_mel - left) / (center - left)
    down = (right - bins_mel) / (right - center)
    banks = np.maximum(0.0, np.minimum(up, down))
    return np.pad(banks, ((0, 0), (0, 1))).astype(np.float32)


class PasstMel(torch.nn.Module):
    """hear21passt's ``AugmentMelSTFT`` in eval mode (no augmentation): waveforms -> (batch, 128, frames)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("window", torch.hann_window(800, periodic=False), persistent=False)
        self.register_buffer("banks", torch.from_numpy(kaldi_mel_banks()), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, 1:] - 0.97 * x[:, :-1]
        spec = torch.stft(
            x, 1024, hop_length=320, win_length=800, window=self.window, center=True, return_complex=True
        )
        power = spec.real**2 + spec.imag**2
        return (torch.log(self.banks @ power + 1e-5) + 4.5) / 5.0


def load_passt(checkpoint: str, arch: str = "passt_s_swa_p16_128_ap476", device: str = "cpu"):
    """hear21passt's network with a released checkpoint (a state dict), strictly, in eval mode."""
    models = passt_models()
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()), skipped_init():  # it prints while it is built
        net = models.passt.get_model(arch=arch, pretrained=False, fstride=10, tstride=10, input_tdim=998)
    models.passt.first_RUN = False  # its debug switch: the first forward pass prints 20 shapes
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"PaSST: {checkpoint} does not fit {arch}: {str(exc).splitlines()[0]}") from None
    return net.to(device).eval()


def sam_windows(
    x: np.ndarray, rate: int = 32_000, window_s: float = 10.0, overlap_s: float = 5.0
) -> list[np.ndarray]:
    """stable-audio-metrics' PaSST windows: 10 s every 5 s while ``start < max(step, n - step)``; a
    short last window is zero-padded to 10 s when longer than 15% of it, else kept as it is (its
    comment says discard, its code keeps it)."""
    size, step = int(window_s * rate), int((window_s - overlap_s) * rate)
    out = []
    for start in range(0, max(step, len(x) - step), step):
        w = x[start : start + size]
        if len(w) < size and len(w) > int(size * 0.15):
            w = np.pad(w, (0, size - len(w)))
        out.append(w)
    return out
