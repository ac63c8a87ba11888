"""``clap:laion`` — CLAP score with LAION-CLAP (the ``laion_clap`` package's own model and features).

Checkpoints: ``630k-audioset-fusion-best.pt`` (HTSAT-tiny, fusion; stable-audio-metrics' CLAP),
``630k-audioset-best.pt`` / ``630k-best.pt`` (HTSAT-tiny), ``music_speech_audioset_epoch_15_esc_89.98.pt``
(HTSAT-base). Loaded by ``laion_clap.CLAP_Module.load_ckpt`` from ``checkpoint=PATH`` or, when no
path is given, from where ``load_ckpt`` keeps its downloads (the package folder); it never downloads.
The path is checked before laion_clap is imported, and the import and build run with the Hugging
Face hub off (``hub_offline``): the package fetches three tokenizers at import time, which without
HF_HUB_OFFLINE on an air-gapped machine spends minutes in retries.

What the package does, and what we keep or change:

- Audio: 48 kHz mono, quantised to int16 and back (as ``get_audio_embedding_from_data`` does;
  ``quantize=false`` turns it off), repeat-padded to 10 s, log-mel and HTSAT by the package's own
  ``get_audio_features`` and ``get_audio_embedding``.
- Longer than 10 s: the package takes a random 10 s crop (fusion models: three random chunks plus a
  shrunk whole). We use ``ceil(length / 10 s)`` full windows evenly spaced from start to end, and
  average their normalised embeddings (``clap_common.window_starts``) — no draw at all.
  ``crop=random`` gives the package's own behaviour instead, with numpy's generator seeded with
  ``seed`` before each clip, so it is reproducible too.
- Text: the RoBERTa tokenizer (truncation at 77 tokens; padded to the batch's longest text rather
  than to 77, which masks the same positions) and text tower. The tower's weights
  come from the CLAP checkpoint; only its config and tokenizer are read from ``text_model`` (a local
  copy of ``roberta-base``, or that name found in the Hugging Face cache). laion_clap builds the
  tower with ``RobertaModel.from_pretrained('roberta-base')``, which needs the hub; we build it from
  that config instead, and check the tokenizer is real (transformers 5 offline returns an empty one).
- Fusion checkpoints take a 4-channel mel (``mel_fusion``) that laion_clap computes with
  torchaudio's ``MelSpectrogram`` (which cannot be installed next to a CPU torch here). For windows of
  at most 10 s the four channels are the same mel, and ``laion_mel`` computes it the documented way:
  periodic Hann STFT (center, reflect padding), power 2, HTK mel filters without normalisation
  (librosa), 10·log10(max(x, 1e-10)). ``crop=random`` with a fusion checkpoint runs the package's
  own code and therefore needs torchaudio.
- ``text_branch.embeddings.position_ids`` is dropped from the checkpoint (``read_checkpoint``), as
  ``load_ckpt`` does with transformers >= 4.31, where it is no longer a saved buffer.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ttaeval.checkpoints import skipped_init
from ttaeval.optional import hub_offline, import_reference, install_hint, weights_file
from ttaeval.scorers.clap_common import (
    ClapScorer,
    local_text_model,
    pool_windows,
    split_windows,
    weights_digest,
)

WINDOW_SAMPLES = 480_000
"""LAION-CLAP's 10 s window at 48 kHz (``clip_samples`` of every HTSAT config)."""
DOWNLOAD_NAMES = {False: "630k-audioset-best.pt", True: "630k-audioset-fusion-best.pt"}
"""The file ``CLAP_Module.load_ckpt()`` looks for (and would download) when given no path."""


@contextlib.contextmanager
def _text_tower_from(config) -> Iterator[None]:
    """Make laion_clap's ``RobertaModel.from_pretrained('roberta-base')`` build the tower from a
    local config (random weights, replaced by the checkpoint's) instead of fetching it.

    laion_clap puts its own folder on ``sys.path`` and imports its model module twice, as
    ``clap_module.model`` and ``laion_clap.clap_module.model``: both are redirected.
    """
    from transformers import RobertaModel

    stand_in = type(
        "RobertaFromConfig", (), {"from_pretrained": staticmethod(lambda *a, **k: RobertaModel(config))}
    )
    modules = [
        sys.modules[n] for n in ("clap_module.model", "laion_clap.clap_module.model") if n in sys.modules
    ]
    originals = [m.RobertaModel for m in modules]
    for m in modules:
        m.RobertaModel = stand_in
    try:
        yield
    finally:
        for m, original in zip(modules, originals):
            m.RobertaModel = original


