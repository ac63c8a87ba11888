"""Online GRPO for flow matching (Flow-GRPO on 1-D audio latents), rewards from ttaeval scorers.

One step: draw ``prompts_per_step`` prompts, roll out ``group_size`` clips each with the SDE sampler
(recording every step's sample and log-prob), decode and score them (in a background thread while
the next rollout batch is sampled), turn rewards into group-relative advantages, then for every
denoising step recompute the log-prob under the current weights and take the PPO-clipped loss plus
beta times the KL to the frozen reference (the starting checkpoint). One optimiser step per rollout batch.

Everything random is seeded from (seed, step), so a run resumed from its checkpoint continues
exactly as the uninterrupted run would.

    resonate-train grpo --base ckpt/resonate-mini --reward clap:mini@1.0 --out runs/grpo-clap
"""

from __future__ import annotations

import copy
import itertools
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from resonate_train.config_file import config_from_toml
from resonate_train.objectives import group_advantages, grpo_loss
from resonate_train.rewards import Rewards
from resonate_train.sampling import guided, kl_to_reference, sde_step, timesteps
from resonate_train.system import ResonateSystem
from resonate_train.training_state import LOG_NAME, load_state, save_state


@dataclass
class GRPOConfig:
    """GRPO knobs. Defaults are the mini world's (they learn on 2 CPU cores); the paper's are given
    in each field's note."""

    base: str = ""
    """The starting checkpoint folder, also the frozen KL reference."""
    rewards: list[str] = field(default_factory=lambda: ["clap:mini@1.0"])
    """Reward specs ``SCORER[#METRIC][@WEIGHT]`` (paper: the LALM judge's yes-probability)."""
    prompts: str = "synth:train"
    """Training prompts (any ttaeval prompt source)."""
    steps: int = 40
    """Training steps (each: one rollout of every group, then one optimiser step per rollout batch)."""
    prompts_per_step: int = 4
    """Prompts (groups) per step."""
    group_size: int = 8
    """Clips per prompt (paper: 24)."""
    rollout_batches: int = 2
    """Rollout batches per step; each batch's rewards are computed while the next one is sampled."""
    rollout_steps: int = 10
    """SDE denoising steps per rollout (paper: 10)."""
    guidance: float = 4.5
    """Classifier-free guidance during rollouts and training (paper: 4.5)."""
    noise_level: float = 0.7
    """The SDE's a: sigma_t = a sqrt(t / (1 - t)) (paper: 0.7)."""
    beta: float = 0.04
    """KL weight (paper: 0.04)."""
    clip_range: float = 1e-3
    """PPO ratio clip (paper: 1e-4)."""
    adv_clip: float = 5.0
    """Advantage clip (paper: 5)."""
    global_std: bool = True
    """Advantages: per-prompt mean, std over the whole step (paper) rather than per group."""
    lr: float = 3e-4
    """AdamW learning rate (paper: 1e-4)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient clipping."""
    duration: float | None = None
    """Seconds per rollout clip (default: the checkpoint's)."""
    seed: int = 0
    """Seed: prompts and noise of step s come from (seed, s)."""
    checkpoint_every: int = 10
    """Steps between checkpoints (and always at the end)."""

    @classmethod
    def from_toml(cls, path: str | Path, **overrides: object) -> GRPOConfig:
        return config_from_toml(cls, path, **overrides)


@dataclass
class Rollout:
    """One batch of trajectories: samples x_0..x_K (K+1, B, T, C), step log-probs (K, B), times."""

    xs: torch.Tensor
    log_probs: torch.Tensor
    times: list[float]
    prompt_index: torch.Tensor


