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
    alone = system.generate(["a dog barks"], seeds=[1])
    assert a.shape == (2, 16_000) and a.dtype == np.float32 and np.isfinite(a).all()
    assert np.array_equal(a, again)  # the same batch: the same bits
    assert np.abs(a[:1] - alone).max() < 1e-2 * np.abs(a).max()  # alone: the same clip, up to rounding
    c = system.generate(["a dog barks"], seeds=[3])
    assert not np.array_equal(a[:1], c)
    assert torch.equal(system.network.empty_string_feat, torch.zeros_like(system.network.empty_string_feat))


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
