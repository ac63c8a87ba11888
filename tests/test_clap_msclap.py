"""clap:msclap on a tiny random-initialised Microsoft CLAP 2023 built with msclap's own classes.

The reference is msclap's real ``CLAPWrapper`` — its constructor (``load_clap``: config_2023.yml,
``torch.load(...)["model"]``, ``load_state_dict``), ``preprocess_audio``/``load_audio_into_tensor``,
``preprocess_text``, the embedding calls and ``compute_similarity``. What the test cannot reach here:
torchaudio, which the wrapper imports at top level (a stand-in module lets it import; the wrapper's
``read_audio`` — torchaudio.load and torchaudio's resampler — is replaced by handing it the array),
``AutoModel.from_pretrained('gpt2')`` (a GPT-2 built from a tiny local config, for both sides) and the
hub GPT-2 tokenizer (a BPE tokenizer trained in-process, for both sides; transformers 5 dropped the
``encode_plus`` msclap calls, so the wrapper's copy gets transformers 4's, which is ``__call__``).
"""

from __future__ import annotations

import sys
import types
from unittest import mock

import numpy as np
import pytest
import torch

from helpers import (
    CORPUS,
    assert_all_scored,
    bpe_tokenizer,
    odd_but_valid_clips,
    reference_package,
    score_as_the_runner_does,
)
from ttaeval import Clip, Prompt, get_scorer

PROMPTS = [
    Prompt("a", "a dog barks loudly"),
    Prompt("b", "rain falls on a roof!"),
    Prompt("c", "an engine idles"),
]


def tiny_gpt2_config():
    from transformers import GPT2Config

    # 768 is fixed by config_2023.yml's transformer_embed_dim; the rest is tiny.
    return GPT2Config(vocab_size=200, n_positions=80, n_embd=768, n_layer=1, n_head=12)


def save_tiny_msclap(folder):
    """A tiny msclap 2023 checkpoint (saved as the release is) and its GPT-2 config/tokenizer folder."""
    from transformers import AutoModel

    from ttaeval.scorers.clap_msclap import msclap_models

    text = folder / "gpt2"
    tok = bpe_tokenizer(
        [c + " !" for c in CORPUS],
        special=("!", "<|endoftext|>", "<unk>"),
        eos_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<unk>",
    )
    tok.save_pretrained(text)
    tiny_gpt2_config().save_pretrained(text)
    models = msclap_models()
    gpt2 = lambda *a, **k: AutoModel.from_config(tiny_gpt2_config())  # noqa: E731
    torch.manual_seed(0)
    with mock.patch.object(models.clap.AutoModel, "from_pretrained", gpt2):
        model = models.clap.CLAP("HTSAT", 44100, 1024, 320, 64, 50, 8000, 527, 768, "gpt2", 768, 1024)
    state = dict(model.state_dict())
    # saved by transformers 4: GPT-2's attention masks were buffers in the state dict
    state["caption_encoder.base.h.0.attn.bias"] = torch.tril(torch.ones(1, 1, 80, 80))
    state["caption_encoder.base.h.0.attn.masked_bias"] = torch.tensor(-1e4)
    torch.save({"model": state, "epoch": 1}, folder / "CLAP_weights_2023.pth")
    return folder / "CLAP_weights_2023.pth", text


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    reference_package("yaml")
    from transformers import AutoModel, AutoTokenizer

    folder = tmp_path_factory.mktemp("msclap")
    ckpt, text = save_tiny_msclap(folder)
    local_tokenizer = AutoTokenizer.from_pretrained(text)
    if not hasattr(local_tokenizer, "encode_plus"):  # transformers 5 dropped it; in 4 it is __call__
        object.__setattr__(local_tokenizer, "encode_plus", local_tokenizer.__call__)
    gpt2 = lambda *a, **k: AutoModel.from_config(tiny_gpt2_config())  # noqa: E731

    # msclap's own wrapper, importable with a stand-in torchaudio
    fake = types.ModuleType("torchaudio")
    fake.transforms = types.ModuleType("torchaudio.transforms")
    saved = {k: sys.modules.get(k) for k in ("torchaudio", "torchaudio.transforms")}
    sys.modules.update({"torchaudio": fake, "torchaudio.transforms": fake.transforms})
    try:
        from msclap import CLAPWrapper as wrapper_module

        with (
            mock.patch.object(
                wrapper_module.AutoTokenizer,
                "from_pretrained",
                lambda *a, **k: local_tokenizer,
            ),
            mock.patch("transformers.AutoModel.from_pretrained", gpt2),
        ):
            wrapper = wrapper_module.CLAPWrapper(model_fp=str(ckpt), version="2023")
    finally:
        for k, v in saved.items():
            sys.modules.pop(k) if v is None else sys.modules.__setitem__(k, v)
    wrapper.read_audio = lambda x, resample=True: (torch.from_numpy(x)[None], 44_100)
    return ckpt, text, wrapper


