"""``device`` and ``dtype`` on sampling, GRPO, DPO and pretraining: bfloat16 autocast computes the
network's passes and stays within a stated tolerance of float32 (CPU bf16 here; the same code runs
on GPUs), while log-probs, KL and losses stay float32."""

from __future__ import annotations

import pytest
import torch

from resonate_train.dpo import DPOConfig, DPOTrainer
from resonate_train.grpo import GRPOConfig, GRPOTrainer
from resonate_train.pretrain import PretrainConfig, flow_matching_loss
from resonate_train.sampling import in_precision
from resonate_train.system import RESONATE_MINI, ResonateSystem

# Measured on resonate-mini (CPU bf16 autocast vs float32): velocity 0.0063 relative L2 error,
# latents after 10 Euler steps with CFG 4.5 0.011. Tolerances sit about 3x above.
VELOCITY_TOL = 0.02
LATENT_TOL = 0.035


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / a.norm())


@pytest.fixture(scope="module")
def mini():
    return ResonateSystem.load(RESONATE_MINI)


def test_bf16_velocity_and_sampled_latents_match_float32_within_tolerance(mini):
    net = mini.network
    torch.manual_seed(0)
    cond, _ = mini.conditions(["a dog barks", "rain falls on a roof"])
    x = torch.randn(2, mini.codec.frames(4.0), net.config.latent_dim)
    t = torch.tensor([0.9, 0.3])
    with torch.no_grad():
        full = net(x, t, *cond)
        half = in_precision(net, "bfloat16")(x, t, *cond)
    assert half.dtype == torch.float32
    assert 0 < _rel(full, half) < VELOCITY_TOL  # > 0: the pass really ran in bfloat16
    assert in_precision(net, "float32") is net
    args = (["a dog barks"], [0], 4.0, 10, 4.5)
    fp32 = mini.sample_latents(*args)
    mini.dtype = "bfloat16"
    try:
        bf16 = mini.sample_latents(*args)
    finally:
        mini.dtype = "float32"
    assert 0 < _rel(fp32, bf16) < LATENT_TOL


def test_pretraining_loss_in_bf16_matches_float32(mini):
    torch.manual_seed(1)
    x0 = torch.randn(4, mini.codec.frames(2.0), mini.network.config.latent_dim)
    feats, pooled = mini.conditions(["a bell rings"] * 4)[0]
    with torch.no_grad():
        losses = {
            dtype: float(
                flow_matching_loss(mini.network, x0, feats, pooled, torch.Generator().manual_seed(3), dtype)
            )
            for dtype in ("float32", "bfloat16")
        }
    assert losses["bfloat16"] != losses["float32"]
    assert losses["bfloat16"] == pytest.approx(losses["float32"], rel=0.02)


def test_a_bf16_grpo_step_keeps_its_log_probs_consistent_and_runs_on_the_configured_device(
    tiny_resonate, tmp_path
):
    cfg = GRPOConfig(
        base=str(tiny_resonate), prompts_per_step=2, group_size=3, rollout_steps=3, rollout_batches=1,
        steps=1, eval_every=0, rewards=["signal#peak"], device="cpu", dtype="bfloat16",
    )  # fmt: skip
    trainer = GRPOTrainer(cfg, tmp_path / "g", log=lambda _: None)
    assert trainer.device == torch.device("cpu")
    assert all(p.dtype == torch.float32 for p in trainer.policy.parameters())  # weights stay float32
    record = trainer.train_step()
    for key in ("loss", "policy_loss", "kl", "grad_norm"):
        assert torch.isfinite(torch.tensor(record[key])), key
    # one optimiser step per rollout: the log-probs recomputed for the update are the rollout's own
    # (same weights, same bf16 passes), so the PPO ratio is 1 and nothing is clipped
    assert record["approx_kl"] < 1e-6 and record["clip_fraction"] == 0.0


def test_a_bf16_dpo_step_is_close_to_float32s(tiny_resonate, tmp_path):
    records = {}
    for dtype in ("float32", "bfloat16"):
        cfg = DPOConfig(
            base=str(tiny_resonate), reward="clap:mini", pair_prompts=4, samples_per_prompt=2,
            sample_steps=2, steps=1, batch_size=4, device="cpu", dtype=dtype,
        )  # fmt: skip
        trainer = DPOTrainer(cfg, tmp_path / dtype, log=lambda _: None)
        records[dtype] = trainer.train_step()
        trainer.lock.release()
    a, b = records["float32"], records["bfloat16"]
    assert a["winner_mse"] != b["winner_mse"]
    for key in ("winner_mse", "loser_mse"):
        assert b[key] == pytest.approx(a[key], rel=0.03), key


@pytest.mark.parametrize("config", [GRPOConfig, DPOConfig, PretrainConfig])
def test_device_and_dtype_are_checked_when_the_config_is_made(config):
    with pytest.raises(ValueError, match="dtype 'bf16': expected one of float32, bfloat16, float16"):
        config(dtype="bf16")
    with pytest.raises(ValueError, match="device 'gpu': not a torch device"):
        config(device="gpu")
    assert config(device="cuda:1", dtype="bfloat16").dtype == "bfloat16"  # checked here, bound at run time
