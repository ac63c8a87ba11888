"""Text encoders: prompts -> token features ``(B, L, dim)`` and a pooled feature ``(B, pooled_dim)``.

- ``T5TextEncoder``: a FLAN-T5 encoder from a local folder, as the released Resonate runs it
  (FLAN-T5-large, 1024 wide): tokens padded to 77, the encoder's outputs at all 77 positions, and
  pooled = their plain mean, padding positions included.
- ``ClapMiniTextEncoder``: the mini world's: clap-mini's text tower (its token states and its
  projected mean), frozen.

Both give ``max_tokens`` positions, so the network always sees the same length. The
network's unconditional input is whatever its encoder makes of the empty prompt (stored with the
weights); for clap-mini that is zeros (it has no token to attend to).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


class TextEncoder(ABC):
    """The interface the network and the trainers see."""

    dim: int
    pooled_dim: int
    max_tokens: int

    @abstractmethod
    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token features ``(B, max_tokens, dim)`` (zeros past the prompt) and pooled ``(B, pooled_dim)``."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """What ``text_encoder_from_dict`` needs to build it again (saved in checkpoints)."""


def _fit(feats: torch.Tensor, mask: torch.Tensor, length: int) -> torch.Tensor:
    feats = feats * mask[..., None]
    if feats.shape[1] >= length:
        return feats[:, :length]
    return torch.nn.functional.pad(feats, (0, 0, 0, length - feats.shape[1]))


@dataclass
class ClapMiniTextEncoder(TextEncoder):
    """clap-mini's text tower (the shipped weights unless ``checkpoint`` is given)."""

    checkpoint: str | None = None
    max_tokens: int = 32
    _model: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        from ttaeval.backbones.clap_mini import load_clap_mini

        self._model = load_clap_mini(self.checkpoint).requires_grad_(False)
        self.dim = self._model.cfg.width
        self.pooled_dim = self._model.cfg.embed_dim

    @torch.no_grad()
    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        tower = self._model.text
        ids, mask = self._model.tokenize(list(texts))
        feats = torch.zeros(len(texts), self.max_tokens, self.dim)
        pooled = torch.zeros(len(texts), self.pooled_dim)
        rows = mask.any(dim=1)  # the empty prompt has no token: zeros, not a NaN from empty attention
        if rows.any():
            i, m = ids[rows], mask[rows]
            h = tower.encoder(tower.tokens(i) + tower.pos[:, : i.shape[1]], src_key_padding_mask=~m)
            w = m[..., None].float()
            pooled[rows] = tower.out((h * w).sum(1) / w.sum(1))
            feats[rows] = _fit(h, m, self.max_tokens)
        return feats, pooled

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "clap-mini", "checkpoint": self.checkpoint, "max_tokens": self.max_tokens}


@dataclass
class T5TextEncoder(TextEncoder):
    """A (FLAN-)T5 encoder and its tokenizer from a local folder, run as the released Resonate does:
    the tokenizer pads every prompt to ``max_tokens`` (and cuts longer ones), the encoder sees the
    ids with their attention mask, the token features are its last hidden states at every position
    (no masking afterwards) and the pooled feature is their unmasked mean. A network trained on
    these features expects exactly them: a masked mean is another input."""

    path: str
    max_tokens: int = 77
    device: str = "cpu"
    _model: Any = field(default=None, init=False, repr=False)
    _tokenizer: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        from transformers import AutoTokenizer, T5EncoderModel

        if not Path(self.path).is_dir():
            raise FileNotFoundError(f"T5 text encoder: no such folder {self.path}")
        self._tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        self._model = T5EncoderModel.from_pretrained(self.path, local_files_only=True).to(self.device).eval()
        self.dim = self.pooled_dim = self._model.config.d_model

    @torch.no_grad()
    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self._tokenizer(
            list(texts),
            padding="max_length",
            truncation=True,
            max_length=self.max_tokens,
            return_tensors="pt",
        ).to(self.device)
        h = self._model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        h = h.last_hidden_state.float().cpu()
        return h, h.mean(dim=1)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "t5", "path": self.path, "max_tokens": self.max_tokens}


def text_encoder_from_dict(spec: dict[str, Any]) -> TextEncoder:
    """Build the encoder a checkpoint names (``to_dict``'s output)."""
    spec = dict(spec)
    kind = spec.pop("kind")
    if kind == "clap-mini":
        return ClapMiniTextEncoder(**spec)
    if kind == "t5":
        return T5TextEncoder(**spec)
    raise ValueError(f"unknown text encoder {kind!r} (known: clap-mini, t5)")
