"""GRPO trainer: rollouts, rewards from ttaeval scorers, logging, checkpoint + exact resume."""

from __future__ import annotations

import json

import pytest
import torch

from resonate_train.grpo import GRPOConfig, GRPOTrainer
from resonate_train.model import fluxaudio_mini
from resonate_train.model.codec import MelCodec
from resonate_train.model.text import ClapMiniTextEncoder
from resonate_train.system import ResonateSystem, SamplingDefaults


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    torch.manual_seed(0)
    net = fluxaudio_mini().initialize_weights()
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.02)
    system = ResonateSystem(
        net.eval(), ClapMiniTextEncoder(), MelCodec(griffin_lim_iters=2), SamplingDefaults(1.0, 3, 3.0)
    )
    system.set_empty_text()
    return system.save(tmp_path_factory.mktemp("base") / "mini")


def _cfg(base, **kw) -> GRPOConfig:
    kw = {"steps": 3, **kw}
    return GRPOConfig(
        base=str(base),
        prompts_per_step=2,
        group_size=3,
        rollout_steps=3,
        checkpoint_every=2,
        rewards=["clap:mini@1.0", "signal#peak@0.1"],
        **kw,
    )


def _log(run) -> list[dict]:
    return [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]


def test_grpo_logs_flow_grpo_metrics_and_resumes_exactly(base, tmp_path):
    straight = tmp_path / "straight"
    GRPOTrainer(_cfg(base), straight, log=lambda _: None).train()
    full = _log(straight)
    assert [r["step"] for r in full] == [0, 1, 2]
    for key in (
        "reward_mean",
        "reward_std",
        "kl",
        "approx_kl",
        "clip_fraction",
        "zero_std_fraction",
        "reward/clap#clap",
        "reward/signal#peak",
    ):
        assert key in full[0]

    resumed = tmp_path / "resumed"
    GRPOTrainer(_cfg(base, steps=2), resumed, log=lambda _: None).train()
    trainer = GRPOTrainer(_cfg(base), resumed, log=lambda _: None)
    assert trainer.step == 2
    trainer.train()
    again = _log(resumed)
    assert [r["step"] for r in again] == [0, 1, 2]
    for a, b in zip(full, again):
        for key in ("loss", "policy_loss", "kl", "reward_mean", "grad_norm"):
            assert a[key] == pytest.approx(b[key], abs=1e-6), key
    final = ResonateSystem.load(straight / "final")
    changed = any(
        not torch.equal(p, q)
        for p, q in zip(final.network.parameters(), ResonateSystem.load(base).network.parameters())
    )
    assert changed


def test_failed_rewards_are_masked_not_zero(base, tmp_path, monkeypatch):
    from resonate_train import rewards as rewards_module

    real = rewards_module.Rewards.__call__

    def flaky(self, audio, rate, prompts):
        total, parts = real(self, audio, rate, prompts)
        total[0] = float("nan")  # one clip's scorer failed
        return total, parts

    monkeypatch.setattr(rewards_module.Rewards, "__call__", flaky)
    GRPOTrainer(_cfg(base, steps=1), tmp_path / "run", log=lambda _: None).train()
    rec = _log(tmp_path / "run")[0]
    assert rec["reward_failed"] == 2  # the first clip of each of the two rollout batches
    assert all(v == v for k, v in rec.items() if k != "reward_failed")  # no NaN leaked into the stats


def test_dpo_pairs_rank_by_the_scorer_and_training_resumes_exactly(base, tmp_path):
    from resonate_train.dpo import DPOConfig, DPOTrainer

    def cfg(steps):
        return DPOConfig(
            base=str(base),
            pair_prompts=4,
            samples_per_prompt=3,
            sample_steps=2,
            steps=steps,
            batch_size=4,
            checkpoint_every=2,
            reward="clap:mini",
        )

    trainer = DPOTrainer(cfg(3), tmp_path / "a", log=lambda _: None)
    pairs = trainer.make_pairs(0)
    assert (pairs.margin > 0).all() and pairs.winners.shape == pairs.losers.shape
    peak = trainer.reward.terms[0]
    assert peak.metric == "clap"
    trainer.train()
    first = _log(tmp_path / "a")
    assert first[0]["dpo_loss"] == pytest.approx(0.6931, abs=1e-3)  # policy = reference at step 0
    DPOTrainer(cfg(2), tmp_path / "b", log=lambda _: None).train()
    DPOTrainer(cfg(3), tmp_path / "b", log=lambda _: None).train()
    for a, b in zip(first, _log(tmp_path / "b")):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6)


def test_training_state_survives_a_crash_between_renames_and_trims_the_log(tmp_path):
    from resonate_train.training_state import LOG_NAME, load_state, save_state

    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    (tmp_path / LOG_NAME).write_text('{"step": 0}\n{"step": 1}\n')
    assert load_state(tmp_path, model, opt) == 0 and (tmp_path / LOG_NAME).read_text() == ""  # no checkpoint
    save_state(tmp_path, model, opt, 5, GRPOConfig())
    (tmp_path / "checkpoint").rename(tmp_path / "checkpoint.old")  # as if killed between the renames
    (tmp_path / LOG_NAME).write_text("".join(f'{{"step": {i}}}\n' for i in range(7)))
    assert load_state(tmp_path, model, opt) == 5
    assert [json.loads(x)["step"] for x in (tmp_path / LOG_NAME).read_text().splitlines()] == [0, 1, 2, 3, 4]


def test_trainer_configs_read_toml_with_flag_overrides_and_name_unknown_keys(tmp_path):
    from resonate_train.dpo import DPOConfig
    from resonate_train.pretrain import PretrainConfig

    f = tmp_path / "c.toml"
    f.write_text('steps = 7\nrewards = ["judge:mini#aqa@1.0"]\n')
    cfg = GRPOConfig.from_toml(f, seed=3, steps=None)
    assert (cfg.steps, cfg.seed, cfg.rewards) == (7, 3, ["judge:mini#aqa@1.0"])
    f.write_text("steps = 7\n")
    assert DPOConfig.from_toml(f).steps == PretrainConfig.from_toml(f).steps == 7
    f.write_text("stepz = 7\n")
    with pytest.raises(ValueError, match=r"unknown key.*stepz"):
        PretrainConfig.from_toml(f)
