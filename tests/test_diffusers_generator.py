"""`diffusers:PATH` generator against a tiny, randomly initialised Stable Audio pipeline built here
from configs (no hub), saved with ``save_pretrained`` and loaded back through the generator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from helpers import bpe_tokenizer
from ttaeval.generators import GenerationFailure, GenerationSettings, clip_seed, get_generator
from ttaeval.io.audio import Clip
from ttaeval.io.prompts import Prompt

RATE = 12_000  # an unusual rate: the clips must carry the pipeline's own
HOP = 32  # the VAE's downsampling (4 * 8)
LATENT_LENGTH = 64  # max audio: 64 * 32 / 12000 = 0.17 s
CHANNELS = 2
DURATION = 0.125  # 1500 samples
SETTINGS = GenerationSettings(duration=DURATION, steps=2, guidance=3.0)
DOG = Prompt("p1", "a dog barks", "accuracy", {})
RAIN = Prompt("p2", "rain falls on a roof", "accuracy", {})
BELL = Prompt("p3", "a bell rings twice", "accuracy", {})


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory) -> Path:
    """A tiny StableAudioPipeline (random weights) saved as a local pipeline folder."""
    import torch
    from diffusers import (
        AutoencoderOobleck,
        EDMDPMSolverMultistepScheduler,
        StableAudioDiTModel,
        StableAudioPipeline,
        StableAudioProjectionModel,
    )
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    tokenizer = bpe_tokenizer(model_max_length=16)
    text_encoder = T5EncoderModel(
        T5Config(
            vocab_size=tokenizer.vocab_size,
            d_model=8,
            d_kv=4,
            d_ff=16,
            num_layers=1,
            num_heads=2,
            relative_attention_num_buckets=8,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.pad_token_id,
        )
    ).eval()
    vae = AutoencoderOobleck(
        encoder_hidden_size=4,
        downsampling_ratios=[4, 8],
        channel_multiples=[1, 2],
        decoder_channels=4,
        decoder_input_channels=3,
        audio_channels=CHANNELS,
        sampling_rate=RATE,
    )
    transformer = StableAudioDiTModel(
        sample_size=LATENT_LENGTH,
        in_channels=3,
        num_layers=1,
        attention_head_dim=4,
        num_attention_heads=2,
        num_key_value_attention_heads=1,
        out_channels=3,
        cross_attention_dim=8,
        time_proj_dim=8,
        global_states_input_dim=16,  # start + end seconds embeddings, conditioning_dim each
        cross_attention_input_dim=8,
    )
    projection = StableAudioProjectionModel(text_encoder_dim=8, conditioning_dim=8, min_value=0, max_value=32)
    scheduler = EDMDPMSolverMultistepScheduler(
        solver_order=2, prediction_type="v_prediction", sigma_data=1.0, sigma_schedule="exponential"
    )
    pipe = StableAudioPipeline(
        vae=vae,
        text_encoder=text_encoder,
        projection_model=projection,
        tokenizer=tokenizer,
        transformer=transformer,
        scheduler=scheduler,
    )
    folder = tmp_path_factory.mktemp("tiny_stable_audio")
    pipe.save_pretrained(folder)
    assert (folder / "model_index.json").is_file()
    return folder


@pytest.fixture(scope="module")
def gen(pipeline_dir):
    return get_generator(f"diffusers:{pipeline_dir}")


def _audio(gen, prompt: Prompt, seed: int, settings: GenerationSettings = SETTINGS) -> np.ndarray:
    (clip,) = gen.generate([prompt], [seed], settings)
    assert isinstance(clip, Clip), clip
    return clip.audio


def test_generates_float32_clips_at_the_pipelines_rate(gen, pipeline_dir):
    assert gen.kind == "diffusers" and gen.batch_size == 1
    saved_rate = json.loads((pipeline_dir / "vae" / "config.json").read_text())["sampling_rate"]
    assert saved_rate == RATE == gen.sample_rate

    clips = gen.generate([DOG, RAIN], [1, 2], SETTINGS)
    assert len(clips) == 2
    for clip, prompt in zip(clips, [DOG, RAIN]):
        assert isinstance(clip, Clip), clip
        assert clip.prompt == prompt
        assert clip.audio.dtype == np.float32
        assert clip.audio.shape == (CHANNELS, round(DURATION * RATE))
        assert clip.sample_rate == RATE
        assert np.isfinite(clip.audio).all() and np.abs(clip.audio).max() > 0
    assert not np.array_equal(clips[0].audio, clips[1].audio)
    assert len(gen.identity["pipeline"]) == 16  # digest of the configs and weight files


def test_same_prompt_and_seed_give_the_same_audio_alone_or_batched(gen):
    alone = _audio(gen, DOG, 5)
    assert np.array_equal(alone, _audio(gen, DOG, 5))
    together = gen.generate([RAIN, DOG], [9, 5], SETTINGS)
    assert isinstance(together[1], Clip) and together[1].prompt == DOG
    assert np.array_equal(alone, together[1].audio)
    assert together[1].key == gen.generate([DOG], [5], SETTINGS)[0].key
    assert not np.array_equal(alone, _audio(gen, DOG, 6))


def test_larger_batches_keep_each_prompt_with_its_own_seed(gen, pipeline_dir):
    batched = get_generator(f"diffusers:{pipeline_dir},batch_size=2")
    assert batched.batch_size == 2
    prompts, seeds = [DOG, RAIN, BELL], [3, 4, 5]  # two calls, the last one short
    clips = batched.generate(prompts, seeds, SETTINGS)
    assert [c.prompt for c in clips] == prompts
    for clip, prompt, seed in zip(clips, prompts, seeds):
        np.testing.assert_allclose(clip.audio, _audio(gen, prompt, seed), atol=1e-5)


def test_settings_reach_the_pipeline(gen, pipeline_dir):
    base = _audio(gen, DOG, 7)
    assert _audio(gen, DOG, 7, GenerationSettings(0.1, 2, 3.0)).shape == (CHANNELS, round(0.1 * RATE))
    assert not np.array_equal(base, _audio(gen, DOG, 7, GenerationSettings(DURATION, 3, 3.0)))
    assert not np.array_equal(base, _audio(gen, DOG, 7, GenerationSettings(DURATION, 2, 1.0)))
    negative = get_generator(f"diffusers:{pipeline_dir},negative_prompt=static noise")
    assert negative.negative_prompt == "static noise"
    assert not np.array_equal(base, _audio(negative, DOG, 7))


def test_resolve_records_steps_and_guidance_with_the_pipelines_defaults(gen):
    assert gen.resolve(SETTINGS) == {"steps": 2, "guidance": 3.0, "duration": DURATION}
    # StableAudioPipeline.__call__ defaults: num_inference_steps=100, guidance_scale=7.0
    assert gen.resolve(GenerationSettings()) == {"steps": 100, "guidance": 7.0}
    assert gen.resolve(GenerationSettings(steps=4, guidance=0.0)) == {"steps": 4, "guidance": 0.0}


def test_a_pipeline_error_fails_the_batch_not_the_call(gen):
    too_long = GenerationSettings(duration=10.0, steps=2, guidance=3.0)  # the tiny model holds 0.17 s
    out = gen.generate([DOG, RAIN], [1, 2], too_long)
    assert len(out) == 2 and all(isinstance(o, GenerationFailure) for o in out)
    assert "diffusers: ValueError" in out[0].reason and "longer than the model maximum" in out[0].reason


def test_a_folder_without_model_index_is_refused_by_name(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for folder in (tmp_path / "nonexistent", empty):
        with pytest.raises(FileNotFoundError, match=f"{folder}.*model_index.json"):
            get_generator(f"diffusers:{folder}").generate([DOG], [1], SETTINGS)


def test_run_end_to_end_stores_every_clip(tmp_path, pipeline_dir, gen):
    import soundfile as sf

    from ttaeval.report.tables import clip_table
    from ttaeval.runner import RunConfig, run
    from ttaeval.store import RunStore

    suite = tmp_path / "suite.jsonl"
    rows = [{"audio_id": "a1", "prompt": "a dog barks"}, {"audio_id": "a2", "prompt": "rain falls on a roof"}]
    suite.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = RunConfig(
        out=tmp_path / "run",
        systems={"tiny": f"diffusers:{pipeline_dir}"},
        suite=str(suite),
        scorers=["signal"],
        steps=2,
        duration=DURATION,
    )
    summary = run(cfg, command="test")
    assert summary.errors == []
    assert (summary.planned, summary.generated, summary.generation_failed) == (2, 2, 0)
    with RunStore(cfg.out) as store:
        clips = store.clips().set_index("prompt_id")
        table = clip_table(store).set_index("prompt_id")
    assert sorted(clips.index) == ["a1", "a2"] and clips["error"].isna().all()
    assert (clips["sample_rate"] == RATE).all() and (clips["channels"] == CHANNELS).all()
    settings = json.loads(clips.loc["a1", "settings"])
    assert settings == {"seed": clip_seed(0, "a1", 0), "steps": 2, "guidance": 7.0, "duration": DURATION}
    assert np.isfinite(table["signal/peak"]).all()

    # the stored file is exactly what the generator makes from the clip's seed
    stored, rate = sf.read(cfg.out / clips.loc["a1", "source"], dtype="float32", always_2d=True)
    direct = _audio(gen, Prompt("a1", "a dog barks"), settings["seed"], GenerationSettings(DURATION, 2))
    assert rate == RATE and np.array_equal(stored.T, direct)

    again = run(cfg, command="test")
    assert (again.skipped, again.generated) == (2, 0)
