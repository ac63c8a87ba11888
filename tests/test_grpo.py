"""GRPO trainer: rollouts, rewards from ttaeval scorers, logging, checkpoint + exact resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from helpers import one_torch_thread
from resonate_train.cli import app
from resonate_train.grpo import GRPOConfig, GRPOTrainer, reward_gain
from resonate_train.system import ResonateSystem
from resonate_train.training_state import EVAL_LOG_NAME, LOG_NAME


@pytest.fixture(scope="module")
def base(tiny_resonate):
    return tiny_resonate


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


def _log(run, name: str = LOG_NAME) -> list[dict]:
    return [json.loads(line) for line in (run / name).read_text().splitlines()]


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
    evals, evals_again = _log(straight, EVAL_LOG_NAME), _log(resumed, EVAL_LOG_NAME)
    assert [e["step"] for e in evals] == [e["step"] for e in evals_again] == [0, 3]  # before and after
    for a, b in zip(evals, evals_again):
        assert a["rewards"] == pytest.approx(b["rewards"], abs=1e-6)
    final = ResonateSystem.load(straight / "final")
    changed = any(
        not torch.equal(p, q)
        for p, q in zip(final.network.parameters(), ResonateSystem.load(base).network.parameters())
    )
    assert changed


def test_reward_gain_pairs_the_first_and_last_evaluation_over_prompts(base, tmp_path):
    run = tmp_path / "run"
    GRPOTrainer(
        _cfg(base, steps=2, eval_every=1, eval_prompts=5, eval_samples=2), run, log=lambda _: None
    ).train()
    evals = _log(run, EVAL_LOG_NAME)
    assert [e["step"] for e in evals] == [0, 1, 2]
    assert len(evals[0]["rewards"]) == 10 and len(set(evals[0]["prompt_ids"])) == 5
    gain = reward_gain(run)
    assert gain.n == 5
    # two clips per prompt each time: the paired mean is the difference of the overall means
    assert gain.mean == pytest.approx(evals[-1]["reward_mean"] - evals[0]["reward_mean"], abs=1e-6)
    assert gain.low <= gain.mean <= gain.high
    # the evaluation set and its noise do not depend on the run's seed: before training, same rewards
    other = tmp_path / "other"
    GRPOTrainer(_cfg(base, steps=1, seed=5, eval_every=1, eval_prompts=5), other, log=lambda _: None).train()
    assert _log(other, EVAL_LOG_NAME)[0]["rewards"] == pytest.approx(evals[0]["rewards"], abs=1e-9)


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


def test_overlap_rewards_samples_the_next_step_while_this_one_is_scored(base, tmp_path, monkeypatch):
    """overlap_rewards: step t+1's rollouts are sampled and sent for scoring before step t's update;
    step 0 is the on-policy step 0 exactly, later steps train on one-step-old rollouts."""
    from resonate_train import rewards as rewards_module

    events: list[str] = []
    real_submit = rewards_module.Rewards.submit
    monkeypatch.setattr(
        rewards_module.Rewards, "submit", lambda self, *a: events.append("score") or real_submit(self, *a)
    )
    logs = {}
    for overlap in (False, True):
        events.append(f"overlap={overlap}")
        trainer = GRPOTrainer(
            _cfg(base, steps=2, eval_every=0, overlap_rewards=overlap),
            tmp_path / str(overlap),
            log=lambda _: None,
        )
        real_step = trainer.opt.step
        trainer.opt.step = lambda *a, _step=real_step, **k: events.append("update") or _step(*a, **k)
        trainer.train()
        logs[overlap] = _log(tmp_path / str(overlap))
    on_policy = ["score", "score", "update", "update"] * 2  # each step: two rollout batches, then two updates
    overlapped = ["score"] * 4 + ["update"] * 4  # step 1's rollouts are scored before step 0's updates
    assert events == ["overlap=False", *on_policy, "overlap=True", *overlapped]
    on, off = logs[False], logs[True]
    for key in ("reward_mean", "loss", "kl", "clip_fraction", "grad_norm"):
        assert off[0][key] == pytest.approx(on[0][key], rel=1e-6, abs=1e-12), key
    assert off[1]["reward_mean"] != on[1]["reward_mean"]  # sampled before step 0's update
    assert all(v == v for k, v in off[1].items())


def test_two_reward_workers_train_exactly_as_one(base, tmp_path):
    """reward_workers only changes how many micro-batches are scored at once, never which reward a clip
    gets or the order the trainer reads them in."""
    from resonate_train.rewards import Rewards

    for workers in (1, 2):
        cfg = _cfg(base, steps=1, eval_every=0, reward_workers=workers)
        GRPOTrainer(cfg, tmp_path / str(workers), log=lambda _: None).train()
    one, two = ({k: v for k, v in _log(tmp_path / w)[0].items() if k != "seconds"} for w in "12")
    assert one == two
    with pytest.raises(ValueError, match="reward workers must be >= 1"):
        Rewards(["signal#peak"], workers=0)


def test_a_reward_process_trains_exactly_as_reward_threads(base, tmp_path):
    """reward_process moves the scorers to another process: the same rewards, the same update."""
    for process in (False, True):
        cfg = _cfg(base, steps=1, eval_every=0, reward_workers=2, reward_process=process)
        GRPOTrainer(cfg, tmp_path / str(process), log=lambda _: None).train()
    threads, process = (
        {k: v for k, v in _log(tmp_path / p)[0].items() if k != "seconds"} for p in ("False", "True")
    )
    assert threads == process


def test_a_reward_process_reports_its_errors_and_its_death():
    """A scorer that cannot load raises in the trainer with the process's message; a reward process
    that dies fails its pending and later batches instead of hanging the trainer."""
    from resonate_train.rewards import RewardProcess
    from ttaeval.io.prompts import Prompt

    with pytest.raises(ValueError, match="no metric 'nope'"):
        RewardProcess(["signal#nope"])
    rewards = RewardProcess(["signal#peak"])
    audio = np.stack([np.full(800, 0.5, np.float32), np.full(800, 0.25, np.float32)])
    prompts = [Prompt("a", "a beep"), Prompt("b", "a hum")]
    total, parts = rewards.submit(audio, 16000, prompts).result(timeout=60)
    assert total == pytest.approx([0.5, 0.25]) and list(parts) == ["signal#peak"]
    rewards._process.kill()
    with pytest.raises(RuntimeError, match="reward process"):
        rewards.submit(audio, 16000, prompts).result(timeout=60)
    rewards.close()


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


def test_dpo_runs_of_a_sweep_share_one_set_of_pairs_and_refuse_other_pair_settings(base, tmp_path):
    from dataclasses import replace

    from resonate_train.dpo import PAIRS_NAME, DPOConfig, DPOTrainer

    cfg = DPOConfig(
        base=str(base),
        pair_prompts=3,
        samples_per_prompt=2,
        sample_steps=2,
        steps=2,
        batch_size=2,
        reward="clap:mini",
    )
    DPOTrainer(cfg, tmp_path / "a", log=lambda _: None).train()
    assert (tmp_path / "a" / PAIRS_NAME).is_file()

    def no_sampling(self, round_):
        raise AssertionError("pairs were sampled again")

    reused = DPOTrainer(replace(cfg, pairs_from=str(tmp_path / "a")), tmp_path / "b", log=lambda _: None)
    reused.make_pairs = no_sampling.__get__(reused)
    reused.train()
    for a, b in zip(_log(tmp_path / "a"), _log(tmp_path / "b")):  # same pairs, same lr: the same run
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6)
    other_lr = DPOTrainer(replace(cfg, lr=1e-3, pairs_from=str(tmp_path / "a")), tmp_path / "c", log=print)
    assert torch.equal(other_lr.pairs.winners, reused.pairs.winners)
    with pytest.raises(ValueError, match=r"sample_steps: 2 there, 3 here"):
        DPOTrainer(replace(cfg, sample_steps=3, pairs_from=str(tmp_path / "a")), tmp_path / "d")
    with pytest.raises(FileNotFoundError, match="pairs_from"):
        DPOTrainer(replace(cfg, pairs_from=str(tmp_path / "nowhere")), tmp_path / "e")


def test_dpo_pair_prompts_beyond_the_prompt_limit_recur_evenly_with_new_noise(base, tmp_path):
    from collections import Counter

    from resonate_train.dpo import DPOConfig, DPOTrainer
    from ttaeval.io.prompts import load_prompts

    cfg = DPOConfig(
        base=str(base),
        prompt_limit=2,
        pair_prompts=5,
        samples_per_prompt=2,
        sample_steps=2,
        reward="clap:mini",
    )
    lines: list[str] = []
    pairs = DPOTrainer(cfg, tmp_path / "a", log=lines.append).make_pairs(0)
    assert "pairs: 10 of 10 clips sampled" in lines[-2]  # progress on the long pair sampling, then the pairs
    first_two = [p.text for p in load_prompts("synth:train")[:2]]
    assert sorted(Counter(pairs.texts).values()) == [2, 3] and set(pairs.texts) == set(first_two)
    by_text = {}
    for text, win in zip(pairs.texts, pairs.winners):
        by_text.setdefault(text, []).append(win)
    assert all(not torch.equal(w[0], w[1]) for w in by_text.values())  # each recurrence: new noise


def test_pair_sampling_killed_midway_resumes_to_the_same_pairs(base, tmp_path, monkeypatch):
    from resonate_train.dpo import PAIR_BATCH, PAIRS_NAME, PARTIAL_NAME, DPOConfig, DPOTrainer

    cfg = DPOConfig(base=str(base), prompt_limit=4, pair_prompts=9, samples_per_prompt=4, sample_steps=2,
                    reward="clap:mini", steps=1)  # fmt: skip
    assert cfg.pair_prompts * cfg.samples_per_prompt > PAIR_BATCH  # two batches
    whole = DPOTrainer(cfg, tmp_path / "whole", log=lambda _: None).make_pairs(0)

    killed = DPOTrainer(cfg, tmp_path / "killed", log=lambda _: None)
    sample, calls = killed.system.sample_latents, []

    def dies_on_the_second_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return sample(*args, **kwargs)

    monkeypatch.setattr(killed.system, "sample_latents", dies_on_the_second_batch)
    with pytest.raises(KeyboardInterrupt):
        killed._refresh_pairs()
    assert (tmp_path / "killed" / PARTIAL_NAME).is_file() and not (tmp_path / "killed" / PAIRS_NAME).exists()
    killed.lock.release()
    monkeypatch.undo()

    lines: list[str] = []
    resumed = DPOTrainer(cfg, tmp_path / "killed", log=lines.append)
    resumed._refresh_pairs()  # samples the second batch only
    assert lines[0].startswith("[2/2,") and "36 of 36 clips sampled" in lines[0], lines
    again = resumed.pairs
    assert again.texts == whole.texts and torch.equal(again.winners, whole.winners)
    assert torch.equal(again.losers, whole.losers)
    # the margins to float rounding: clap-mini embeds a call's texts together, and the calls differ
    assert torch.allclose(again.margin, whole.margin, rtol=1e-6, atol=1e-7)
    assert (tmp_path / "killed" / PAIRS_NAME).is_file() and not (tmp_path / "killed" / PARTIAL_NAME).exists()


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


@pytest.mark.slow
def test_torchrun_two_processes_match_the_single_process_run(base, tmp_path):
    """Data parallel GRPO: each process samples half of every rollout batch, rewards are gathered
    for the group statistics, gradients summed: the same records and weights as one process
    sampling the same micro-batches (equal shapes give equal floating-point results)."""
    config = tmp_path / "grpo.toml"
    config.write_text(
        f'base = "{base.as_posix()}"\nrewards = ["clap:mini@1.0", "signal#peak@0.1"]\n'
        "steps = 2\nprompts_per_step = 2\ngroup_size = 4\nrollout_batches = 2\nrollout_steps = 3\n"
        "eval_every = 1\neval_prompts = 3\neval_samples = 2\nmicro_batch = 2\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    args = ["-m", "resonate_train", "grpo", "--config", str(config), "--out"]
    with one_torch_thread():  # the single process: this one, computing as each rank does
        single = CliRunner().invoke(app, [*args[2:], str(tmp_path / "single")])
    assert single.exit_code == 0, single.output[-3000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    both = subprocess.run(
        [*torchrun, *args, str(tmp_path / "ddp")], env=env, capture_output=True, text=True, timeout=600
    )
    assert both.returncode == 0, both.stderr[-3000:]

    one, two = _log(tmp_path / "single"), _log(tmp_path / "ddp")
    assert [r["step"] for r in two] == [0, 1]
    for a, b in zip(one, two):
        for key in (
            "reward_mean",
            "reward_std",
            "zero_std_fraction",
            "reward/clap#clap",
            "reward/signal#peak",
        ):
            assert a[key] == pytest.approx(b[key], abs=1e-6), key
        for key in ("loss", "policy_loss", "kl", "approx_kl", "grad_norm", "clip_fraction"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), key
    for a, b in zip(_log(tmp_path / "single", EVAL_LOG_NAME), _log(tmp_path / "ddp", EVAL_LOG_NAME)):
        assert a["prompt_ids"] == b["prompt_ids"]
        assert a["rewards"] == pytest.approx(b["rewards"], abs=1e-6)
    w1 = ResonateSystem.load(tmp_path / "single" / "final").network.state_dict()
    w2 = ResonateSystem.load(tmp_path / "ddp" / "final").network.state_dict()
    assert all(torch.allclose(w1[k], w2[k], atol=1e-5) for k in w1)
    assert "evaluation reward gain" in single.output and "evaluation reward gain" in both.stdout


CONFIGS = Path(__file__).parents[1] / "resonate_train" / "configs"


@pytest.mark.parametrize("path", sorted([*CONFIGS.glob("grpo_*.toml"), *CONFIGS.glob("dpo_*.toml")]))
def test_shipped_recipes_parse_and_name_real_rewards(path):
    from resonate_train.dpo import DPOConfig
    from resonate_train.rewards import RewardTerm
    from resonate_train.system import RESONATE_MINI

    cfg = (DPOConfig if path.name.startswith("dpo") else GRPOConfig).from_toml(path)
    assert (Path(__file__).parents[1] / cfg.base).resolve() == RESONATE_MINI.resolve()
    for spec in cfg.rewards if isinstance(cfg, GRPOConfig) else [cfg.reward]:
        RewardTerm.parse(spec)  # the scorer exists and has the metric
    assert f"--config resonate_train/configs/{path.name}" in path.read_text()  # the command is documented


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("compare_*.toml")))
def test_shipped_studies_name_shipped_systems_scorers_and_training_logs(path, monkeypatch):
    from resonate_train.compare import CompareConfig
    from ttaeval.generators import get_generator
    from ttaeval.scorers import get_scorer

    root = Path(__file__).parents[1]
    monkeypatch.chdir(root)  # the study's paths are relative to the repository root
    cfg = CompareConfig.from_toml(path)
    assert f"--config resonate_train/configs/{path.name}" in path.read_text()
    for spec in cfg.scorers:
        get_scorer(spec)
    for spec in cfg.systems.values():
        assert get_generator(spec).identity  # reads the checkpoint: a missing one is an error here
    assert {cfg.baseline, cfg.reference} <= set(cfg.systems)
    for claim in cfg.claims:
        assert {claim.system, claim.baseline} <= set(cfg.systems), claim.text
    assert set(cfg.trained_on) == set(cfg.training) == set(cfg.systems) - {cfg.baseline, cfg.reference}
    for folder in cfg.training.values():
        assert (root / folder / "train_log.jsonl").is_file()


def _recheck_and_study(name: str):
    """A recheck config and the study's, after checking the recheck scores with the study's suite, seed,
    batches and (a subset of its) scorers: its clips share their noise with the study's (paired)."""
    from resonate_train.compare import CompareConfig
    from ttaeval.runner import RunConfig

    recheck = RunConfig.from_toml(CONFIGS / name)
    study = CompareConfig.from_toml(CONFIGS / "compare_mini.toml")
    same = ("suite", "seed", "samples_per_prompt", "batch_size", "limit")
    assert {k: getattr(recheck, k) for k in same} == {k: getattr(study, k) for k in same}
    assert set(recheck.scorers) <= set(study.scorers)
    return recheck, study