class GRPOTrainer:
    def __init__(self, cfg: GRPOConfig, out: str | Path, log=print) -> None:
        from ttaeval.prompts import load_prompts

        self.cfg, self.out, self.log = cfg, Path(out), log
        self.system = ResonateSystem.load(cfg.base)
        self.policy = self.system.network
        self.reference = copy.deepcopy(self.policy).requires_grad_(False).eval()
        self.prompts = load_prompts(cfg.prompts)
        self.rewards = Rewards(cfg.rewards)
        self.duration = cfg.duration or self.system.defaults.duration
        self.opt = torch.optim.AdamW(self.policy.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.step = 0
        self._resume()

    def _resume(self) -> None:
        self.step = load_state(self.out, self.policy, self.opt)
        if self.step:
            self.log(f"resumed at step {self.step} from {self.out / 'checkpoint'}")

    # -- one step ------------------------------------------------------------------------------
    @torch.no_grad()
    def rollout(self, prompt_idx: list[int], gen: torch.Generator) -> Rollout:
        cfg, net = self.cfg, self.policy
        texts = [self.prompts[i].text for i in prompt_idx]
        cond, uncond = self.system.conditions(texts)
        frames = self.system.codec.frames(self.duration)
        x = torch.randn(len(texts), frames, net.config.latent_dim, generator=gen)
        ts = timesteps(cfg.rollout_steps).tolist()
        xs, logps = [x], []
        velocity = guided(net, cond, uncond, cfg.guidance)
        for t, t_next in itertools.pairwise(ts):
            step = sde_step(
                x,
                velocity(x, torch.full((len(x),), t)),
                t,
                t_next,
                a=cfg.noise_level,
                t_first_next=ts[1],
                generator=gen,
            )
            x = step.x_next
            xs.append(x)
            logps.append(step.log_prob)
        return Rollout(torch.stack(xs), torch.stack(logps), ts, torch.tensor(prompt_idx))

    def train_step(self) -> dict:
        cfg, start = self.cfg, time.perf_counter()
        rng = np.random.default_rng([cfg.seed, self.step])
        gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
        chosen = rng.choice(len(self.prompts), cfg.prompts_per_step, replace=False)
        per_batch = np.array_split(np.repeat(chosen, cfg.group_size), cfg.rollout_batches)
        self.policy.eval()
        rollouts, pending = [], []
        for idx in per_batch:  # score batch j in the background while batch j+1 is sampled
            ro = self.rollout(idx.tolist(), gen)
            audio = self.system.decode(ro.xs[-1], self.duration)
            pending.append(
                self.rewards.submit(audio, self.system.sample_rate, [self.prompts[i] for i in idx])
            )
            rollouts.append(ro)
        results = [p.result() for p in pending]
        reward = torch.tensor(np.concatenate([r[0] for r in results]), dtype=torch.float32)
        groups = torch.cat([ro.prompt_index for ro in rollouts])
        adv = group_advantages(reward, groups, clip=cfg.adv_clip, global_std=cfg.global_std)
        stats = self._optimise(rollouts, adv)
        ok = torch.isfinite(reward)
        finite = reward[ok]
        zero_std = [float(reward[(groups == g) & ok].std(unbiased=False)) == 0 for g in torch.unique(groups)]
        record = {
            "step": self.step,
            "reward_mean": float(finite.mean()) if len(finite) else float("nan"),
            "reward_std": float(finite.std(unbiased=False)) if len(finite) else float("nan"),
            "reward_failed": int((~torch.isfinite(reward)).sum()),
            "zero_std_fraction": float(np.mean(zero_std)),
            **{
                f"reward/{k}": float(np.nanmean(np.concatenate([r[1][k] for r in results])))
                for k in results[0][1]
            },
            **stats,
            "seconds": time.perf_counter() - start,
        }
        self.step += 1
        return record

    def _optimise(self, rollouts: list[Rollout], adv: torch.Tensor) -> dict:
        """One optimiser step per rollout batch (its denoising steps' gradients accumulated), so
        later batches are scored by weights that moved: the ratio and its clip come into play."""
        cfg = self.cfg
        self.policy.train()
        sums = {"loss": 0.0, "policy_loss": 0.0, "kl": 0.0, "approx_kl": 0.0, "clip_fraction": 0.0}
        offset, n_terms, norms = 0, 0, []
        for ro in rollouts:
            a = adv[offset : offset + ro.xs.shape[1]]
            offset += ro.xs.shape[1]
            texts = [self.prompts[int(i)].text for i in ro.prompt_index]
            cond, uncond = self.system.conditions(texts)
            v_pol = guided(self.policy, cond, uncond, cfg.guidance)
            v_ref = guided(self.reference, cond, uncond, cfg.guidance)
            k_steps = len(ro.times) - 1
            self.opt.zero_grad(set_to_none=True)
            for k in range(k_steps):
                t, t_next, x, x_next = ro.times[k], ro.times[k + 1], ro.xs[k], ro.xs[k + 1]
                tt = torch.full((len(x),), t)
                kw = {"a": cfg.noise_level, "t_first_next": ro.times[1], "x_next": x_next}
                now = sde_step(x, v_pol(x, tt), t, t_next, **kw)
                with torch.no_grad():
                    ref = sde_step(x, v_ref(x, tt), t, t_next, **kw)
                kl = kl_to_reference(now.mean, ref.mean, now.std)
                out = grpo_loss(
                    now.log_prob, ro.log_probs[k], a, clip_range=cfg.clip_range, kl=kl, beta=cfg.beta
                )
                (out.loss / k_steps).backward()
                for name in sums:
                    sums[name] += getattr(out, name).item()
                n_terms += 1
            norms.append(float(torch.nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm)))
            self.opt.step()
        return {**{k: v / n_terms for k, v in sums.items()}, "grad_norm": float(np.mean(norms))}

    def train(self) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "grpo_config.json").write_text(json.dumps(asdict(self.cfg), indent=1) + "\n")
        with (self.out / LOG_NAME).open("a") as logf:
            while self.step < self.cfg.steps:
                rec = self.train_step()
                logf.write(json.dumps(rec) + "\n")
                logf.flush()
                self.log(
                    f"step {rec['step']}: reward {rec['reward_mean']:.4f} ± {rec['reward_std']:.4f}, "
                    f"kl {rec['kl']:.2e}, clip {rec['clip_fraction']:.2f}, {rec['seconds']:.1f} s"
                )
                if self.step % self.cfg.checkpoint_every == 0 or self.step == self.cfg.steps:
                    save_state(self.out, self.policy, self.opt, self.step, self.cfg)
        self.policy.eval()
        return self.system.save(self.out / "final")
