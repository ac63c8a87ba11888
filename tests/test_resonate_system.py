"""resonate_train checkpoints: save/load, generation, and the `resonate:` generator in ttaeval run."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import torch

from resonate_train.model import fluxaudio_mini
from resonate_train.model.codec import MelCodec
from resonate_train.model.text import ClapMiniTextEncoder
from resonate_train.system import ResonateSystem, SamplingDefaults


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A random (untrained) mini system saved as a checkpoint folder."""
    torch.manual_seed(0)
    net = fluxaudio_mini().initialize_weights()
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.02)
    system = ResonateSystem(
        net.eval(), ClapMiniTextEncoder(), MelCodec(griffin_lim_iters=4), SamplingDefaults(1.0, 4, 3.0)
    )
    system.network.latent_mean.fill_(-4.0)  # un-normalising moves latents into the codec's log-mel range
    system.set_empty_text()
    return system.save(tmp_path_factory.mktemp("ckpt") / "mini")


def test_a_saved_system_loads_and_generates_the_same_audio(checkpoint):
    system = ResonateSystem.load(checkpoint)
    a = system.generate(["a dog barks", "rain"], seeds=[1, 2])
    again = ResonateSystem.load(checkpoint).generate(["a dog barks", "rain"], seeds=[1, 2])
    assert a.shape == (2, 16_000) and a.dtype == np.float32 and np.isfinite(a).all()
    assert np.array_equal(a, again)  # the same batch: the same bits
    both = system.sample_latents(["a dog barks", "rain"], [1, 2], 1.0, 4, 3.0)
    alone = system.sample_latents(["a dog barks"], [1], 1.0, 4, 3.0)
    assert torch.allclose(both[:1], alone, atol=1e-5)  # alone: the same latent, up to rounding
    c = system.generate(["a dog barks"], seeds=[3])
    assert not np.array_equal(a[:1], c)
    assert torch.equal(system.network.empty_string_feat, torch.zeros_like(system.network.empty_string_feat))


def test_an_exported_half_precision_checkpoint_is_half_the_size_and_loads_the_rounded_weights(
    checkpoint, tmp_path
):
    """``resonate-train export``: float16 weights (what the study's shipped fine-tunes are), the run's
    records beside them, float32 parameters when loaded, and its own identity as a system."""
    from typer.testing import CliRunner

    from resonate_train.cli import app
    from resonate_train.generator import ResonateGenerator

    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    for f in checkpoint.iterdir():
        (run / "final" / f.name).write_bytes(f.read_bytes())
    (run / "train_log.jsonl").write_text('{"step": 0}\n')
    result = CliRunner().invoke(app, ["export", str(run / "final"), str(tmp_path / "shipped")])
    assert result.exit_code == 0, result.output
    shipped = tmp_path / "shipped"
    assert (shipped / "train_log.jsonl").read_text() == '{"step": 0}\n'
    size = (shipped / "model.safetensors").stat().st_size
    assert size < 0.55 * (checkpoint / "model.safetensors").stat().st_size
    original, half = ResonateSystem.load(checkpoint).network, ResonateSystem.load(shipped).network
    for (name, a), b in zip(original.state_dict().items(), half.state_dict().values(), strict=True):
        assert b.dtype == a.dtype, name  # computes in float32 ...
        assert torch.equal(b, a.half().to(a.dtype) if a.is_floating_point() else a), name  # ... from fp16
    audio = ResonateSystem.load(shipped).generate(["a dog barks"], seeds=[1])
    assert np.isfinite(audio).all() and audio.shape == (1, 16_000)
    assert ResonateGenerator(path=shipped).identity != ResonateGenerator(path=checkpoint).identity
    bad = CliRunner().invoke(app, ["export", str(checkpoint), str(tmp_path / "x"), "--dtype", "int8"])
    assert bad.exit_code == 2 and "int8" in bad.output