@pytest.mark.parametrize(
    ("recipe", "trained"), [("grpo_clap", "runs/grpo_clap"), ("dpo_clap", "runs/recheck/dpo_clap")]
)
def test_the_recheck_runs_pair_clip_for_clip_with_the_study(recipe: str, trained: str):
    """recheck_{recipe}.toml scores a re-trained recipe with the study's suite, seed and batches, so its
    clips share their noise with the shipped checkpoint's in runs/compare_mini (issue 8)."""
    recheck, _ = _recheck_and_study(f"recheck_{recipe}.toml")
    assert recheck.systems == {f"{recipe}_rerun": f"resonate:{trained}/final"}


def test_the_three_recipes_recheck_scores_each_rerun_beside_its_shipped_checkpoint():
    """recheck_recipes.toml: each re-run next to the shipped checkpoint the study scores, with the study's
    suite, seed and batches (same noise per prompt: paired)."""
    recheck, study = _recheck_and_study("recheck_recipes.toml")
    recipes = ("dpo_clap_sft", "grpo_judge_aqa", "grpo_judge_total")
    for recipe in recipes:
        assert recheck.systems[recipe] == study.systems[recipe]
        assert recheck.systems[f"{recipe}_rerun"] == f"resonate:runs/recheck/{recipe}/final"
    assert len(recheck.systems) == 2 * len(recipes)


