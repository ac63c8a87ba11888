"""clap:hf on a tiny random-initialised transformers ClapModel built offline from configs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models
from transformers import (
    ClapAudioConfig,
    ClapConfig,
    ClapFeatureExtractor,
    ClapModel,
    ClapProcessor,
    ClapTextConfig,
    PreTrainedTokenizerFast,
)

from helpers import assert_all_scored, bpe_tokenizer, odd_but_valid_clips, score_as_the_runner_does
from ttaeval import Clip, Prompt, get_scorer


def save_tiny_clap(folder, tok) -> ClapModel:
    text = ClapTextConfig(
        vocab_size=200,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=80,
    )
    audio = ClapAudioConfig(
        spec_size=256,
        window_size=8,
        num_mel_bins=64,
        depths=[1, 1],
        num_attention_heads=[2, 2],
        hidden_size=32,
        patch_embeds_hidden_size=16,
        enable_fusion=False,
    )
    torch.manual_seed(0)
    model = ClapModel(
        ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=16)
    ).eval()
    fe = ClapFeatureExtractor(
        feature_size=64, sampling_rate=48_000, truncation="rand_trunc", padding="repeatpad"
    )
    model.save_pretrained(folder)
    ClapProcessor(feature_extractor=fe, tokenizer=tok).save_pretrained(folder)
    return model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clap_hf")
    model = save_tiny_clap(folder, bpe_tokenizer())
    return folder, model


def test_score_equals_a_direct_model_call(tiny):
    folder, model = tiny
    scorer = get_scorer(f"clap:hf,model={folder}")
    rng = np.random.default_rng(0)
    audio = [(0.1 * rng.standard_normal(48_000 * s)).astype(np.float32) for s in (3, 7)]
    prompts = [Prompt("a", "a dog barks loudly"), Prompt("b", "rain falls on a roof")]
    ours = [
        r.values["clap"] for r in scorer.score([Clip(a[None], 48_000, p) for a, p in zip(audio, prompts)])
    ]
    proc = ClapProcessor.from_pretrained(folder)
    with torch.no_grad():
        for x, p, score in zip(audio, prompts, ours):  # one clip per call, the package's own API
            a = model.get_audio_features(
                **proc.feature_extractor([x], sampling_rate=48_000, return_tensors="pt")
            )
            t = model.get_text_features(**proc.tokenizer([p.text], return_tensors="pt"))
            a, t = (torch.nn.functional.normalize(getattr(v, "pooler_output", v), dim=-1) for v in (a, t))
            assert score == pytest.approx(float((a * t).sum()), abs=1e-5)


def test_long_clips_are_windowed_the_same_way_every_time(tiny):
    folder, _ = tiny
    scorer = get_scorer(f"clap:hf,model={folder}")
    x = (0.1 * np.random.default_rng(1).standard_normal((1, 48_000 * 23))).astype(np.float32)
    clip = Clip(x, 48_000, Prompt("a", "a bell rings twice"))
    first, second = scorer.score([clip]), get_scorer(f"clap:hf,model={folder}").score([clip])
    assert first[0].ok and first[0].values == second[0].values


def test_id_names_weights_by_content(tiny, tmp_path):
    folder, _ = tiny
    scorer = get_scorer(f"clap:hf,model={folder}")
    assert scorer.id.startswith("clap:hf@2,weights=") and str(folder) not in scorer.id


def test_an_empty_tokenizer_is_refused(tmp_path):
    # what transformers 5 hands back offline for a hub name: special tokens only
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.add_special_tokens(["<s>", "<pad>", "</s>", "<unk>"])
    empty = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    save_tiny_clap(tmp_path, empty)
    with pytest.raises(ValueError, match="cannot encode 'a dog barks'"):
        get_scorer(f"clap:hf,model={tmp_path}")


def test_a_tokenizer_that_knows_no_words_is_refused(tmp_path):
    save_tiny_clap(tmp_path, bpe_tokenizer(corpus=["zzzz"] * 10))  # every letter of "a dog barks" is unknown
    with pytest.raises(ValueError, match="no real token"):
        get_scorer(f"clap:hf,model={tmp_path}")


def test_missing_model_is_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="clap:hf needs model=PATH"):
        get_scorer("clap:hf")
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        get_scorer(f"clap:hf,model={tmp_path / 'nope'}")


def test_odd_but_valid_audio_is_scored(tiny):
    """Issue 10: tiny, 8-channel, 192 kHz, 10-minute, silent, clipped clips all end as finite scores."""
    folder, _ = tiny
    scorer = get_scorer(f"clap:hf,model={folder}")
    clips = odd_but_valid_clips(Prompt("a", "a dog barks loudly"))
    assert_all_scored(clips, score_as_the_runner_does(scorer, clips.values()))
