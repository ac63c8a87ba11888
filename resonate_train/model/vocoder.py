"""BigVGAN-v2 ``44khz_128band_512x``, the vocoder Resonate decodes its mels with, through NVIDIA's
published ``bigvgan`` package (an optional extra: ``pip install --no-deps bigvgan==2.4.1``).

The released files (``config.json`` and ``bigvgan_generator.pt``, the generator under the key
``generator``) are read without running pickled code; weight norm is removed after loading, as
Resonate does before inference, and the pure-torch anti-aliased activations are used (no CUDA
kernel build).
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import torch

from ttaeval.checkpoints import load_checkpoint, skipped_init

BIGVGAN_V2_44K_128BAND_512X = {
    "resblock": "1",
    "upsample_rates": [8, 4, 2, 2, 2, 2],
    "upsample_kernel_sizes": [16, 8, 4, 4, 4, 4],
    "upsample_initial_channel": 1536,
    "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    "use_tanh_at_final": False,
    "use_bias_at_final": False,
    "activation": "snakebeta",
    "snake_logscale": True,
    "num_mels": 128,
    "n_fft": 2048,
    "hop_size": 512,
    "win_size": 2048,
    "sampling_rate": 44100,
    "fmin": 0,
    "fmax": None,
}
"""The inference settings of NVIDIA's ``configs/bigvgan_v2_44khz_128band_512x.json``, used when a
checkpoint comes without its ``config.json``."""
GENERATOR_FILE = "bigvgan_generator.pt"


def load_bigvgan(path: str | Path, device: str = "cpu") -> torch.nn.Module:
    """The vocoder from a folder (``config.json`` + ``bigvgan_generator.pt``) or a generator file:
    ``(B, 128, frames)`` natural-log mels in, ``(B, 1, 512 * frames)`` audio in [-1, 1] out.

    Raises FileNotFoundError naming the missing file, ValueError naming mismatched keys, ImportError
    with the install command when the ``bigvgan`` package is absent.
    """
    try:
        import bigvgan
    except ImportError:
        raise ImportError(
            "the BigVGAN vocoder needs NVIDIA's bigvgan package: pip install --no-deps bigvgan==2.4.1"
        ) from None
    path = Path(path)
    file = path / GENERATOR_FILE if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"BigVGAN generator not found: {file} (the release's {GENERATOR_FILE})")
    config = dict(BIGVGAN_V2_44K_128BAND_512X)
    if (file.parent / "config.json").is_file():
        config.update(json.loads((file.parent / "config.json").read_text()))
    state = load_checkpoint(file)
    state = state.get("generator", state) if isinstance(state, dict) else state
    with skipped_init():  # the checkpoint replaces every weight (or is refused below)
        model = bigvgan.BigVGAN(bigvgan.env.AttrDict(config), use_cuda_kernel=False)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [k for k, v in state.items() if k in expected and expected[k].shape != v.shape]
    if missing or unexpected or shapes:
        raise ValueError(
            f"{file} does not fit BigVGAN ({config['num_mels']} mels, upsampling "
            f"{config['upsample_rates']}): "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}, mis-shaped {shapes[:5]}"
        )
    model.load_state_dict(state)
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints while removing weight norm
        model.remove_weight_norm()
    return model.to(device).eval()
