"""clap-mini: a small contrastive audio-text model of the synthetic world.

Audio: 16 kHz mono, 4 s windows -> log-mel (64 bands, 32 ms hop) -> three strided conv blocks -> a
transformer over time -> mean pool -> projection. Text: a BPE tokenizer built from the world's
captions (lower-cased, NFKC) -> a transformer -> masked mean pool -> projection. The score is the
raw cosine of the L2-normalised embeddings. Longer audio is cut into consecutive 4 s windows (the
last zero-padded) whose embeddings are averaged; shorter audio is zero-padded — never a random crop.

Weights ship as safetensors with a JSON config and the tokenizer beside them; the recipe that
writes them is ``python -m ttaeval.synth.train_clap``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer
from torch import nn
from transformers.audio_utils import mel_filter_bank

from ttaeval.devices import autocast

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "synth" / "weights"
"""The shipped mini models' weights: data of the synthetic world, written by its recipes."""
DEFAULT_CHECKPOINT = WEIGHTS_DIR / "clap_mini.safetensors"
HELDOUT_CHECKPOINT = WEIGHTS_DIR / "clap_mini_heldout.safetensors"
"""A second clap-mini (another seed and architecture) for judging models trained on clap-mini rewards."""


@dataclass(frozen=True)
class ClapMiniConfig:
    """Every size and front-end setting of clap-mini (saved beside the weights)."""

    sample_rate: int = 16_000
    window_seconds: float = 4.0
    n_fft: int = 1024
    hop_length: int = 512
    n_mels: int = 64
    channels: tuple[int, int, int] = (16, 32, 64)
    width: int = 128
    audio_layers: int = 2
    text_layers: int = 2
    heads: int = 4
    embed_dim: int = 128
    max_tokens: int = 64
    vocab_size: int = 1000

    @property
    def window_samples(self) -> int:
        return int(self.window_seconds * self.sample_rate)

    @property
    def frames(self) -> int:
        return self.window_samples // self.hop_length + 1


class LogMel(nn.Module):
    """Hann-window STFT power -> HTK-style mel (transformers' filter bank) -> log."""

    def __init__(self, cfg: ClapMiniConfig) -> None:
        super().__init__()
        self.n_fft, self.hop = cfg.n_fft, cfg.hop_length
        fb = mel_filter_bank(
            num_frequency_bins=cfg.n_fft // 2 + 1,
            num_mel_filters=cfg.n_mels,
            min_frequency=20.0,
            max_frequency=cfg.sample_rate / 2,
            sampling_rate=cfg.sample_rate,
            norm="slaney",
            mel_scale="slaney",
        )
        self.register_buffer("filters", torch.tensor(fb, dtype=torch.float32), persistent=False)
        self.register_buffer("window", torch.hann_window(cfg.n_fft), persistent=False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, samples) -> (B, n_mels, frames)."""
        spec = torch.stft(audio, self.n_fft, self.hop, window=self.window, return_complex=True, center=True)
        mel = torch.einsum("bft,fm->bmt", spec.abs().square(), self.filters)
        return torch.log(mel + 1e-6)


def _encoder(width: int, layers: int, heads: int) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(
        width, heads, dim_feedforward=2 * width, dropout=0.0, batch_first=True, norm_first=True
    )
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


class AudioEncoder(nn.Module):
    STRIDES = ((2, 2), (2, 2), (2, 1))  # (mel, time) per conv block

    def __init__(self, cfg: ClapMiniConfig) -> None:
        super().__init__()
        blocks, ch_in, bands, steps = [], 1, cfg.n_mels, cfg.frames
        for ch, stride in zip(cfg.channels, self.STRIDES):
            blocks += [nn.Conv2d(ch_in, ch, 3, stride=stride, padding=1), nn.BatchNorm2d(ch), nn.GELU()]
            ch_in, bands, steps = ch, (bands - 1) // stride[0] + 1, (steps - 1) // stride[1] + 1
        self.convs = nn.Sequential(*blocks)
        self.frame_proj = nn.Linear(ch_in * bands, cfg.width)
        self.pos = nn.Parameter(torch.zeros(1, steps, cfg.width))
        self.encoder = _encoder(cfg.width, cfg.audio_layers, cfg.heads)
        self.out = nn.Linear(cfg.width, cfg.embed_dim)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, frames) normalised log-mel -> (B, embed_dim)."""
        h = self.convs(mel[:, None])  # (B, C, bands, steps)
        h = h.flatten(1, 2).transpose(1, 2)  # (B, steps, C*bands)
        h = self.frame_proj(h) + self.pos[:, : h.shape[1]]
        return self.out(self.encoder(h).mean(dim=1))


