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


def odd_but_valid_clips(prompt=None, long_seconds: float = 600.0) -> dict:
    """Valid audio a user's folder may hold that is far from a model's training format (issue 10):
    tiny, many-channel, very high and very low rates, 10 minutes long, silent, clipped, DC-shifted.
    Every scorer must score each of these to finite numbers. ``prompt`` is attached to every clip;
    ``long_seconds`` shortens the long one for backends whose tiny test model still costs ~0.5 s per
    10 s window on CPU (the windowing code does not depend on the number of windows)."""
    from ttaeval import Clip

    def clip(audio: np.ndarray, rate: int) -> Clip:
        return Clip(audio.astype(np.float32), rate, prompt, source="odd")

    return {
        "0.05 s": clip(tone(300, 0.05), 16_000),
        "8 channels, 48 kHz": clip(tone(300, 1.0, rate=48_000, channels=8), 48_000),
        "192 kHz": clip(tone(300, 1.0, rate=192_000), 192_000),
        "8 kHz stereo": clip(tone(300, 1.0, rate=8_000, channels=2), 8_000),
        f"{long_seconds:g} s, 8 kHz": clip(tone(300, long_seconds, rate=8_000), 8_000),
        "digital silence": clip(np.zeros((1, 16_000)), 16_000),
        "full-scale clipping": clip(np.clip(20 * tone(300, 1.0), -1, 1), 16_000),
        "DC offset": clip(tone(300, 1.0, amp=0.2) + 0.3, 16_000),
    }


def score_as_the_runner_does(scorer, clips) -> list:
    """Convert each clip to the scorer's rate and channels (``ttaeval.io.audio.prepare``, as the runner
    does), then score them in one call."""
    from ttaeval.io.audio import prepare

    return scorer.score([prepare(c, scorer.sample_rate, scorer.channels) for c in clips])


def assert_all_scored(names, results) -> None:
    """Every metric that applies to the clip has a finite value; the failing clip is named. Metrics
    that do not apply (``not_applicable``, e.g. a judge's relation question without two events) may be
    NaN."""
    import math

    for name, r in zip(names, results, strict=True):
        assert not r.errors, f"{name}: {r.errors}"
        bad = {k: v for k, v in r.values.items() if k not in r.not_applicable and not math.isfinite(v)}
        assert not bad, f"{name}: non-finite {bad}"
        assert any(math.isfinite(v) for v in r.values.values()), f"{name}: nothing scored"


def random_protocol_weights(folder, which=("panns", "vggish", "openl3", "passt", "laion")) -> dict:
    """Random weights in the released layouts of the protocols' models (no hub here), saved under
    ``folder``; returns the ``--weights KEY=PATH`` pairs. For a look by hand, from the repository:
    ``python -c "import sys; sys.path[:0] = ['tests']; import helpers; helpers.random_protocol_weights('w')"``
    """
    import contextlib
    import io
    import sys
    from pathlib import Path

    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(Path(__file__).parent))
    torch.manual_seed(0)
    out = {}
    if "panns" in which:
        import test_backbones

        pann = test_backbones.fad_pann_module()
        net = pann.Cnn14_16k(16000, 512, 160, 64, 50, 8000, 527)
        torch.save({"model": net.state_dict()}, folder / "panns.pth")
        out["panns"] = folder / "panns.pth"
    if "vggish" in which:
        tv = reference_package("torchvggish")
        torch.save(tv.torchvggish._vgg(postprocess=False).state_dict(), folder / "vggish.pth")
        out["vggish"] = folder / "vggish.pth"
    if "openl3" in which:
        tl3 = reference_package("torchopenl3")
        net = tl3.models.PytorchOpenl3(input_repr="mel256", embedding_size=512, content_type="env")
        torch.save(net.state_dict(), folder / "openl3.pth")
        out["openl3"] = folder / "openl3.pth"
    if "passt" in which:
        reference_package("hear21passt")
        reference_package("timm")
        from ttaeval.backbones.passt import passt_models

        with contextlib.redirect_stdout(io.StringIO()):
            net = passt_models().passt.get_model(
                arch="passt_s_swa_p16_128_ap476", pretrained=False, input_tdim=998
            )
        torch.save(net.state_dict(), folder / "passt.pt")
        out["passt"] = folder / "passt.pt"
    if "laion" in which:
        import test_clap_laion

        test_clap_laion.save_like_laion(test_clap_laion.package_module(False), folder / "laion.pt")
        bpe_tokenizer().save_pretrained(folder / "roberta")
        test_clap_laion.tiny_roberta_config().save_pretrained(folder / "roberta")
        out["laion"], out["roberta"] = folder / "laion.pt", folder / "roberta"
    return out