@pytest.mark.parametrize("path", sorted([*CONFIGS.glob("grpo_*.toml"), *CONFIGS.glob("dpo_*.toml")]))
def test_each_shipped_recipe_still_describes_the_run_that_made_its_checkpoint(path):
    """A changed default (DPO's lr and pair steps became the official recipe's) must not silently
    change a shipped recipe: loaded today, each gives the config its checkpoint was trained with
    (fields added since, which the run did not have, aside)."""
    from dataclasses import asdict

    from resonate_train.dpo import DPOConfig

    kind = "dpo" if path.name.startswith("dpo") else "grpo"
    cfg = asdict((DPOConfig if kind == "dpo" else GRPOConfig).from_toml(path))
    shipped = json.loads((CONFIGS.parent / "weights" / path.stem / f"{kind}_config.json").read_text())
    if (
        "rewards" in shipped
    ):  # the judge these runs were trained with was renamed when judge-mini was retrained
        shipped["rewards"] = [r.replace("judge:mini#", "judge:mini-v1#") for r in shipped["rewards"]]
    assert {k: cfg[k] for k in shipped} == shipped


def test_study2_recipes_load_with_one_budget_and_the_sweep_shares_the_seed_0_pairs():
    from dataclasses import asdict

    from resonate_train.compare import CompareConfig
    from resonate_train.dpo import PAIR_FIELDS, DPOConfig
    from ttaeval.runner import RunConfig

    study = CONFIGS / "study2"
    grpo = [GRPOConfig.from_toml(p) for p in sorted(study.glob("grpo_*.toml"))]
    dpo = DPOConfig.from_toml(study / "dpo_clap.toml")
    assert {(c.prompt_limit, c.steps * c.prompts_per_step * c.group_size) for c in grpo} == {(64, 2560)}
    assert (dpo.prompt_limit, dpo.pair_prompts * dpo.samples_per_prompt) == (64, 2560)
    for path in sorted(study.glob("sweep_*.toml")):
        if path.name == "sweep_eval.toml":
            assert RunConfig.from_toml(path).suite == "synth:validation"
            continue
        sweep = DPOConfig.from_toml(path)
        assert sweep.pairs_from == "runs/study2/dpo_clap_s0"
        assert {k: asdict(sweep)[k] for k in PAIR_FIELDS} == {k: asdict(dpo)[k] for k in PAIR_FIELDS}
    compare = CompareConfig.from_toml(study / "compare.toml")
    assert set(compare.recipes) == {"dpo_clap", "grpo_clap", "grpo_judge_aqa", "grpo_judge_total"}
    assert all(len(seeds) == 3 for seeds in compare.recipes.values())
    for name in (system for seeds in compare.recipes.values() for system in seeds):  # shipped, not runs/
        assert compare.systems[name] == f"resonate:resonate_train/weights/study2/{name}"
        assert compare.training[name] == f"resonate_train/weights/study2/{name}"
