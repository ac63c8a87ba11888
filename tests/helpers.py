"""Small signal makers for tests."""

from __future__ import annotations

import numpy as np


def tone(freq: float = 440.0, seconds: float = 1.0, rate: int = 16_000, amp: float = 0.5, channels: int = 1):
    """A sine, float32 ``(channels, samples)``."""
    t = np.arange(int(seconds * rate)) / rate
    return np.repeat((amp * np.sin(2 * np.pi * freq * t))[None], channels, axis=0).astype(np.float32)


def dominant_frequency(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / rate)[np.argmax(spectrum)])


CORPUS = ["a dog barks loudly", "rain falls on a roof", "a bell rings twice", "an engine idles"] * 50


def bpe_tokenizer(corpus=CORPUS, special=("<s>", "<pad>", "</s>", "<unk>"), **named):
    """A small BPE tokenizer trained in-process (no hub), wrapped as a transformers fast tokenizer.
    ``special`` come first in the vocabulary (ids 0, 1, ...); ``named`` overrides the named tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=200, special_tokens=list(special)))
    names = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>", **named}
    return PreTrainedTokenizerFast(tokenizer_object=tok, **names)


def reference_package(name: str):
    """Import a published reference package (installed by `make test`); skipped when absent, an
    error under CI, where the Makefile installs it."""
    import importlib
    import os

    import pytest

    try:
        return importlib.import_module(name)
    except ImportError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"reference package {name} missing under CI ({exc}); `make test` installs it")
        pytest.skip(f"reference package {name} not installed ({exc})")
