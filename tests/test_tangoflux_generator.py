"""`tangoflux:PATH` generator against a tiny, randomly initialised TangoFlux folder built from configs
(``tangoflux_tiny``) and loaded back through the published package's model class."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers import reference_package

pytest.importorskip("diffusers")

from tangoflux_tiny import AUDIO_SEQ_LEN, CHANNELS, HOP, RATE, write_tiny_tangoflux

from ttaeval.generators import GENERATORS, GenerationFailure, GenerationSettings, clip_seed, get_generator
from ttaeval.io.audio import Clip
from ttaeval.io.prompts import Prompt

DURATION = 0.1  # 800 samples; the tiny latent window holds 32 * 32 / 8000 = 0.128 s
SETTINGS = GenerationSettings(duration=DURATION, steps=2, guidance=3.0)
DOG = Prompt("p1", "a dog barks", "accuracy", {})
RAIN = Prompt("p2", "rain falls on a roof", "accuracy", {})
BELL = Prompt("p3", "a bell rings twice", "accuracy", {})


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    reference_package("tangoflux")  # installed by `make test` (--no-deps); an error under CI when absent
    return write_tiny_tangoflux(tmp_path_factory.mktemp("tiny_tangoflux"))


@pytest.fixture(scope="module")
def gen(tiny_dir):
    g = get_generator(f"tangoflux:{tiny_dir}")
    g.load()
    return g


def _audio(gen, prompt: Prompt, seed: int, settings: GenerationSettings = SETTINGS) -> np.ndarray:
    (clip,) = gen.generate([prompt], [seed], settings)
    assert isinstance(clip, Clip), clip
    return clip.audio


def test_registered_with_tangoflux_as_its_requirement(tiny_dir):
    entry = GENERATORS.entry("tangoflux")
    assert entry.requires == ("tangoflux",) and entry.installed()


def test_defaults_are_tangofluxs_published_ones(gen):
    assert gen.kind == "tangoflux" and (gen.device, gen.dtype, gen.batch_size) == ("cpu", "float32", 1)
    # README/CLI: 50 steps; TangoFluxInference.generate: guidance_scale=4.5; CLI/generate: 10 s
    assert gen.resolve(GenerationSettings()) == {"duration": 10.0, "steps": 50, "guidance": 4.5}
    assert gen.resolve(SETTINGS) == {"duration": DURATION, "steps": 2, "guidance": 3.0}
    assert gen.resolve(GenerationSettings(steps=4, guidance=0.0)) == {
        "duration": 10.0,
        "steps": 4,
        "guidance": 0.0,
    }


def test_generates_float32_clips_at_the_vaes_rate(gen):
    assert gen.sample_rate == RATE
    clips = gen.generate([DOG, RAIN], [1, 2], SETTINGS)
    assert len(clips) == 2
    for clip, prompt in zip(clips, [DOG, RAIN]):
        assert isinstance(clip, Clip), clip
        assert clip.prompt == prompt and clip.source == f"tangoflux:{prompt.id}"
        assert clip.audio.dtype == np.float32 and clip.audio.shape == (CHANNELS, round(DURATION * RATE))
        assert clip.sample_rate == RATE
        assert np.isfinite(clip.audio).all() and np.abs(clip.audio).max() > 0
    assert not np.array_equal(clips[0].audio, clips[1].audio)


def test_a_clip_depends_on_its_seed_only(gen):
    import torch

    torch.manual_seed(123)
    state = torch.get_rng_state()
    alone = _audio(gen, DOG, 5)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random state is left alone
    assert np.array_equal(alone, _audio(gen, DOG, 5))
    together = gen.generate([RAIN, DOG, BELL], [9, 5, 4], SETTINGS)
    assert [c.prompt for c in together] == [RAIN, DOG, BELL]
    assert np.array_equal(alone, together[1].audio)
    assert together[1].key == gen.generate([DOG], [5], SETTINGS)[0].key
    assert not np.array_equal(alone, _audio(gen, DOG, 6))


def test_settings_reach_the_model(gen):
    base = _audio(gen, DOG, 7)
    assert _audio(gen, DOG, 7, GenerationSettings(0.05, 2, 3.0)).shape == (CHANNELS, 400)
    assert not np.array_equal(base, _audio(gen, DOG, 7, GenerationSettings(DURATION, 3, 3.0)))
    assert not np.array_equal(base, _audio(gen, DOG, 7, GenerationSettings(DURATION, 2, 4.5)))
    # without guidance (scale <= 1) tangoflux 0.1.0's inference_flow needs the encode_text shim
    for scale in (1.0, 0.0):
        assert np.isfinite(_audio(gen, DOG, 7, GenerationSettings(DURATION, 2, scale))).all()


def test_the_whole_latent_window_and_no_more(gen):
    window = AUDIO_SEQ_LEN * HOP  # 1024 samples: a request up to one latent frame longer gets them all
    assert _audio(gen, DOG, 1, GenerationSettings(0.13, 2, 3.0)).shape == (CHANNELS, window)
    out = gen.generate([DOG, RAIN], [1, 2], GenerationSettings(0.5, 2, 3.0))
    assert len(out) == 2 and all(isinstance(o, GenerationFailure) for o in out)
    assert "duration 0.5 s is outside this model's range" in out[0].reason


def test_bfloat16_runs_under_autocast(tiny_dir, gen):
    bf16 = get_generator(f"tangoflux:{tiny_dir},dtype=bfloat16")
    audio = _audio(bf16, DOG, 5)
    assert audio.dtype == np.float32 and np.isfinite(audio).all()
    assert bf16.identity != gen.identity  # precision changes the output: another system
    with pytest.raises(ValueError, match="dtype 'float16'"):
        get_generator(f"tangoflux:{tiny_dir},dtype=float16")
    with pytest.raises(ValueError, match="batch_size must be 1"):
        get_generator(f"tangoflux:{tiny_dir},batch_size=2")


def test_identity_is_the_content_not_the_place(tiny_dir, gen, tmp_path):
    ident = gen.identity
    assert ident["kind"] == "tangoflux" and len(ident["checkpoint"]) == 16
    assert {"path", "device", "batch_size"}.isdisjoint(ident)
    assert ident["steps"] == 50 and ident["guidance"] == 4.5 and ident["duration"] == 10.0
    copy = shutil.copytree(tiny_dir, tmp_path / "copy")
    assert get_generator(f"tangoflux:{copy}").identity == ident
    assert get_generator(f"tangoflux:{copy},steps=25").identity["steps"] == 25
    with (copy / "tangoflux.safetensors").open("ab") as f:
        f.write(b"\0" * 8)  # other weights (a different size)
    assert get_generator(f"tangoflux:{copy}").identity["checkpoint"] != ident["checkpoint"]


def test_a_folder_missing_files_is_refused_at_construction(tiny_dir, tmp_path):
    for name in ("tangoflux.safetensors", "config.json"):
        folder = shutil.copytree(tiny_dir, tmp_path / name.replace(".", "_"))
        (folder / name).unlink()
        with pytest.raises(FileNotFoundError, match=f"{folder} lacks {name}"):
            get_generator(f"tangoflux:{folder}")
    no_vae = shutil.copytree(tiny_dir, tmp_path / "no_vae")
    shutil.rmtree(no_vae / "vae")
    with pytest.raises(FileNotFoundError, match=r"lacks vae\.safetensors"):
        get_generator(f"tangoflux:{no_vae}")
    no_t5 = shutil.copytree(tiny_dir, tmp_path / "no_t5")
    shutil.rmtree(no_t5 / "text_encoder")
    with pytest.raises(FileNotFoundError, match=r"text_encoder/.*'google/flan-t5-large'"):
        get_generator(f"tangoflux:{no_t5}")
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        get_generator(f"tangoflux:{tmp_path / 'nonexistent'}")


def test_a_text_encoder_elsewhere_is_found_by_the_configs_path(tiny_dir, gen, tmp_path):
    folder = shutil.copytree(tiny_dir, tmp_path / "moved")
    shutil.move(folder / "text_encoder", tmp_path / "t5")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "text_encoder_name": str(tmp_path / "t5")}))
    assert np.array_equal(_audio(get_generator(f"tangoflux:{folder}"), DOG, 3), _audio(gen, DOG, 3))


def test_the_released_layout_with_a_root_vae_file(tiny_dir, gen, tmp_path, monkeypatch):
    """``vae.safetensors`` beside the weights, as in declare-lab/TangoFlux: loaded into an
    AutoencoderOobleck of RELEASED_VAE_CONFIG (diffusers' defaults = Stable Audio Open's VAE; the
    tiny one's config here)."""
    from ttaeval.generators import tangoflux

    folder = shutil.copytree(tiny_dir, tmp_path / "released")
    vae_config = json.loads((folder / "vae" / "config.json").read_text())
    shutil.move(folder / "vae" / "diffusion_pytorch_model.safetensors", folder / "vae.safetensors")
    shutil.rmtree(folder / "vae")
    monkeypatch.setattr(
        tangoflux,
        "RELEASED_VAE_CONFIG",
        {k: v for k, v in vae_config.items() if not k.startswith("_")},
    )
    assert np.array_equal(_audio(get_generator(f"tangoflux:{folder}"), DOG, 3), _audio(gen, DOG, 3))


def test_weights_that_do_not_fit_the_config_fail_the_clips_by_name(tiny_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = shutil.copytree(tiny_dir, tmp_path / "bad")
    weights = load_file(str(folder / "tangoflux.safetensors"))
    weights = {k: v for k, v in weights.items() if not k.startswith("fc.")}
    save_file(weights, str(folder / "tangoflux.safetensors"))
    g = get_generator(f"tangoflux:{folder}")
    with pytest.raises(ValueError, match=r"tangoflux.safetensors does not match config.json.*fc\.0"):
        g.load()


def test_run_end_to_end_stores_every_clip_and_resumes(tmp_path, tiny_dir, gen):
    import soundfile as sf

    from ttaeval.runner import RunConfig, run
    from ttaeval.store import RunStore

    suite = tmp_path / "suite.jsonl"
    rows = [
        {"audio_id": "a1", "prompt": "a dog barks"},
        {"audio_id": "a2", "prompt": "rain falls on a roof"},
        {"audio_id": "a3", "prompt": "a bell rings twice"},
    ]
    suite.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = RunConfig(
        out=tmp_path / "run",
        systems={"tiny": f"tangoflux:{tiny_dir}"},
        suite=str(suite),
        scorers=["signal"],
        steps=2,
        duration=DURATION,
        batch_size=2,
        device="cpu",
    )
    summary = run(cfg, command="test")
    assert summary.errors == []
    assert (summary.planned, summary.generated, summary.generation_failed) == (3, 3, 0)
    with RunStore(cfg.out) as store:
        clips = store.clips().set_index("prompt_id")
    assert sorted(clips.index) == ["a1", "a2", "a3"] and clips["error"].isna().all()
    assert (clips["sample_rate"] == RATE).all() and (clips["channels"] == CHANNELS).all()
    for pid in clips.index:
        settings = json.loads(clips.loc[pid, "settings"])  # the run's steps/duration, TangoFlux's guidance
        assert settings == {"seed": clip_seed(0, pid, 0), "duration": DURATION, "steps": 2, "guidance": 4.5}
        stored, rate = sf.read(cfg.out / clips.loc[pid, "source"], dtype="float32", always_2d=True)
        assert rate == RATE and stored.shape == (round(DURATION * RATE), CHANNELS)
        assert np.isfinite(stored).all()

    # the stored file is exactly what the generator makes from the clip's seed, alone
    settings = json.loads(clips.loc["a2", "settings"])
    stored, _ = sf.read(cfg.out / clips.loc["a2", "source"], dtype="float32", always_2d=True)
    direct = _audio(
        gen, Prompt("a2", "rain falls on a roof"), settings["seed"], GenerationSettings(DURATION, 2)
    )
    assert np.array_equal(stored.T, direct)

    again = run(cfg, command="test")
    assert (again.skipped, again.generated, again.generation_failed) == (3, 0, 0)
