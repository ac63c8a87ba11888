"""A folder laid out like the Resonate release (random weights in the official layouts, built here,
never shipped) generates 44.1 kHz audio through ``ttaeval run``; a broken folder is refused, naming
the file and the key, before anything is generated."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from helpers import bpe_tokenizer, reference_package
from resonate_train.model import fluxaudio_470m
from resonate_train.model.mel_vae import MelVAE
from resonate_train.model.official import load_mel_vae, release_files
from ttaeval.checkpoints import skipped_init
from ttaeval.cli import app

TINY_BIGVGAN = {
    "resblock": "1", "upsample_rates": [8, 4, 2, 2, 2, 2], "upsample_kernel_sizes": [16, 8, 4, 4, 4, 4],
    "upsample_initial_channel": 64, "resblock_kernel_sizes": [3], "resblock_dilation_sizes": [[1]],
    "use_tanh_at_final": False, "use_bias_at_final": False, "activation": "snakebeta", "snake_logscale": True,
    "num_mels": 128, "n_fft": 2048, "hop_size": 512, "win_size": 2048, "sampling_rate": 44100, "fmin": 0,
    "fmax": None,
}  # fmt: skip
"""The released vocoder's configuration, narrower and with one dilation (the folder's config.json is
what the loader reads)."""


def make_release(root, network, vae, t5_width: int, dtype: torch.dtype = torch.float32):
    """A folder laid out like the release, every file holding the given random weights (the network's
    and the VAE's stored in ``dtype``: half precision halves their 3.1 GB on disk; the loaders cast)."""
    bigvgan = reference_package("bigvgan")
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    for module, std in ((network, 0.02), (vae, 1.0)):
        for p in module.parameters():
            torch.nn.init.normal_(p, std=std)

    def stored(module):
        return {k: v.to(dtype) if v.is_floating_point() else v for k, v in module.state_dict().items()}

    torch.save({"model": stored(network)}, root / "Resonate_GRPO.pth")  # a common wrapping
    torch.save(stored(vae), root / "v1-44.pth")
    vocoder_dir = root / "bigvgan_v2_44khz_128band_512x"
    vocoder_dir.mkdir()
    (vocoder_dir / "config.json").write_text(json.dumps(TINY_BIGVGAN))
    vocoder = bigvgan.BigVGAN(bigvgan.env.AttrDict(TINY_BIGVGAN))
    torch.save({"generator": vocoder.state_dict()}, vocoder_dir / "bigvgan_generator.pt")
    tok = bpe_tokenizer(special=("<pad>", "</s>", "<unk>"), bos_token=None)
    tok.save_pretrained(root / "flan-t5-large")
    cfg = T5Config(
        vocab_size=len(tok), d_model=t5_width, d_kv=8, d_ff=32, num_layers=1, num_heads=2, pad_token_id=0
    )
    T5EncoderModel(cfg).save_pretrained(root / "flan-t5-large")
    return root


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """The full 470M network and 44k VAE (random, stored in fp16), a narrower vocoder and T5; removed
    after the module, so a CI disk holds it only while it is used."""
    shm = Path("/dev/shm")  # in memory where there is one: writing 1.5 GB to disk was most of the set-up
    folder = Path(tempfile.mkdtemp(prefix="ttaeval-release-", dir=shm)) if shm.is_dir() else None
    with skipped_init():  # make_release draws every weight
        network, vae = fluxaudio_470m(), MelVAE()
    root = make_release(folder or tmp_path_factory.mktemp("release"), network, vae, 1024, torch.float16)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def tiny_release(tmp_path_factory):
    """The same family at tiny sizes (the loader reads the sizes off the weights)."""
    from resonate_train.model import FluxAudio, FluxAudioConfig

    net = FluxAudio(FluxAudioConfig(text_dim=32, text_c_dim=32, text_seq_len=8, hidden_dim=64, num_heads=2,
                                    depth=2, fused_depth=1, mlp_ratio=2.0, multiple_of=32))  # fmt: skip
    return make_release(tmp_path_factory.mktemp("tiny"), net, MelVAE(width=16), 32)


@pytest.mark.slow
def test_a_release_folder_generates_44k_clips_through_ttaeval_run(release, tmp_path):
    runner = CliRunner(env={"COLUMNS": "400"})
    args = ["run", "--out", str(tmp_path / "run"), "--suite", "synth:accuracy", "--limit", "1"]
    args += ["--system", f"resonate={'resonate:' + str(release)}", "--scorer", "signal"]
    args += ["--steps", "2", "--quiet"]  # 10 s (the release's default duration), 2 Euler steps
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (wav,) = (tmp_path / "run" / "audio" / "resonate").glob("*.wav")
    audio, rate = sf.read(wav)
    assert rate == 44_100 and len(audio) == 441_000 and np.isfinite(audio).all() and np.abs(audio).max() > 0
    settings = json.loads(_clip_settings(tmp_path / "run"))  # recorded with the clip
    assert settings["duration"] == 10.0 and settings["steps"] == 2 and settings["guidance"] == 4.5


def _clip_settings(run) -> str:
    from ttaeval.store import RunStore

    with RunStore(run) as store:
        return store.clips()["settings"].iloc[0]


def test_a_broken_release_folder_is_refused_naming_file_and_key(tiny_release, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("Resonate_GRPO.pth", "v1-44.pth", "flan-t5-large"):
        (broken / name).symlink_to(tiny_release / name)
    with pytest.raises(FileNotFoundError, match="bigvgan_v2_44khz_128band_512x"):
        release_files(broken)
    args = ["run", "--out", str(tmp_path / "run"), "--suite", "synth:accuracy", "--scorer", "signal"]
    out = CliRunner(env={"COLUMNS": "400"}).invoke(app, [*args, "--system", f"r=resonate:{broken}"])
    assert out.exit_code == 2 and "missing" in out.output and "bigvgan_v2_44khz_128band_512x" in out.output
    assert not (tmp_path / "run" / "audio").exists()
    small = MelVAE(mels=80, latent=20, width=16)  # the 16 kHz mode's shapes
    torch.save(small.state_dict(), tmp_path / "v1-16.pth")
    with pytest.raises(
        ValueError, match=r"v1-16\.pth: encoder\.conv_in\.weight is \(16, 80, 3\).*16 kHz mode"
    ):
        load_mel_vae(tmp_path / "v1-16.pth")
    state = torch.load(tiny_release / "v1-44.pth", weights_only=True)
    state["decoder.conv_out.weight"] = state["decoder.conv_out.weight"][:, :, :1]
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"bad\.pth.*mis-shaped \['decoder\.conv_out\.weight"):
        load_mel_vae(tmp_path / "bad.pth")
    misshaped = tmp_path / "misshaped"
    misshaped.mkdir()
    for name in ("v1-44.pth", "flan-t5-large", "bigvgan_v2_44khz_128band_512x"):
        (misshaped / name).symlink_to(tiny_release / name)
    net = torch.load(tiny_release / "Resonate_GRPO.pth", weights_only=True)
    key = "fused_blocks.0.attn.qkv.weight"
    net["model"][key] = net["model"][key][:-1]
    torch.save(net, misshaped / "Resonate_GRPO.pth")
    out = CliRunner(env={"COLUMNS": "400"}).invoke(app, [*args, "--system", f"r=resonate:{misshaped}"])
    assert out.exit_code == 2 and "Resonate_GRPO.pth" in out.output and key in out.output, out.output
    assert not (tmp_path / "run" / "audio").exists()
    torch.save({"generator": state, "payload": _Payload()}, tmp_path / "evil.pt")  # pickled code
    with pytest.raises(ValueError, match=r"evil\.pt: refused"):
        load_mel_vae(tmp_path / "evil.pt")
    from resonate_train.model.vocoder import load_bigvgan

    with pytest.raises(ValueError, match=r"evil\.pt: refused"):
        load_bigvgan(tmp_path / "evil.pt")


class _Payload:
    """A class a checkpoint would need to unpickle: code, not tensors."""


@pytest.mark.slow
def test_one_grpo_step_fine_tunes_a_release_folder_and_saves_a_loadable_checkpoint(tiny_release, tmp_path):
    """A release folder at tiny sizes, one GRPO step on a 0.5 s clip (a group of 2, 2 SDE steps)
    with the signal scorer as reward; the saved checkpoint loads with the release's VAE and vocoder
    as its codec."""
    from resonate_train.grpo import GRPOConfig, GRPOTrainer
    from resonate_train.system import ResonateSystem

    cfg = GRPOConfig(
        base=str(tiny_release), rewards=["signal#peak@1.0"], steps=1, prompts_per_step=1, group_size=2,
        rollout_batches=1, rollout_steps=2, duration=0.5, checkpoint_every=1, eval_every=0,
    )  # fmt: skip
    GRPOTrainer(cfg, tmp_path / "grpo", log=lambda _: None).train()
    (record,) = [json.loads(x) for x in (tmp_path / "grpo" / "train_log.jsonl").read_text().splitlines()]
    assert np.isfinite(record["loss"]) and np.isfinite(record["reward_mean"])
    saved = next(
        p for p in (tmp_path / "grpo").rglob("config.json") if (p.parent / "model.safetensors").exists()
    )
    tuned = ResonateSystem.load(saved.parent)
    assert tuned.codec.to_dict()["kind"] == "mmaudio" and tuned.sample_rate == 44_100
    assert tuned.network.config.qkv_layout == "interleaved"  # the official function, saved with it


@pytest.mark.slow
def test_offline_dpo_starts_from_a_release_folder(tiny_release, tmp_path):
    """Pairs sampled from the release's model (10 s clips through its VAE and vocoder), ranked by a
    scorer, one DPO step."""
    from resonate_train.dpo import DPOConfig, DPOTrainer

    cfg = DPOConfig(
        base=str(tiny_release), reward="signal#peak@1.0", pair_prompts=1, samples_per_prompt=2,
        sample_steps=1, steps=1, batch_size=1, checkpoint_every=1,
    )  # fmt: skip
    trainer = DPOTrainer(cfg, tmp_path / "dpo", log=lambda _: None)
    pairs = trainer.make_pairs(0)
    assert pairs.winners.shape == (1, 431, 40)  # the release's 10 s
    trainer.train()
    (record,) = [json.loads(x) for x in (tmp_path / "dpo" / "train_log.jsonl").read_text().splitlines()]
    assert np.isfinite(record["loss"])
