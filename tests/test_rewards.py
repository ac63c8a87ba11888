"""Scorers as rewards for other trainers: TRL's reward-function shape and the DDPO/Resonate shape."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf

from ttaeval.io.audio import Clip, prepare, resample
from ttaeval.io.prompts import Prompt
from ttaeval.rewards import ddpo_reward, trl_reward
from ttaeval.scorers import get_scorer
from ttaeval.synth.scenes import RATE as SYNTH_RATE
from ttaeval.synth.scenes import Scene, render
from ttaeval.synth.suites import load_synth

RATE = 44_100  # not clap-mini's 16 kHz: the adapter resamples


@pytest.fixture(scope="module")
def batch():
    prompts = load_synth("accuracy")[:3]
    audio = [resample(render(Scene.from_dict(p.attributes["scene"])), SYNTH_RATE, RATE)[0] for p in prompts]
    return [p.text for p in prompts], audio


def test_a_trl_reward_equals_the_scorer_on_the_same_resampled_clips(batch):
    texts, audio = batch

    class StandInPolicy:  # what a TRL trainer would sample: waveforms for its prompts
        def generate(self, prompts):
            return [a for a in audio[: len(prompts)]]

    reward = trl_reward(["clap:mini", "signal#peak"], weights=[1.0, 0.5], sample_rate=RATE)
    completions = StandInPolicy().generate(texts)
    scores = reward(prompts=texts, completions=completions, completion_ids=None, extra_column=[1, 2, 3])

    clap, signal = get_scorer("clap:mini"), get_scorer("signal")
    clips = [Clip(a[None], RATE, prompt=Prompt(f"p{i}", t)) for i, (a, t) in enumerate(zip(audio, texts))]
    want_clap = [
        r.values["clap"] for r in clap.score([prepare(c, clap.sample_rate, clap.channels) for c in clips])
    ]
    want_peak = [
        r.values["peak"]
        for r in signal.score([prepare(c, signal.sample_rate, signal.channels) for c in clips])
    ]
    assert scores == pytest.approx([c + 0.5 * p for c, p in zip(want_clap, want_peak)], abs=1e-6)
    assert reward.__name__ == "clap#clap+signal#peak" and reward.last_reasons == [None] * 3
    assert reward(prompts=texts, completions=completions) == reward(
        prompts=[[{"role": "user", "content": t}] for t in texts], completions=completions
    )  # chat-format prompts: the last user turn


def test_the_spec_weight_and_the_weights_list_are_one_thing_given_once(batch):
    texts, audio = batch
    listed = trl_reward(["signal#peak"], weights=[0.25], sample_rate=RATE)(texts, audio)
    written = trl_reward("signal#peak@0.25", sample_rate=RATE)(texts, audio)
    assert listed == written
    with pytest.raises(ValueError, match="given twice"):
        trl_reward(["signal#peak@0.25"], weights=[0.5])
    with pytest.raises(ValueError, match="2 reward weights for 1 rewards"):
        trl_reward(["signal#peak"], weights=[0.5, 1.0])


def test_failures_are_nan_with_their_reason_never_zero(batch, tmp_path):
    texts, audio = batch
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not really")
    good = tmp_path / "good.wav"
    sf.write(good, audio[0], RATE)
    nan_audio = np.full(RATE, np.nan, np.float32)
    reward = trl_reward("clap:mini")
    scores = reward(prompts=texts, completions=[str(good), str(broken), Clip(nan_audio[None], RATE)])
    assert math.isfinite(scores[0]) and math.isnan(scores[1]) and math.isnan(scores[2])
    assert reward.last_reasons[0] is None
    assert "broken.wav" in reward.last_reasons[1]
    assert reward.last_reasons[2].startswith("clap#clap: ")
    with pytest.raises(ValueError, match="sample_rate"):
        reward(prompts=texts[:1], completions=[audio[0]])  # a bare waveform needs its rate


def test_a_ddpo_reward_takes_a_batch_tensor_and_returns_scores_and_info(batch):
    import torch

    texts, audio = batch
    reward_fn = ddpo_reward("signal#peak", sample_rate=RATE)
    scores, info = reward_fn(torch.from_numpy(np.stack(audio)), texts, [{}] * 3)
    assert scores.dtype == np.float32 and scores.shape == (3,)
    assert scores == pytest.approx([float(np.abs(a).max()) for a in audio], abs=1e-6)
    assert list(info["parts"]) == ["signal#peak"] and info["reasons"] == [None] * 3


def test_grpo_reward_weights_are_a_list_field_of_the_config():
    from resonate_train.grpo import GRPOConfig
    from resonate_train.rewards import Rewards

    assert GRPOConfig(rewards=["clap:mini", "signal#peak"], reward_weights=[1.0, 0.5]).reward_weights == [
        1.0,
        0.5,
    ]
    with pytest.raises(ValueError, match="1 reward_weights for 2 rewards"):
        GRPOConfig(rewards=["clap:mini", "signal#peak"], reward_weights=[1.0])
    terms = Rewards(["clap:mini", "signal#peak"], weights=[1.0, 0.5]).terms
    assert [t.weight for t in terms] == [1.0, 0.5]
