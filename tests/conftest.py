"""Shared fixtures. Tests never touch the network: the hub is off for every test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SHARED_DATA = Path(
    os.environ.get("TTAEVAL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (or $TTAEVAL_SHARED_DATA); skipped when absent, an error under CI."""
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"shared data folder missing under CI: {SHARED_DATA}")
        pytest.skip(f"shared data folder not found: {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_resonate(tmp_path_factory) -> Path:
    """A random resonate-mini checkpoint with cheap sampling (1 s clips, 3 steps, 2 Griffin-Lim
    iterations) for trainer tests."""
    import torch

    from resonate_train.model import fluxaudio_mini
    from resonate_train.model.codec import MelCodec
    from resonate_train.model.text import ClapMiniTextEncoder
    from resonate_train.system import ResonateSystem, SamplingDefaults

    torch.manual_seed(0)
    net = fluxaudio_mini().initialize_weights()
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.02)
    system = ResonateSystem(
        net.eval(), ClapMiniTextEncoder(), MelCodec(griffin_lim_iters=2), SamplingDefaults(1.0, 3, 3.0)
    )
    system.set_empty_text()
    return system.save(tmp_path_factory.mktemp("base") / "mini")