def test_decoding_uses_unnormalised_latents(checkpoint, monkeypatch):
    system = ResonateSystem.load(checkpoint)
    seen = []
    monkeypatch.setattr(
        system.codec.__class__,
        "decode",
        lambda self, latent, samples=None: seen.append(latent) or torch.zeros(latent.shape[0], samples),
    )
    system.generate(["a bell"], seeds=[0])
    assert seen[0].mean().item() == pytest.approx(-4.0, abs=0.5)  # latent_mean added back before decoding


def test_resonate_checkpoints_run_as_ttaeval_systems(checkpoint, tmp_path):
    from ttaeval.generators import get_generator
    from ttaeval.report.tables import clip_table
    from ttaeval.runner import RunConfig, run
    from ttaeval.store import RunStore

    assert get_generator(f"resonate:{checkpoint}").kind == "resonate"  # found through the entry point
    cfg = RunConfig(
        out=tmp_path / "run",
        systems={"base": f"resonate:{checkpoint}"},
        suite="synth:accuracy",
        scorers=["signal"],
        limit=3,
    )
    summary = run(cfg)
    assert summary.generated == 3 and summary.all_ok
    with RunStore(cfg.out) as store:
        table = clip_table(store)
    assert (table["signal/duration_s"] == 1.0).all()
    settings = pd.read_json(io.StringIO("[" + ",".join(table["settings"]) + "]"))
    assert (
        set(settings.columns) == {"seed", "duration", "steps", "guidance"} and (settings["steps"] == 4).all()
    )


def test_pretraining_writes_a_loadable_checkpoint_with_the_data_statistics(tmp_path):
    from resonate_train.pretrain import PretrainConfig, pretrain, training_set

    cfg = PretrainConfig(
        scenes=12, captions_per_scene=1, steps=3, batch_size=4, warmup=1, workers=1, log_every=1
    )
    out = pretrain(cfg, tmp_path / "ckpt", log=lambda _: None)
    system = ResonateSystem.load(out)
    latents, _, _ = training_set(cfg, system.codec, system.text_encoder)
    assert torch.allclose(system.network.latent_mean, latents.mean(dim=(0, 1), keepdim=True), atol=1e-4)
    losses = [float(line.split('"loss": ')[1].split(",")[0]) for line in (out / "train_log.jsonl").open()]
    assert len(losses) == 3 and all(np.isfinite(losses))
    assert system.generate(["a bell rings"], seeds=[0], steps=2).shape == (1, 64_000)


def test_t5_text_encoder_is_run_as_the_released_resonate_runs_it(tmp_path):
    """Padded to max_length, the encoder's outputs at every position, their unmasked mean pooled."""
    from transformers import T5Config, T5EncoderModel

    from helpers import bpe_tokenizer
    from resonate_train.model.text import T5TextEncoder, text_encoder_from_dict

    tok = bpe_tokenizer(special=("<pad>", "</s>", "<unk>"), bos_token=None)
    tok.save_pretrained(tmp_path)
    cfg = T5Config(
        vocab_size=len(tok), d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2, pad_token_id=0
    )
    torch.manual_seed(0)
    T5EncoderModel(cfg).save_pretrained(tmp_path)
    enc = T5TextEncoder(str(tmp_path), max_tokens=12)
    feats, pooled = enc.encode(["a dog barks loudly", "rain"])
    assert feats.shape == (2, 12, 16) and pooled.shape == (2, 16)
    batch = tok(["a dog barks loudly", "rain"], padding="max_length", max_length=12, truncation=True,
                return_tensors="pt")  # fmt: skip
    with torch.no_grad():
        direct = T5EncoderModel.from_pretrained(tmp_path).eval()(**batch).last_hidden_state
    assert torch.allclose(feats, direct, atol=1e-6)
    n = len(tok("rain")["input_ids"])
    assert not torch.all(feats[1, n:] == 0)  # padding positions keep the encoder's outputs
    assert torch.allclose(pooled, direct.mean(1), atol=1e-6)  # mean over all 12 positions
    again = text_encoder_from_dict(enc.to_dict()).encode(["rain"])
    assert torch.allclose(again[0][0], feats[1], atol=1e-5)