class TextEncoder(nn.Module):
    def __init__(self, cfg: ClapMiniConfig) -> None:
        super().__init__()
        self.tokens = nn.Embedding(cfg.vocab_size, cfg.width, padding_idx=0)
        self.pos = nn.Parameter(torch.zeros(1, cfg.max_tokens, cfg.width))
        self.encoder = _encoder(cfg.width, cfg.text_layers, cfg.heads)
        self.out = nn.Linear(cfg.width, cfg.embed_dim)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids and a (B, L) mask of real tokens -> (B, embed_dim)."""
        h = self.tokens(ids) + self.pos[:, : ids.shape[1]]
        h = self.encoder(h, src_key_padding_mask=~mask)
        m = mask[..., None].float()
        return self.out((h * m).sum(1) / m.sum(1).clamp(min=1))


class ClapMini(nn.Module):
    """The two towers, the log-mel front end, and a learnable temperature."""

    def __init__(self, cfg: ClapMiniConfig, tokenizer: Tokenizer) -> None:
        super().__init__()
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.logmel = LogMel(cfg)
        self.register_buffer("mel_mean", torch.zeros(1))
        self.register_buffer("mel_std", torch.ones(1))
        self.audio = AudioEncoder(cfg)
        self.text = TextEncoder(cfg)
        self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))

    # -- inputs ------------------------------------------------------------------------------------
    def features(self, windows: torch.Tensor) -> torch.Tensor:
        """(B, window_samples) audio -> normalised log-mel (B, n_mels, frames)."""
        return (self.logmel(windows) - self.mel_mean) / self.mel_std

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        encs = self.tokenizer.encode_batch(texts)
        length = min(self.cfg.max_tokens, max(len(e.ids) for e in encs))
        ids = torch.zeros(len(texts), length, dtype=torch.long)
        for i, e in enumerate(encs):
            row = e.ids[:length]
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        return ids, ids != 0

    # -- embeddings --------------------------------------------------------------------------------
    def embed_features(self, mel: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.audio(mel), dim=-1)

    def embed_text(self, texts: list[str], dtype: str = "float32") -> torch.Tensor:
        """L2-normalised float32 ``(n, embed_dim)`` text embeddings, on the model's device; the tower
        runs under autocast in ``dtype`` (``ttaeval.devices.autocast``), the normalisation in float32."""
        ids, mask = self.tokenize(texts)
        device = self.logit_scale.device
        with autocast(device, dtype):
            h = self.text(ids.to(device), mask.to(device))
        return nn.functional.normalize(h.float(), dim=-1)

    @torch.no_grad()
    def embed_audio(
        self, clips: list[np.ndarray], batch_size: int = 32, dtype: str = "float32"
    ) -> np.ndarray:
        """Mono float32 arrays at 16 kHz -> (n, embed_dim) L2-normalised float32 embeddings.

        Each clip is cut into consecutive windows (the last zero-padded); window embeddings are
        averaged and normalised again. Windows run on the model's device; the log-mel front end in
        float32, the audio tower under autocast in ``dtype``, pooling and normalisation in float32.
        """
        w = self.cfg.window_samples
        windows, owner = [], []
        for i, x in enumerate(clips):
            n = max(1, -(-len(x) // w))
            padded = np.zeros(n * w, dtype=np.float32)
            padded[: len(x)] = x
            windows.extend(padded.reshape(n, w))
            owner.extend([i] * n)
        embs = []
        device = self.logit_scale.device
        for start in range(0, len(windows), batch_size):
            batch = torch.from_numpy(np.stack(windows[start : start + batch_size])).to(device)
            mel = self.features(batch)
            with autocast(device, dtype):
                h = self.audio(mel)
            embs.append(nn.functional.normalize(h.float(), dim=-1).cpu())
        per_window = torch.cat(embs)
        owner_t = torch.tensor(owner)
        sums = torch.zeros(len(clips), per_window.shape[1]).index_add_(0, owner_t, per_window)
        return nn.functional.normalize(sums, dim=-1).numpy()


def save_clap_mini(model: ClapMini, path: str | Path) -> Path:
    """Write weights (safetensors), config (JSON) and tokenizer beside each other."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"config": json.dumps(asdict(model.cfg))})
    model.tokenizer.save(str(path.with_suffix(".tokenizer.json")))
    return path


def load_clap_mini(path: str | Path | None = None) -> ClapMini:
    """Load clap-mini from safetensors (the shipped weights by default), in eval mode."""
    path = Path(path) if path is not None else DEFAULT_CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(
            f"clap-mini weights not found at {path}: train them with `python -m ttaeval.synth.train_clap`"
        )
    tok_path = path.with_suffix(".tokenizer.json")
    if not tok_path.is_file():
        raise FileNotFoundError(f"clap-mini tokenizer not found beside the weights: {tok_path}")
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    if "config" not in meta:
        raise ValueError(f"{path}: no clap-mini config in the safetensors metadata")
    raw = json.loads(meta["config"])
    raw["channels"] = tuple(raw["channels"])
    model = ClapMini(ClapMiniConfig(**raw), Tokenizer.from_file(str(tok_path)))
    model.load_state_dict(load_file(str(path)))
    return model.eval()
