"""Folder FAD end to end (decode, resample, embed, Frechet distance): ``ttaeval fad`` vs
frechet-audio-distance's own ``FrechetAudioDistance.score`` — VGGish, same random weights, same files.

The anchor is the package's code (frechet_audio_distance 0.3.4, installed by ``make test``): its
thread pool reading each file with soundfile and resampling it with resampy (``kaiser_best``), one
VGGish call per clip (autograd on, as the hub model runs), NumPy statistics and ``scipy.linalg.sqrtm``.
Two things had to be supplied because nothing outside this machine is reachable: the VGGish that
``torch.hub.load("harritaylor/torchvggish", "vggish")`` would fetch is built from torchvggish 0.2's
``VGG`` with the hub model's preprocessing (``waveform_to_examples`` inside ``forward(x, fs)``), and
the ``encodec`` module the package imports at the top (used only by its EnCodec model) is a stub.

Ours: ``ttaeval.folder_fad.folder_fad`` (what ``ttaeval fad --embedder embed:vggish,checkpoint=...``
runs): both folders scored by the ``embed:vggish`` scorer into a temporary run store (files decoded
and soxr-resampled in threads, VGGish examples of many clips per forward pass under
``inference_mode``, frames stored as artefacts), then the ``fad`` set metric read from the store
(float64 statistics, the Cholesky/eigh Frechet distance).

Run: ``python benchmarks/bench_fad_folder.py [N]`` (``make bench``).
"""

from __future__ import annotations

import sys
import tempfile
import types
from pathlib import Path
from unittest import mock

import numpy as np
import soundfile as sf
import torch

import common
from ttaeval.embedders import get_embedder
from ttaeval.folder_fad import folder_fad
from ttaeval.io.audio import load_audio
from ttaeval.metrics.frechet import GaussianStats

RATE = 44_100
SECONDS = 5


def hub_vggish_class(tv):
    """harritaylor/torchvggish's hub ``VGGish``: preprocessing in ``forward(x, fs)``, no PCA."""

    class VGGish(tv.torchvggish.VGG):
        def __init__(self) -> None:
            super().__init__(tv.torchvggish.make_layers(), postprocess=False)
            self.device = torch.device("cpu")

        def forward(self, x, fs=None):
            x = tv.vggish_input.waveform_to_examples(x, fs).to(self.device)
            return super().forward(x)

    return VGGish


def anchor_fad(tv, state: dict):
    """frechet_audio_distance's FrechetAudioDistance (vggish, no PCA, no final ReLU) on these weights."""
    sys.modules.setdefault("encodec", types.SimpleNamespace(EncodecModel=None))
    import frechet_audio_distance

    def hub_load(*args, **kwargs):
        model = hub_vggish_class(tv)()
        model.load_state_dict(state)
        return model

    with mock.patch.object(torch.hub, "load", hub_load):
        return frechet_audio_distance.FrechetAudioDistance(
            model_name="vggish", sample_rate=16_000, use_pca=False, use_activation=False, verbose=False
        )


def write_folder(path: Path, n: int, seed: int) -> None:
    """n clips of noise-bed plus tones, different per folder."""
    path.mkdir()
    rng = np.random.default_rng(seed)
    t = np.arange(RATE * SECONDS) / RATE
    for i in range(n):
        f = rng.uniform(100, 2000, 3)
        x = 0.05 * rng.standard_normal(t.size) + 0.2 * np.sin(2 * np.pi * f[:, None] * t).sum(0) / 3
        sf.write(path / f"clip_{i:04d}.wav", x.astype(np.float32), RATE, subtype="PCM_16")


def main(n: int = 32) -> None:
    tv = common.reference_package("torchvggish")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        torch.manual_seed(0)
        state = hub_vggish_class(tv)().state_dict()
        torch.save(state, root / "vggish.pth")
        gen, ref = root / "gen", root / "ref"
        write_folder(gen, n, 1)
        write_folder(ref, n, 2)
        theirs = anchor_fad(tv, state)
        embedder = get_embedder("vggish", checkpoint=str(root / "vggish.pth"))
        decoded = [
            [load_audio(p, sample_rate=16_000, channels=1) for p in sorted(f.glob("*.wav"))]
            for f in (gen, ref)
        ]

        def bare() -> float:  # the model and the distance alone, on audio decoded and resampled beforehand
            a, b = (GaussianStats.from_embeddings(embedder.fad_samples(c)) for c in decoded)
            return a.frechet_distance(b)

        (v_ours, t_ours), (v_theirs, t_theirs), (_, t_bare) = common.timed(
            lambda: folder_fad(gen, ref, embedder).fad, lambda: theirs.score(str(ref), str(gen)), bare
        )
    speed = t_theirs.median / t_ours.median
    rel = abs(v_ours - v_theirs) / abs(v_theirs)
    note = f"{speed:.2f}x faster; FAD {v_ours:.4g} vs {v_theirs:.4g} (rel. {rel:.1e}: soxr vs resampy)"
    if speed < 3:
        note += (
            f"; misses by {3 / speed:.2f}x: VGGish's forward alone takes {t_bare.median:.3g} s, so ours can "
            f"be at most {t_theirs.median / t_bare.median:.2f}x faster (convolutions ~70% of our time)"
        )
    row = common.Row(
        f"Folder FAD, 2 x {n} clips of {SECONDS} s at 44.1 kHz (VGGish)", t_ours, t_theirs,
        "frechet-audio-distance 0.3.4 FrechetAudioDistance.score", t_ours.median / t_theirs.median,
        "≤ 0.333 (≥ 3x)", speed >= 3, note,
    )  # fmt: skip
    details = f"""Two folders of {n} wav files each ({SECONDS} s, 44.1 kHz, 16-bit), a random VGGish (the
released architecture) saved once and loaded by both sides. {common.REPEATS} repeats after a warm-up, both
sides in turn. The FAD values differ only through resampling (soxr HQ vs resampy kaiser_best) and
float32 vs float64 statistics: {v_ours:.5g} vs {v_theirs:.5g} (random weights give small embeddings,
hence small distances). Both sides use this machine's torch threads (all cores). The model alone (VGGish
and the distance on clips decoded and resampled beforehand, batched as ours): {t_bare}."""
    common.save("fad_folder", "Folder FAD: ttaeval fad vs frechet-audio-distance", [row], details)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 32)
