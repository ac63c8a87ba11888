"""Online GRPO for flow matching (Flow-GRPO on 1-D audio latents), rewards from ttaeval scorers.

One step: draw ``prompts_per_step`` prompts, roll out ``group_size`` clips each with the SDE sampler
(recording every step's sample and log-prob), decode and score them (each micro-batch in a
background thread while the next is sampled), turn rewards into group-relative advantages, then for
every denoising step recompute the log-prob under the current weights and take the PPO-clipped loss
plus beta times the KL to the frozen reference (the starting checkpoint). One optimiser step per
rollout batch. A fixed evaluation set is scored every ``eval_every`` steps (``eval_log.jsonl``).

Everything random is seeded from (seed, step, clip), so a run resumed from its checkpoint continues
exactly as the uninterrupted run would, and N processes under torchrun make the single process's
update.

    resonate-train grpo --base ckpt/resonate-mini --reward clap:mini@1.0 --out runs/grpo-clap
    torchrun --nproc-per-node 2 -m resonate_train grpo --config grpo.toml --out runs/grpo-clap
"""

from __future__ import annotations

import copy
import itertools
import json
import time
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from resonate_train.config_file import config_from_toml
from resonate_train.objectives import group_advantages, grpo_loss
from resonate_train.reporting import Progress, Reporter, check_report_to
from resonate_train.rewards import RewardProcess, Rewards
from resonate_train.sampling import guided, in_precision, kl_to_reference, sde_step, timesteps
from resonate_train.system import ResonateSystem
from resonate_train.training_state import EVAL_LOG_NAME, LOG_NAME, load_state, lock_run, save_state
from ttaeval.devices import setup_process
from ttaeval.metrics.stats import PairedDifference, paired_difference, per_prompt_means

EVAL_SET_SEED = 0xE7A1
"""Draws the evaluation prompts and noise: fixed, so runs with different seeds share them."""


@dataclass
class GRPOConfig:
    """GRPO knobs. Defaults are the mini world's (they learn on 2 CPU cores); the paper's are given
    in each field's note."""

    base: str = ""
    """The starting checkpoint folder, also the frozen KL reference."""
    rewards: list[str] = field(default_factory=lambda: ["clap:mini@1.0"])
    """Reward specs ``SCORER[#METRIC][@WEIGHT]`` (paper: the LALM judge's yes-probability)."""
    reward_weights: list[float] = field(default_factory=list)
    """One weight per reward, as TRL's ``reward_weights`` (empty: each spec's ``@WEIGHT``, default 1;
    a spec may not carry a weight when this is given)."""
    prompts: str = "synth:train"
    """Training prompts (any ttaeval prompt source)."""
    prompt_limit: int = 0
    """Train on the source's first N prompts only (0: all of them): a small set whose prompts recur,
    for short runs whose training reward can move within minutes."""
    steps: int = 40
    """Training steps (each: one rollout of every group, then one optimiser step per rollout batch)."""
    prompts_per_step: int = 4
    """Prompts (groups) per step."""
    group_size: int = 8
    """Clips per prompt (paper: 24)."""
    rollout_batches: int = 2
    """Rollout batches per step; each batch's rewards are computed while the next one is sampled."""
    micro_batch: int = 0
    """Clips per forward pass when sampling and training (0: a process's whole share of a rollout
    batch at once); bounds memory like Flow-GRPO's per-device batch size. Gradients of a rollout
    batch's micro-batches (and processes) are summed, each weighted by its share of the batch."""
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
    lr: float = 1e-4
    """AdamW learning rate (paper: 1e-4; on the mini model 2e-4 and 3e-4 raised the reward less
    steadily or lowered it)."""
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
    overlap_rewards: bool = False
    """Sample the next step's rollouts while this step's rewards are scored, so a slow reward (an
    LALM judge on another device or server) costs max(sampling + training, scoring) a step instead
    of their sum. One step off-policy: those rollouts come from the weights before this step's
    update (their log-probs too, so the PPO ratio corrects for it; its clip then also acts on a
    step's first update: watch ``clip_fraction`` with a tight ``clip_range``). A resumed run samples
    its first step with the checkpoint's weights, so it is not identical to the uninterrupted run."""
    reward_workers: int = 1
    """Micro-batches scored at once. 1 suits a reward computed on this machine (a second thread would
    only compete for its cores); a remote judge (``judge:http``) gains from 2: the next micro-batch's
    requests fill the concurrency slots the last round of the previous one leaves idle."""
    reward_process: bool = False
    """Score rewards in a separate (spawned) process, with its own copy of the scorers and
    ``reward_workers`` threads, instead of threads of the trainer's process: a reward's Python work
    (``judge:http`` encoding clips and reading replies) then cannot hold up sampling and training on
    the trainer's interpreter lock. Same rewards either way; costs the process's start-up (seconds),
    and a script that starts training needs the usual ``if __name__ == "__main__":`` guard (a spawned
    process imports the main script; ``resonate-train`` and ``python -m resonate_train`` need none)."""
    eval_every: int = 10
    """Steps between rewards of the fixed evaluation set (0: none); also before the first step and
    after the last, so a run's reward gain is measured on the same prompts and noise."""
    eval_prompts: int = 32
    """Prompts in the evaluation set (drawn once from ``prompts``, the same for every seed)."""
    eval_samples: int = 2
    """Clips per evaluation prompt (SDE sampler as in rollouts, fixed noise)."""
    device: str = "auto"
    """Where the policy, the reference and sampling compute: ``auto`` (the GPU when there is one),
    ``cpu``, ``cuda``. Under torchrun each rank takes ``cuda:LOCAL_RANK`` (NCCL between them). Reward
    scorers whose spec sets no device compute there too. Noise is drawn on the CPU from each clip's
    seed, so a clip's noise is the same on every device."""
    dtype: str = "float32"
    """Precision of the network's forward passes: ``bfloat16`` runs them under autocast (paper-scale
    models on GPUs); weights, optimiser state, log-probs, KL and losses stay float32."""
    report_to: str = "none"
    """Where the logged scalars also go: ``none``, ``tensorboard`` (``OUT/tensorboard``) or ``wandb``
    (the optional extras of the same names); the JSONL logs are written either way."""

    def __post_init__(self) -> None:
        from ttaeval.devices import check_device_name, resolve_dtype

        check_device_name(self.device)
        resolve_dtype(self.dtype)
        check_report_to(self.report_to)
        if self.reward_weights and len(self.reward_weights) != len(self.rewards):
            raise ValueError(f"{len(self.reward_weights)} reward_weights for {len(self.rewards)} rewards")

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
    positions: np.ndarray | None = None
    """Where these clips sit in the step's request list."""
    batch: int = 0
    """The rollout batch (optimiser step) they belong to."""