def wrapper_score(wrapper, x: np.ndarray, text: str) -> float:
    audio = wrapper.get_audio_embeddings([x])
    texts = wrapper.get_text_embeddings([text])
    return float(wrapper.compute_similarity(audio, texts)[0, 0] / wrapper.clap.logit_scale.exp())


def noise(seconds: float, seed: int) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(44_100 * seconds))).astype(np.float32)


def test_score_equals_msclaps_own_wrapper(tiny):
    ckpt, text, wrapper = tiny
    scorer = get_scorer(f"clap:msclap,checkpoint={ckpt},text_model={text}")
    audio = [noise(s, i) for i, s in enumerate((2.5, 7, 5))]
    ours = [
        r.values["clap"] for r in scorer.score([Clip(a[None], 44_100, p) for a, p in zip(audio, PROMPTS)])
    ]
    theirs = [wrapper_score(wrapper, a, p.text) for a, p in zip(audio, PROMPTS)]
    assert np.allclose(ours, theirs, atol=1e-5), (ours, theirs)
    assert scorer.id.startswith("clap:msclap@1,") and str(ckpt) not in scorer.id


def test_random_crop_reproduces_the_wrapper_with_a_seed(tiny):
    import random

    ckpt, text, wrapper = tiny
    x = noise(11, 7)
    scorer = get_scorer(f"clap:msclap,checkpoint={ckpt},text_model={text},crop=random,seed=4")
    ours = scorer.score([Clip(x[None], 44_100, PROMPTS[0])])[0].values["clap"]
    random.seed(4)
    assert ours == pytest.approx(wrapper_score(wrapper, x, PROMPTS[0].text), abs=1e-5)


def test_long_clips_average_fixed_windows(tiny):
    ckpt, text, wrapper = tiny
    x = noise(16, 8)  # 7 s windows at 0, 4.5 s and 9 s
    scorer = get_scorer(f"clap:msclap,checkpoint={ckpt},text_model={text}")
    emb = scorer.score([Clip(x[None], 44_100, PROMPTS[2])])[0].artefacts["audio_embedding"]
    w = 7 * 44_100
    windows = wrapper.get_audio_embeddings([x[s : s + w] for s in (0, (len(x) - w) // 2, len(x) - w)])
    windows = torch.nn.functional.normalize(windows, dim=-1).mean(0)
    assert np.allclose(emb, (windows / windows.norm()).numpy(), atol=1e-5)


def test_a_checkpoint_that_does_not_fit_is_refused(tiny, tmp_path):
    ckpt, text, _ = tiny
    state = torch.load(ckpt, weights_only=False)
    del state["model"]["audio_encoder.projection.linear1.weight"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match="1 missing"):
        get_scorer(f"clap:msclap,checkpoint={tmp_path / 'broken.pth'},text_model={text}")
    with pytest.raises(FileNotFoundError, match="checkpoint=PATH"):
        get_scorer(f"clap:msclap,text_model={text}")


def test_a_checkpoint_that_would_run_code_is_refused(tiny, tmp_path):
    from test_checkpoints import malicious_checkpoint

    from ttaeval.checkpoints import CheckpointRefused

    _, text, _ = tiny
    malicious_checkpoint(tmp_path / "evil.pth", tmp_path / "pwned")
    with pytest.raises(CheckpointRefused, match="refused"):
        get_scorer(f"clap:msclap,checkpoint={tmp_path / 'evil.pth'},text_model={text}")
    assert not (tmp_path / "pwned").exists()


def test_odd_but_valid_audio_is_scored(tiny):
    """Issue 10: tiny, 8-channel, 192 kHz, long, silent, clipped clips all end as finite scores (the
    long one is a minute here: each 10 s window of the tiny HTSAT costs ~0.5 s on CPU)."""
    ckpt, text, _ = tiny
    scorer = get_scorer(f"clap:msclap,checkpoint={ckpt},text_model={text}")
    clips = odd_but_valid_clips(Prompt("a", "a dog barks loudly"), long_seconds=60)
    assert_all_scored(clips, score_as_the_runner_does(scorer, clips.values()))


def test_checkpoint_paths_are_checked_before_msclap_is_imported(tmp_path):
    """Issue 20: a wrong path is one line naming it, before any model code is imported."""
    from test_clap_laion import construct_in_fresh_process

    from ttaeval.scorers.clap_msclap import PACKAGE

    missing, folder = construct_in_fresh_process(
        ["clap:msclap,checkpoint=/nonexistent/w.pth", f"clap:msclap,checkpoint={tmp_path}"],
        [PACKAGE, "msclap"],
    )
    assert "/nonexistent/w.pth" in missing and "checkpoint=PATH" in missing
    assert str(tmp_path) in folder and "not a file" in folder