def laion_mel(x, audio_cfg: dict):
    """``(frames, mel_bins)`` log-mel of a 1-D tensor, as laion_clap's ``get_mel`` computes it."""
    import librosa
    import torch

    n_fft = audio_cfg["window_size"]
    spec = (
        torch.stft(
            x,
            n_fft,
            hop_length=audio_cfg["hop_size"],
            win_length=n_fft,
            window=torch.hann_window(n_fft),
            center=True,
            pad_mode="reflect",
            onesided=True,
            return_complex=True,
        ).abs()
        ** 2
    )
    filters = librosa.filters.mel(
        sr=audio_cfg["sample_rate"],
        n_fft=n_fft,
        n_mels=audio_cfg["mel_bins"],
        fmin=audio_cfg["fmin"],
        fmax=audio_cfg["fmax"],
        htk=True,
        norm=None,
    )
    mel = torch.from_numpy(filters).to(spec) @ spec
    return (10.0 * torch.log10(torch.clamp(mel, min=1e-10))).T


def read_checkpoint(path: Path) -> dict:
    """The state dict of a LAION-CLAP release, as laion_clap's ``load_state_dict`` reads it: the
    ``state_dict`` entry, ``module.`` prefixes stripped, ``text_branch.embeddings.position_ids``
    dropped (newer transformers no longer save it; laion_clap deletes it unconditionally, which
    fails on files saved without it, so we drop it only when present)."""
    from ttaeval.checkpoints import load_checkpoint

    checkpoint = load_checkpoint(path)  # laion_clap itself unpickles with weights_only=False
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else checkpoint
    state = {k.removeprefix("module."): v for k, v in state.items()}
    state.pop("text_branch.embeddings.position_ids", None)
    return state


def checkpoint_is_fusion(state_dict: dict) -> bool:
    """Fusion checkpoints carry the fusion layers of the audio branch."""
    return any(".fusion_model." in k or ".mel_conv2d." in k for k in state_dict)


