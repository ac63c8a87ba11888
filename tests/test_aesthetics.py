"""aesthetics:audiobox on a tiny random-initialised Audiobox-Aesthetics model (the package's classes).

The reference is the package's own ``AesPredictor`` (checkpoint loading, windowing, weighting,
de-normalisation). What the test cannot reach here: torchaudio, which ``infer.py`` imports at top
level (a stand-in lets it import; its resampler is handed 16 kHz audio, so it has nothing to do), and
the full-size WavLM — the package's ``DEFAULT_AUDIO_CFG`` is shrunk to 2 layers of width 64 for both
sides (the real checkpoint needs the default, which our loader never changes).
"""

from __future__ import annotations

import sys
import types
from unittest import mock

import numpy as np
import pytest
import torch

from helpers import assert_all_scored, odd_but_valid_clips, reference_package, score_as_the_runner_does
from ttaeval import Clip, get_scorer

TINY_WAVLM = {
    "extractor_mode": "default",
    "encoder_layers": 2,
    "encoder_embed_dim": 64,
    "encoder_ffn_embed_dim": 128,
    "encoder_attention_heads": 2,
    "conv_feature_layers": "[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 2",
    "conv_pos": 16,
    "conv_pos_groups": 4,
    "relative_position_embedding": True,
    "num_buckets": 32,
    "max_distance": 80,
    "gru_rel_pos": True,
    "normalize": False,
}
MODEL_CFG = {
    "proj_num_layer": 1,
    "proj_ln": False,
    "proj_act_fn": "gelu",
    "proj_dropout": 0,
    "nth_layer": 3,
    "use_weighted_layer_sum": True,
    "precision": "32",
    "normalize_embed": True,
    "output_dim": 1,
}
TARGETS = {
    a: {"mean": m, "std": s}
    for a, m, s in [("CE", 5.5, 1.5), ("CU", 6.0, 1.2), ("PC", 4.0, 2.0), ("PQ", 7.0, 1.1)]
}


def tiny_wavlm():
    """The package's WavLM config shrunk for tests (patched over ``aes.DEFAULT_AUDIO_CFG``)."""
    from audiobox_aesthetics.model import wavlm

    return wavlm.WavLMConfig(TINY_WAVLM)


def save_tiny_aesthetics(path) -> None:
    """A tiny Audiobox-Aesthetics checkpoint in the released layout."""
    from audiobox_aesthetics.model import aes

    with mock.patch.object(aes, "DEFAULT_AUDIO_CFG", tiny_wavlm()):
        torch.manual_seed(0)
        model = aes.AesMultiOutput(**MODEL_CFG, target_transform=TARGETS)
    state = {"model." + k: v for k, v in model.state_dict().items()}  # the released layout
    torch.save({"state_dict": state, "model_cfg": MODEL_CFG, "target_transform": TARGETS}, path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    reference_package("audiobox_aesthetics")
    from audiobox_aesthetics.model import aes

    folder = tmp_path_factory.mktemp("aes")
    save_tiny_aesthetics(folder / "checkpoint.pt")
    with mock.patch.object(aes, "DEFAULT_AUDIO_CFG", tiny_wavlm()):
        fake = types.ModuleType("torchaudio")
        fake.functional = types.SimpleNamespace(resample=lambda wav, orig_freq, new_freq: wav)
        saved = sys.modules.get("torchaudio")
        sys.modules["torchaudio"] = fake
        try:
            from audiobox_aesthetics import infer

            predictor = infer.AesPredictor(checkpoint_pth=str(folder / "checkpoint.pt"))
        finally:
            sys.modules.pop("torchaudio") if saved is None else sys.modules.__setitem__("torchaudio", saved)
        yield folder / "checkpoint.pt", predictor


def test_scores_equal_the_packages_predictor(tiny):
    ckpt, predictor = tiny
    from audiobox_aesthetics.model import aes

    rng = np.random.default_rng(0)
    audio = [(0.1 * rng.standard_normal(int(16_000 * s))).astype(np.float32) for s in (3, 10, 23.5)]
    with mock.patch.object(aes, "DEFAULT_AUDIO_CFG", tiny_wavlm()):
        scorer = get_scorer(f"aesthetics:audiobox,checkpoint={ckpt},batch_size=3")
    ours = scorer.score([Clip(a[None], 16_000) for a in audio])
    theirs = predictor.forward([{"path": torch.from_numpy(a)[None], "sample_rate": 16_000} for a in audio])
    for o, t in zip(ours, theirs):
        assert o.ok
        for axis in ("CE", "CU", "PC", "PQ"):
            assert o.values[axis] == pytest.approx(t[axis], abs=1e-5)
    assert scorer.id.startswith("aesthetics:audiobox@1,") and str(ckpt) not in scorer.id


def test_missing_checkpoint_is_one_clear_line():
    reference_package("audiobox_aesthetics")
    with pytest.raises(FileNotFoundError, match="set checkpoint=PATH"):
        get_scorer("aesthetics:audiobox")


def test_windows_are_the_packages():
    from ttaeval.scorers.aesthetics import window_spans

    assert window_spans(235, 100) == [(0, 100), (100, 100), (200, 35)]
    assert window_spans(100, 100) == [(0, 100)]


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    from test_checkpoints import malicious_checkpoint

    from ttaeval.checkpoints import CheckpointRefused

    reference_package("audiobox_aesthetics")
    malicious_checkpoint(tmp_path / "evil.pt", tmp_path / "pwned")
    with pytest.raises(CheckpointRefused, match="refused"):
        get_scorer(f"aesthetics:audiobox,checkpoint={tmp_path / 'evil.pt'}")
    assert not (tmp_path / "pwned").exists()


def test_odd_but_valid_audio_is_scored(tiny):
    """Issue 10: tiny, 8-channel, 192 kHz, 10-minute, silent, clipped clips all end as finite scores."""
    ckpt, _ = tiny
    from audiobox_aesthetics.model import aes

    with mock.patch.object(aes, "DEFAULT_AUDIO_CFG", tiny_wavlm()):
        scorer = get_scorer(f"aesthetics:audiobox,checkpoint={ckpt},batch_size=3")
    clips = odd_but_valid_clips()
    assert_all_scored(clips, score_as_the_runner_does(scorer, clips.values()))


def test_checkpoint_paths_are_checked_before_the_package_is_imported(tmp_path):
    """Issue 20: a wrong path, or a folder without the from_pretrained files, is one line naming it,
    before any model code is imported."""
    from test_clap_laion import construct_in_fresh_process

    missing, folder = construct_in_fresh_process(
        [
            "aesthetics:audiobox,checkpoint=/nonexistent/checkpoint.pt",
            f"aesthetics:audiobox,checkpoint={tmp_path}",
        ],
        ["audiobox_aesthetics"],
    )
    assert "/nonexistent/checkpoint.pt" in missing and "set checkpoint=PATH" in missing
    assert str(tmp_path / "config.json") in folder
