"""What every CLAP backend shares: the ``clap`` metric, the cosine score, text caching, weight digests.

A backend subclasses ``ClapScorer`` and provides ``embed_audio`` (mono arrays at its rate ->
L2-normalised ``(n, dim)``) and ``encode_texts`` (texts -> L2-normalised ``(n, dim)``).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ttaeval.checkpoints import weights_digest
from ttaeval.io.audio import Clip
from ttaeval.scorers.base import MetricSpec, Scorer, ScoreResult


def window_starts(num_samples: int, window: int) -> list[int]:
    """Where the fixed windows over a clip start: one window when the clip fits in it, else
    ``ceil(n / window)`` full windows whose starts are evenly spaced from 0 to ``n - window``
    (integer division) — consecutive windows that overlap just enough to end at the clip's end, so
    no window is padded and none is drawn at random."""
    if num_samples <= window:
        return [0]
    count = -(-num_samples // window)
    return [i * (num_samples - window) // (count - 1) for i in range(count)]


def split_windows(audio: Sequence[np.ndarray], window: int) -> tuple[list[np.ndarray], list[int]]:
    """Every clip's fixed windows (see ``window_starts``), and which clip each window belongs to."""
    pieces, owner = [], []
    for i, x in enumerate(audio):
        for start in window_starts(len(x), window):
            pieces.append(x[start : start + window])
            owner.append(i)
    return pieces, owner


def pool_windows(per_window: np.ndarray, owner: Sequence[int], count: int) -> np.ndarray:
    """Average each clip's L2-normalised window embeddings and normalise the mean again."""
    sums = np.zeros((count, per_window.shape[1]), dtype=np.float64)
    np.add.at(sums, np.asarray(owner), per_window.astype(np.float64))
    sums /= np.linalg.norm(sums, axis=1, keepdims=True)
    return sums.astype(np.float32)


def check_tokenizer(tokenizer, where: str) -> None:
    """Refuse a tokenizer that encodes words to nothing but special tokens.

    Under HF_HUB_OFFLINE=1, transformers 5 returns an *empty* tokenizer (only special tokens) for a
    name it cannot fetch instead of raising: a CLAP whose text side silently encodes nothing.
    """
    hint = "it is empty or wrong; point the backend at a folder with its tokenizer files"
    try:
        ids = tokenizer("a dog barks", add_special_tokens=False)["input_ids"]
    except Exception as exc:  # the Rust tokenizers raise a bare Exception for an empty vocabulary
        raise ValueError(f"{where}: the tokenizer cannot encode 'a dog barks' ({exc}): {hint}") from None
    special = set(tokenizer.all_special_ids)
    if not ids or all(i in special or i == tokenizer.unk_token_id for i in ids):
        raise ValueError(
            f"{where}: the tokenizer encodes 'a dog barks' to no real token "
            f"(vocabulary of {len(tokenizer)} entries): {hint}"
        )


def local_text_model(text_model: str, where: str, copy_of: str):
    """A text tower's config and checked tokenizer from a folder or the Hugging Face cache (never
    the hub), and what names them in a scorer id (the folder's digest, or the cache name).

    The towers' weights come from the CLAP checkpoints; only config and tokenizer are read here.
    """
    from transformers import AutoConfig, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(text_model, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(text_model, local_files_only=True)
    except OSError as exc:
        raise FileNotFoundError(
            f"{where}: no local config/tokenizer ({str(exc).splitlines()[0]}); "
            f"set text_model=DIR to a copy of {copy_of} (config.json + tokenizer files)"
        ) from None
    check_tokenizer(tokenizer, where)
    folder = Path(text_model)
    return config, tokenizer, weights_digest(folder) if folder.is_dir() else text_model


class ClapScorer(Scorer):
    """Score = raw cosine of L2-normalised audio and text embeddings; keeps each clip's audio
    embedding as the ``audio_embedding`` artefact (for FAD with that CLAP).

    Scores are bit-identical for the same clips in the same batches (in any process); another
    batch size or batch composition changes them only by float rounding (< 1e-6).
    """

    name = "clap"
    metrics = (MetricSpec("clap", True, (-1.0, 1.0), "cosine of audio and text embeddings"),)
    channels = 1
    uses_prompt = True

    @abstractmethod
    def embed_audio(self, audio: Sequence[np.ndarray]) -> np.ndarray:
        """Mono float32 arrays at ``sample_rate`` -> ``(n, dim)`` L2-normalised embeddings."""

    @abstractmethod
    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """Texts -> ``(n, dim)`` L2-normalised embeddings (no caching here)."""

    def text_embeddings(self, texts: Sequence[str]) -> np.ndarray:
        """``(n, dim)`` text embeddings, cached per text for the scorer's lifetime."""
        cache = self.__dict__.setdefault("_text_cache", {})
        missing = [t for t in dict.fromkeys(texts) if t not in cache]
        if missing:
            cache.update(zip(missing, self.encode_texts(missing)))
        return np.stack([cache[t] for t in texts])

    def score_batch(self, clips: Sequence[Clip]) -> list[ScoreResult]:
        audio = self.embed_audio([c.audio[0] for c in clips])
        text = self.text_embeddings([c.prompt.text for c in clips])
        cos = np.sum(audio * text, axis=1)
        return [ScoreResult({"clap": float(v)}, artefacts={"audio_embedding": e}) for v, e in zip(cos, audio)]