@dataclass
class LaionClapScorer(ClapScorer):
    """CLAP score with a LAION-CLAP checkpoint."""

    backend = "laion"
    version = "1"
    sample_rate = 48_000

    checkpoint: Path | None = None
    """LAION-CLAP .pt file; None: the file laion_clap's ``load_ckpt()`` keeps in its package folder."""
    amodel: str = "HTSAT-tiny"
    """Audio tower config: HTSAT-tiny (630k checkpoints) or HTSAT-base (music_speech_audioset)."""
    fusion: bool | None = None
    """Fusion model; None: read from the checkpoint (it has the fusion layers or not)."""
    text_model: str = "roberta-base"
    """Folder (or Hugging Face cache name) with the RoBERTa config and tokenizer."""
    crop: str = "windows"
    """Clips over 10 s: "windows" (evenly spaced full windows, averaged) or "random" (laion_clap's own)."""
    seed: int = 0
    """Seed of numpy's generator before each clip when crop=random."""
    quantize: bool = True
    """Round-trip audio through int16 first, as ``get_audio_embedding_from_data`` does."""
    batch_size: int = 8
    """Windows per forward pass."""
    device: str = "cpu"
    """torch device: cpu, cuda, cuda:N, or auto (the local GPU, else the CPU; resolved once when the
    model loads; under torchrun, cuda means cuda:LOCAL_RANK)."""
    dtype: str = "float32"
    """Precision of the forward passes: "bfloat16" (or "float16" on GPUs) runs them under autocast
    with float32 weights; outputs are float32. Part of the id when not float32."""
    _module: object = field(init=False, repr=False, default=None)
    _tokenizer: object = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        if self.crop not in ("windows", "random"):
            raise ValueError(f"clap:laion crop must be 'windows' or 'random', got {self.crop!r}")
        self.bind_device()
        # paths first: importing laion_clap fetches tokenizers from the hub (minutes of retries offline)
        path = weights_file(self.checkpoint or self._cached_checkpoint(), "clap:laion", "set checkpoint=PATH")
        with hub_offline():
            self._load(path)

    def _load(self, path: Path) -> None:
        where = f"clap:laion text_model={self.text_model}"
        config, self._tokenizer, self._text_digest = local_text_model(self.text_model, where, "roberta-base")
        state = read_checkpoint(path)
        laion_clap = import_reference("laion_clap", "clap:laion")
        fusion = checkpoint_is_fusion(state) if self.fusion is None else self.fusion
        if fusion and self.crop == "random":
            from laion_clap.training import data as laion_data

            if laion_data.torchaudio is None:
                raise ImportError(
                    "clap:laion crop=random with a fusion checkpoint runs laion_clap's own get_mel, "
                    "which needs torchaudio; use crop=windows"
                )
        with _text_tower_from(config), skipped_init():  # the checkpoint replaces every weight
            module = laion_clap.CLAP_Module(enable_fusion=fusion, device=self.device, amodel=self.amodel)
        try:
            module.model.load_state_dict(state)
        except RuntimeError as exc:
            raise ValueError(
                f"clap:laion: {path} does not fit amodel={self.amodel}, fusion={fusion}, "
                f"text_model={self.text_model}: {str(exc).splitlines()[0]}"
            ) from None
        self._module = module.to(self.device).eval()
        self._digest = weights_digest(path)
        self._fusion = fusion
        self._audio_cfg = module.model_cfg["audio_cfg"]

    def _cached_checkpoint(self) -> Path:
        """Where ``load_ckpt()`` keeps its download: laion_clap's folder, found without importing it."""
        spec = importlib.util.find_spec("laion_clap")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError(f"clap:laion needs laion_clap: {install_hint('laion_clap')}")
        return Path(spec.submodule_search_locations[0]) / DOWNLOAD_NAMES[bool(self.fusion)]

    def identity_options(self) -> dict[str, object]:
        options = {"weights": self._digest, "amodel": self.amodel, "fusion": self._fusion}
        options.update(text=self._text_digest, crop=self.crop, quantize=self.quantize)
        if self.crop == "random":
            options["seed"] = self.seed
        return options

    def _features(self, x: np.ndarray) -> dict:
        """One clip (or window) -> laion_clap's input dict, exactly as the package prepares it."""
        import torch
        from laion_clap.training.data import float32_to_int16, get_audio_features, int16_to_float32

        if self.quantize:
            x = int16_to_float32(float32_to_int16(x))
        if self.crop == "random":
            np.random.seed(self.seed)
        wave = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        if self._fusion and self.crop == "windows":  # at most 10 s: laion_clap's stack of one mel
            sample = get_audio_features({}, wave, WINDOW_SAMPLES, "rand_trunc", "repeatpad", self._audio_cfg)
            mel = laion_mel(sample["waveform"], self._audio_cfg)
            return {**sample, "mel_fusion": torch.stack([mel] * 4)}
        truncating = "fusion" if self._fusion else "rand_trunc"
        return get_audio_features({}, wave, WINDOW_SAMPLES, truncating, "repeatpad", self._audio_cfg)

    def embed_audio(self, audio: Sequence[np.ndarray]) -> np.ndarray:
        import torch

        if self.crop == "random":
            pieces, owner = list(audio), list(range(len(audio)))
        else:
            pieces, owner = split_windows(audio, WINDOW_SAMPLES)
        embs = []
        with torch.inference_mode():
            for s in range(0, len(pieces), self.batch_size):
                batch = [self._features(x) for x in pieces[s : s + self.batch_size]]
                with self.precision():
                    emb = self._module.model.get_audio_embedding(batch)
                embs.append(emb.float().cpu().numpy())  # pool_windows normalises again, in float64
        return pool_windows(np.concatenate(embs), owner, len(audio))

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        import torch

        # laion_clap pads every text to 77 tokens; padding to the batch's longest text gives the
        # same embeddings (padded positions are masked; differences are float rounding, < 1e-6)
        # at a fraction of the cost.
        tokens = self._tokenizer(texts, padding=True, truncation=True, max_length=77, return_tensors="pt")
        with torch.inference_mode(), self.precision():
            emb = self._module.model.get_text_embedding(dict(tokens))
        if self.dtype != "float32":  # normalised in the autocast dtype: again in float32
            return torch.nn.functional.normalize(emb.float(), dim=-1).cpu().numpy()
        return emb.float().cpu().numpy()