class GRPOTrainer:
    """Online GRPO on one process or data parallel under ``torchrun`` (gloo on CPU, NCCL on GPU; each
    rank bound to its own GPU by ``ttaeval.devices.setup_process``, as ``ttaeval run`` is).

    With N processes every one draws the same step plan (prompts and one noise seed per clip) and
    samples and scores its own slice of each rollout batch; the rewards are gathered so every
    process computes the step's group statistics over all clips, and the gradients are summed
    (each slice weighted by its share of the batch), so the update is the single process's.
    """

    def __init__(self, cfg: GRPOConfig, out: str | Path, log=print) -> None:
        from ttaeval.io.prompts import load_prompts

        proc = setup_process(cfg.device)  # before any model: rank R computes on cuda:LOCAL_RANK
        self.rank, self.world, self.device = proc.rank, proc.world, proc.device
        self.cfg, self.out = cfg, Path(out)
        self.log = log if self.rank == 0 else (lambda _msg: None)
        self.system = ResonateSystem.load(cfg.base, str(self.device))
        self.policy = self.system.network
        self.reference = copy.deepcopy(self.policy).requires_grad_(False).eval()
        self.prompts = load_prompts(cfg.prompts)[: cfg.prompt_limit or None]
        rewards = RewardProcess if cfg.reward_process else Rewards
        self.rewards = rewards(
            cfg.rewards,
            workers=cfg.reward_workers,
            device=str(self.device),
            weights=cfg.reward_weights or None,
        )
        self.duration = cfg.duration or self.system.defaults.duration
        self.opt = torch.optim.AdamW(self.policy.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.lock = lock_run(self.out) if self.rank == 0 else None  # before reading the checkpoint
        self.step = load_state(self.out, self.policy, self.opt, trim_logs=self.rank == 0)
        self._next: tuple[list[Rollout], list[Future]] | None = None  # overlap_rewards' sampled next step
        if self.step:
            self.log(f"resumed at step {self.step} from {self.out / 'checkpoint'}")

    # -- sampling and scoring ------------------------------------------------------------------
    @torch.no_grad()
    def rollout(self, prompt_idx: list[int], seeds: list[int]) -> Rollout:
        """SDE trajectories; clip i's starting noise and every step's noise come from ``seeds[i]``
        alone, so a clip is the same whichever batch or process samples it."""
        cfg, net, dev = self.cfg, self.policy, self.device
        cond, uncond = self.system.conditions([self.prompts[i].text for i in prompt_idx])
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        shape = (self.system.codec.frames(self.duration), net.config.latent_dim)
        x = torch.stack([torch.randn(shape, generator=g) for g in gens]).to(dev)
        ts = timesteps(cfg.rollout_steps).tolist()
        xs, logps = [x], []
        velocity = guided(in_precision(net, cfg.dtype), cond, uncond, cfg.guidance)
        for t, t_next in itertools.pairwise(ts):
            noise = torch.stack([torch.randn(shape, generator=g) for g in gens]).to(dev)
            step = sde_step(
                x, velocity(x, torch.full((len(x),), t, device=dev)), t, t_next,
                a=cfg.noise_level, t_first_next=ts[1], noise=noise,
            )  # fmt: skip
            x = step.x_next
            xs.append(x)
            logps.append(step.log_prob)
        return Rollout(torch.stack(xs), torch.stack(logps), ts, torch.tensor(prompt_idx))

    def _score(self, ro: Rollout) -> Future:
        audio = self.system.decode(ro.xs[-1], self.duration)
        prompts = [self.prompts[int(i)] for i in ro.prompt_index]
        return self.rewards.submit(audio, self.system.sample_rate, prompts)

    def _sample_batches(
        self, idx: np.ndarray, seeds: np.ndarray, n_batches: int
    ) -> tuple[list[Rollout], torch.Tensor, dict[str, np.ndarray]]:
        """Sample this process's share of each of ``n_batches`` batches cut from the request list,
        micro-batch by micro-batch, each scored in the background while the next is sampled.
        Returns this process's rollouts and the rewards of the whole list, gathered from every
        process (NaN where a scorer failed)."""
        return self._collect(*self._launch(idx, seeds, n_batches), len(idx))

    def _launch(
        self, idx: np.ndarray, seeds: np.ndarray, n_batches: int
    ) -> tuple[list[Rollout], list[Future]]:
        """Sample every micro-batch of this process's share; each one's rewards are being scored in
        the background (in order) when this returns."""
        rollouts, pending = [], []
        for b, batch in enumerate(np.array_split(np.arange(len(idx)), n_batches)):
            mine = np.array_split(batch, self.world)[self.rank]
            size = self.cfg.micro_batch or max(1, len(mine))
            for part in np.split(mine, range(size, len(mine), size)):
                if len(part):
                    ro = self.rollout(idx[part].tolist(), seeds[part].tolist())
                    ro.positions, ro.batch = part, b
                    pending.append(self._score(ro))
                    rollouts.append(ro)
        return rollouts, pending

    def _collect(
        self, rollouts: list[Rollout], pending: list[Future], n: int
    ) -> tuple[list[Rollout], torch.Tensor, dict[str, np.ndarray]]:
        """Wait for ``_launch``'s rewards and gather them from every process."""
        results = [p.result() for p in pending]
        local = [(ro.positions, r[0], r[1]) for ro, r in zip(rollouts, results)]
        reward = np.full(n, np.nan)
        parts: dict[str, np.ndarray] = {}
        for gathered in _all_gather(local, self.world):
            for pos, values, terms in gathered:
                reward[pos] = values
                for k, v in terms.items():
                    parts.setdefault(k, np.full(n, np.nan))[pos] = v
        return rollouts, torch.tensor(reward, dtype=torch.float32), parts

    # -- one step ------------------------------------------------------------------------------
    def _plan(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Step ``step``'s prompt per clip (``prompts_per_step`` groups) and each clip's noise seed."""
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, step])
        chosen = rng.choice(len(self.prompts), cfg.prompts_per_step, replace=False)
        idx = np.repeat(chosen, cfg.group_size)
        return idx, rng.integers(2**62, size=len(idx))

    def train_step(self) -> dict:
        cfg, start = self.cfg, time.perf_counter()
        idx, seeds = self._plan(self.step)
        self.policy.eval()
        if cfg.overlap_rewards:
            launched = self._next or self._launch(idx, seeds, cfg.rollout_batches)
            self._next = None
            if self.step + 1 < cfg.steps:  # the next step's rollouts, sampled while these are scored
                self._next = self._launch(*self._plan(self.step + 1), cfg.rollout_batches)
            rollouts, reward, parts = self._collect(*launched, len(idx))
        else:
            rollouts, reward, parts = self._sample_batches(idx, seeds, cfg.rollout_batches)
        groups = torch.from_numpy(idx)
        adv = group_advantages(reward, groups, clip=cfg.adv_clip, global_std=cfg.global_std)
        stats = self._optimise(rollouts, adv)
        ok = torch.isfinite(reward)
        finite = reward[ok]
        zero_std = [float(reward[(groups == g) & ok].std(unbiased=False)) == 0 for g in torch.unique(groups)]
        record = {
            "step": self.step,
            "reward_mean": float(finite.mean()) if len(finite) else float("nan"),
            "reward_std": float(finite.std(unbiased=False)) if len(finite) else float("nan"),
            "reward_failed": int((~ok).sum()),
            "zero_std_fraction": float(np.mean(zero_std)),
            **{f"reward/{k}": float(np.nanmean(v)) for k, v in parts.items()},
            **stats,
            "seconds": time.perf_counter() - start,
        }
        self.step += 1
        return record

    def _optimise(self, rollouts: list[Rollout], adv: torch.Tensor) -> dict:
        """One optimiser step per rollout batch (its denoising steps' gradients accumulated), so
        later batches are scored by weights that moved: the ratio and its clip come into play.

        A micro-batch's loss is its mean times its share of the batch's finite advantages, and the
        gradients are summed over micro-batches and processes: the gradient of the batch's mean."""
        cfg = self.cfg
        self.policy.train()
        names = ("loss", "policy_loss", "kl", "approx_kl", "clip_fraction")
        sums = torch.zeros(len(names), dtype=torch.float64)
        batches = np.array_split(np.arange(len(adv)), cfg.rollout_batches)
        norms = []
        for b, batch in enumerate(batches):
            self.opt.zero_grad(set_to_none=True)
            finite_in_batch = max(1, int(torch.isfinite(adv[batch]).sum()))
            for ro in (r for r in rollouts if r.batch == b):
                a = adv[ro.positions]
                earlier = [p.grad for p in self.policy.parameters()]
                self.opt.zero_grad(set_to_none=True)
                sums += self._accumulate(ro, a, int(torch.isfinite(a).sum()) / finite_in_batch, names)
                _add_grads(self.policy, earlier)
            _all_reduce_grads(self.policy, self.world)
            norms.append(float(torch.nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm)))
            self.opt.step()
        if self.world > 1:  # on the device: NCCL reduces GPU tensors only
            sums = sums.to(self.device)
            torch.distributed.all_reduce(sums)
            sums = sums.cpu()
        means = (sums / len(batches)).tolist()
        return {**dict(zip(names, means)), "grad_norm": float(np.mean(norms))}

    def _accumulate(
        self, ro: Rollout, adv: torch.Tensor, share: float, names: tuple[str, ...]
    ) -> torch.Tensor:
        """Backpropagate one micro-batch's loss over every denoising step (weighted by ``share``);
        returns the share-weighted step means of the logged quantities."""
        cfg = self.cfg
        cond, uncond = self.system.conditions([self.prompts[int(i)].text for i in ro.prompt_index])
        v_pol = guided(in_precision(self.policy, cfg.dtype), cond, uncond, cfg.guidance)
        v_ref = guided(in_precision(self.reference, cfg.dtype), cond, uncond, cfg.guidance)
        adv = adv.to(self.device)
        k_steps = len(ro.times) - 1
        sums = torch.zeros(len(names), dtype=torch.float64)
        for k in range(k_steps):
            t, t_next, x, x_next = ro.times[k], ro.times[k + 1], ro.xs[k], ro.xs[k + 1]
            tt = torch.full((len(x),), t, device=x.device)
            kw = {"a": cfg.noise_level, "t_first_next": ro.times[1], "x_next": x_next}
            now = sde_step(x, v_pol(x, tt), t, t_next, **kw)
            kl = None
            if cfg.beta:
                with torch.no_grad():
                    ref = sde_step(x, v_ref(x, tt), t, t_next, **kw)
                kl = kl_to_reference(now.mean, ref.mean, now.std)
            out = grpo_loss(
                now.log_prob, ro.log_probs[k], adv, clip_range=cfg.clip_range, kl=kl, beta=cfg.beta
            )
            (out.loss * share / k_steps).backward()
            sums += torch.tensor(
                [getattr(out, n).item() * share / k_steps for n in names], dtype=torch.float64
            )
        return sums

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Rewards of the current weights on the fixed evaluation set: the rollout sampler (SDE) with
        the same prompts and noise every time, so evaluations differ only by the weights."""
        cfg = self.cfg
        rng = np.random.default_rng(EVAL_SET_SEED)
        chosen = rng.choice(len(self.prompts), min(cfg.eval_prompts, len(self.prompts)), replace=False)
        idx = np.repeat(chosen, cfg.eval_samples)
        seeds = rng.integers(2**62, size=len(idx))
        per_batch = max(1, cfg.prompts_per_step * cfg.group_size // cfg.rollout_batches)
        self.policy.eval()
        _, reward, _ = self._sample_batches(idx, seeds, -(-len(idx) // per_batch))
        ok = torch.isfinite(reward)
        return {
            "step": self.step,
            "reward_mean": float(reward[ok].mean()) if ok.any() else float("nan"),
            "prompt_ids": [self.prompts[i].id for i in idx],
            "rewards": reward.tolist(),
        }

    def train(self) -> Path:
        cfg, main = self.cfg, self.rank == 0
        self.out.mkdir(parents=True, exist_ok=True)
        if main:
            (self.out / "grpo_config.json").write_text(json.dumps(asdict(cfg), indent=1) + "\n")
        logs = _Logs(self.out) if main else None
        reporter = Reporter(cfg.report_to, self.out, asdict(cfg), self.out.name) if main else None
        progress = Progress(cfg.steps, self.step, self.log, "GRPO steps") if main else None

        def evaluate() -> None:
            ev = self.evaluate()
            if logs:
                logs.write(EVAL_LOG_NAME, ev)
                reporter.log(ev, "eval")
            self.log(f"eval at step {ev['step']}: reward {ev['reward_mean']:.4f}")

        while self.step < cfg.steps:  # evaluations: before steps 0, k, 2k, ... and after the last
            if cfg.eval_every and self.step % cfg.eval_every == 0:
                evaluate()
            rec = self.train_step()
            if logs:
                logs.write(LOG_NAME, rec)
                reporter.log(rec, "train")
                progress.advance(
                    self.step,
                    f"step {rec['step']}: reward {rec['reward_mean']:.4f} ± {rec['reward_std']:.4f}, "
                    f"kl {rec['kl']:.2e}, clip {rec['clip_fraction']:.2f}, {rec['seconds']:.1f} s",
                )
            if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                if main:
                    save_state(self.out, self.policy, self.opt, self.step, cfg)
                _barrier(self.world)
        if cfg.eval_every:
            evaluate()
        if main:
            progress.close()
            reporter.close()
        self.policy.eval()
        final = self.out / "final"
        if main:
            self.system.save(final)
            self.lock.release()
        _barrier(self.world)
        return final


class _Logs:
    """Append-only JSONL logs of the main process, flushed per record."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def write(self, name: str, record: dict) -> None:
        with (self.out / name).open("a") as f:
            f.write(json.dumps(record) + "\n")


def _barrier(world: int) -> None:
    if world > 1:
        torch.distributed.barrier()


def _all_gather(obj: object, world: int) -> list:
    if world == 1:
        return [obj]
    out: list = [None] * world
    torch.distributed.all_gather_object(out, obj)
    return out


def _add_grads(model: torch.nn.Module, earlier: list[torch.Tensor | None]) -> None:
    """Add the gradients of earlier micro-batches to this one's: each micro-batch's gradient is
    summed on its own first, as on a process of its own, so the total is the same with one process
    or two (floating-point addition is not associative)."""
    for p, g in zip(model.parameters(), earlier):
        if g is not None:
            p.grad = g if p.grad is None else g + p.grad


def _all_reduce_grads(model: torch.nn.Module, world: int) -> None:
    """Sum the gradients over processes (one flat buffer, one collective)."""
    if world == 1:
        return
    params = [p for p in model.parameters() if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    offset = 0
    for p, g in zip(params, grads):
        p.grad = flat[offset : offset + g.numel()].view_as(g)
        offset += g.numel()


def reward_gain(run: str | Path) -> PairedDifference:
    """The evaluation reward of the last evaluation minus the first (before training), paired over
    the evaluation prompts (each prompt's clips averaged), with a bootstrap CI and permutation p."""
    records = [json.loads(line) for line in (Path(run) / EVAL_LOG_NAME).read_text().splitlines()]
    if len(records) < 2:
        raise ValueError(f"{run}: fewer than two evaluations in {EVAL_LOG_NAME}")
    first, last = (min(records, key=lambda r: r["step"]), max(records, key=lambda r: r["step"]))

    def means(rec: dict) -> pd.Series:
        return per_prompt_means(pd.Series(rec["rewards"]), pd.Series(rec["prompt_ids"]))

    return paired_difference(means(last), means(first))
