"""Offline flow-matching DPO: preference pairs from the frozen base model, ranked by a scorer.

Pairs: every pair prompt is sampled ``samples_per_prompt`` times by the base model (Euler ODE, CFG);
the scorer's best and worst clips are the winner and the loser (prompts whose samples tie, or whose
scores failed, give no pair). Training: winner and loser share the noise and t; with L the
velocity MSE of each, loss = -log sigmoid(-beta/2 [(L_w - Lref_w) - (L_l - Lref_l)]) (+ an optional
SFT term on the winner, as TangoFlux). ``online_every`` > 0 is the online variant for ablations:
pairs are made again from the current policy every that many steps.

    resonate-train dpo --base ckpt/resonate-mini --reward clap:mini --out runs/dpo-clap
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from resonate_train.config_file import config_from_toml
from resonate_train.objectives import flow_dpo_loss
from resonate_train.reporting import Progress, Reporter, check_report_to
from resonate_train.rewards import Rewards
from resonate_train.sampling import in_precision
from resonate_train.system import ResonateSystem
from resonate_train.training_state import LOG_NAME, load_state, lock_run, save_state
from ttaeval.devices import setup_process


@dataclass
class DPOConfig:
    """Offline DPO knobs; the paper's values in the notes."""

    base: str = ""
    """The starting checkpoint, also the frozen reference and (offline) the pair sampler."""
    reward: str = "clap:mini@1.0"
    """The scorer ranking each prompt's samples (paper's offline baseline: CLAP)."""
    prompts: str = "synth:train"
    """Prompt source for the pairs."""
    prompt_limit: int = 0
    """Only the source's first N prompts (0: all), as GRPO's ``prompt_limit``."""
    pair_prompts: int = 128
    """Prompt draws that each make one pair; more than there are prompts: each prompt recurs
    (evenly, new noise each time)."""
    samples_per_prompt: int = 4
    """Samples per pair prompt (best vs worst)."""
    sample_steps: int = 25
    """Euler steps when sampling pairs (the official recipe's 25: the sampler users get)."""
    guidance: float = 4.5
    """Guidance when sampling pairs."""
    beta: float = 100.0
    """DPO beta (paper: 100)."""
    sft_weight: float = 0.0
    """Weight of a flow-matching loss on the winner (TangoFlux's CRPO adds one)."""
    steps: int = 200
    """Optimiser steps."""
    batch_size: int = 16
    """Pairs per step."""
    lr: float = 1e-5
    """AdamW learning rate (the official offline DPO's)."""
    online_every: int = 0
    """0: offline (pairs from the base once). N > 0: new pairs from the current policy every N steps."""
    pairs_from: str = ""
    """An offline run folder whose pairs to train on instead of sampling them again (a sweep over
    ``lr``, ``steps`` or ``sft_weight`` shares one set of pairs); its pair settings (``PAIR_FIELDS``)
    must equal this config's. An offline run saves its pairs as ``pairs.safetensors`` and a resumed
    run reads them back."""
    seed: int = 0
    """Seed: pairs and batches come from (seed, step)."""
    checkpoint_every: int = 50
    """Steps between checkpoints (and at the end)."""
    device: str = "auto"
    """Where the policy, the reference, pair sampling and the reward scorer (when its spec sets no
    device) compute: ``auto`` (the GPU when there is one), ``cpu``, ``cuda``."""
    dtype: str = "float32"
    """Precision of the network's forward passes: ``bfloat16`` runs them under autocast; weights,
    optimiser state and losses stay float32."""
    report_to: str = "none"
    """Where the logged scalars also go: ``none``, ``tensorboard`` (``OUT/tensorboard``) or ``wandb``
    (the optional extras of the same names); the JSONL log is written either way."""

    def __post_init__(self) -> None:
        from ttaeval.devices import check_device_name, resolve_dtype

        check_device_name(self.device)
        resolve_dtype(self.dtype)
        check_report_to(self.report_to)
        if self.pairs_from and self.online_every:
            raise ValueError("pairs_from reuses offline pairs; online runs (online_every > 0) make their own")
        if self.online_every and self.checkpoint_every % self.online_every:
            raise ValueError(
                f"checkpoint_every ({self.checkpoint_every}) must be a multiple of online_every "
                f"({self.online_every}): a resumed online run rebuilds its pairs at a checkpoint"
            )

    @classmethod
    def from_toml(cls, path: str | Path, **overrides: object) -> DPOConfig:
        return config_from_toml(cls, path, **overrides)


PAIR_FIELDS = (
    "base",
    "reward",
    "prompts",
    "prompt_limit",
    "pair_prompts",
    "samples_per_prompt",
    "sample_steps",
    "guidance",
    "seed",
)
"""The fields that decide an offline run's pairs."""
PAIRS_NAME = "pairs.safetensors"
PAIR_BATCH = 32  # clips sampled together: the batching is part of what a seed's pairs are
PARTIAL_NAME = "pairs.partial.safetensors"  # pair sampling so far (offline), while it runs


def _write(path: Path, tensors: dict[str, torch.Tensor], settings: dict, **meta: str) -> None:
    """``tensors`` to ``path`` atomically (a temporary file, then a rename), with the pair settings."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    metadata = {"settings": json.dumps(settings, sort_keys=True), **meta}
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    tmp.replace(path)


def _save_partial(path: Path, latents: torch.Tensor, scores: np.ndarray, settings: dict) -> None:
    _write(path, {"latents": latents, "scores": torch.from_numpy(scores.copy())}, settings)


def _load_partial(path: Path | None, settings: dict) -> tuple[torch.Tensor | None, np.ndarray]:
    """The latents and scores sampled so far, if ``path`` holds them for these settings (else none)."""
    from safetensors import safe_open

    if path is None or not path.is_file():
        return None, np.empty(0)
    with safe_open(str(path), "pt") as f:
        if json.loads((f.metadata() or {}).get("settings", "{}")) != json.loads(json.dumps(settings)):
            return None, np.empty(0)
        return f.get_tensor("latents"), f.get_tensor("scores").numpy()


@dataclass
class Pairs:
    winners: torch.Tensor  # normalised latents (P, T, C)
    losers: torch.Tensor
    texts: list[str]
    margin: torch.Tensor  # reward(winner) - reward(loser)

    def save(self, path: Path, settings: dict) -> None:
        tensors = {"winners": self.winners, "losers": self.losers, "margin": self.margin}
        _write(path, tensors, settings, texts=json.dumps(self.texts))

    @classmethod
    def load(cls, path: Path, settings: dict) -> Pairs:
        """The pairs saved at ``path``; a ``ValueError`` names each setting that differs."""
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in ("winners", "losers", "margin")}
        saved = json.loads(meta.get("settings", "{}"))
        differ = [
            f"{k}: {saved.get(k)!r} there, {v!r} here" for k, v in settings.items() if saved.get(k) != v
        ]
        if differ:
            raise ValueError(f"{path}: its pairs were made with other settings ({'; '.join(differ)})")
        return cls(tensors["winners"], tensors["losers"], json.loads(meta["texts"]), tensors["margin"])


class DPOTrainer:
    def __init__(self, cfg: DPOConfig, out: str | Path, log=print) -> None:
        from ttaeval.io.prompts import load_prompts

        self.cfg, self.out, self.log = cfg, Path(out), log
        self.device = setup_process(cfg.device).device  # before any model is built
        self.system = ResonateSystem.load(cfg.base, str(self.device))
        self.system.dtype = cfg.dtype  # pair sampling
        self.policy = self.system.network
        self.reference = copy.deepcopy(self.policy).requires_grad_(False).eval()
        self.prompts = load_prompts(cfg.prompts)[: cfg.prompt_limit or None]
        self.reward = Rewards([cfg.reward], device=str(self.device))
        self.opt = torch.optim.AdamW(self.policy.parameters(), lr=cfg.lr)
        self.lock = lock_run(self.out)  # before reading the checkpoint
        self.step = load_state(self.out, self.policy, self.opt)
        self.pairs: Pairs | None = None
        if not cfg.online_every:
            settings = self.pair_settings()
            source = Path(cfg.pairs_from) / PAIRS_NAME if cfg.pairs_from else self.out / PAIRS_NAME
            if cfg.pairs_from and not source.is_file():
                raise FileNotFoundError(f"pairs_from: {source} does not exist (an offline DPO run saves it)")
            if source.is_file():
                self.pairs = Pairs.load(source, settings)
                self.log(f"pairs: {len(self.pairs.texts)} read from {source}")

    def pair_settings(self) -> dict:
        return {k: getattr(self.cfg, k) for k in PAIR_FIELDS}

    def make_pairs(self, round_: int) -> Pairs:
        """Sample, score and pair (offline: from the frozen reference; online: from the policy)."""
        cfg, system = self.cfg, self.system
        rng = np.random.default_rng([cfg.seed, 1_000_000 + round_])
        n = len(self.prompts)
        if cfg.pair_prompts <= n:
            chosen = rng.choice(n, cfg.pair_prompts, replace=False)
        else:  # every prompt recurs, in shuffled rounds
            rounds = -(-cfg.pair_prompts // n)
            chosen = np.concatenate([rng.permutation(n) for _ in range(rounds)])[: cfg.pair_prompts]
        prompts = [self.prompts[i] for i in chosen for _ in range(cfg.samples_per_prompt)]
        seeds = rng.integers(2**31, size=len(prompts)).tolist()
        sampler = self.policy if cfg.online_every else self.reference
        saved, system.network = system.network, sampler
        # offline: the work so far is kept after every batch, so a killed run resumes mid-sampling
        partial = None if cfg.online_every else self.out / PARTIAL_NAME
        latents, scores = _load_partial(partial, self.pair_settings())
        starts = range(0, len(prompts), PAIR_BATCH)
        progress = Progress(len(starts), len(scores) // PAIR_BATCH, self.log, "DPO pair samples")
        try:
            d = system.defaults.duration
            for done, i in enumerate(starts, 1):
                if i < len(scores):
                    continue
                batch, texts = prompts[i : i + PAIR_BATCH], [p.text for p in prompts[i : i + PAIR_BATCH]]
                x = system.sample_latents(texts, seeds[i : i + PAIR_BATCH], d, cfg.sample_steps, cfg.guidance)
                got, _ = self.reward(system.decode(x, d), system.sample_rate, batch)  # a batch at a time
                latents = x if latents is None else torch.cat([latents, x])
                scores = np.concatenate([scores, got])
                if partial is not None:
                    _save_partial(partial, latents, scores, self.pair_settings())
                if done % max(1, len(starts) // 10) == 0 or done == len(starts):
                    progress.advance(done, f"pairs: {i + len(batch)} of {len(prompts)} clips sampled, scored")
        finally:
            progress.close()
            system.network = saved
        k = cfg.samples_per_prompt
        scores = scores.reshape(-1, k)
        win, lose, texts, margin = [], [], [], []
        for j, row in enumerate(scores):
            if not np.isfinite(row).all() or row.max() == row.min():
                continue
            win.append(latents[j * k + int(row.argmax())])
            lose.append(latents[j * k + int(row.argmin())])
            texts.append(prompts[j * k].text)
            margin.append(float(row.max() - row.min()))
        if not win:
            raise RuntimeError("no preference pair: every prompt's samples tied or failed to score")
        self.log(f"pairs: {len(win)} from {len(scores)} prompts, mean margin {np.mean(margin):.4f}")
        if partial is not None:
            partial.unlink(missing_ok=True)  # the caller saves the pairs themselves
        return Pairs(torch.stack(win), torch.stack(lose), texts, torch.tensor(margin))

    def _errors(self, net: torch.nn.Module, x0: torch.Tensor, noise, t, feats, pooled) -> torch.Tensor:
        """Per-pair velocity MSE (the network's pass in ``dtype``, the error in float32)."""
        x_t = (1 - t[:, None, None]) * x0 + t[:, None, None] * noise
        v = in_precision(net, self.cfg.dtype)(x_t, t, feats, pooled)
        return ((v - (noise - x0)) ** 2).flatten(1).mean(1)

    def _refresh_pairs(self) -> None:
        """Pairs for this step: made once (offline, then saved), or again every ``online_every``."""
        cfg = self.cfg
        if self.pairs is None or (cfg.online_every and self.step % cfg.online_every == 0):
            self.pairs = self.make_pairs(self.step // cfg.online_every if cfg.online_every else 0)
            if not cfg.online_every:
                self.out.mkdir(parents=True, exist_ok=True)
                self.pairs.save(self.out / PAIRS_NAME, self.pair_settings())

    def train_step(self) -> dict:
        cfg, start = self.cfg, time.perf_counter()
        self._refresh_pairs()
        rng = np.random.default_rng([cfg.seed, self.step])
        gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
        idx = torch.from_numpy(rng.integers(len(self.pairs.texts), size=cfg.batch_size))
        win, lose = self.pairs.winners[idx], self.pairs.losers[idx]
        feats, pooled = self.system.text_encoder.encode([self.pairs.texts[i] for i in idx])
        feats, pooled = feats.to(self.device), pooled.to(self.device)
        t = torch.rand(len(idx), generator=gen).to(self.device)
        noise = torch.randn(win.shape, generator=gen).to(self.device)  # shared by winner and loser
        self.policy.train()
        err_w = self._errors(self.policy, win, noise, t, feats, pooled)
        err_l = self._errors(self.policy, lose, noise, t, feats, pooled)
        with torch.no_grad():
            ref_w = self._errors(self.reference, win, noise, t, feats, pooled)
            ref_l = self._errors(self.reference, lose, noise, t, feats, pooled)
        dpo = flow_dpo_loss(err_w, err_l, ref_w, ref_l, cfg.beta)
        loss = dpo + cfg.sft_weight * err_w.mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.policy.parameters(), 1.0)
        self.opt.step()
        inside = ((err_w - ref_w) - (err_l - ref_l)).detach()
        record = {
            "step": self.step,
            "loss": loss.item(),
            "dpo_loss": dpo.item(),
            "implicit_accuracy": float((inside < 0).float().mean()),
            "winner_mse": err_w.mean().item(),
            "loser_mse": err_l.mean().item(),
            "seconds": time.perf_counter() - start,
        }
        self.step += 1
        return record

    def train(self) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "dpo_config.json").write_text(json.dumps(asdict(self.cfg), indent=1) + "\n")
        reporter = Reporter(self.cfg.report_to, self.out, asdict(self.cfg), self.out.name)
        if self.step < self.cfg.steps and not self.cfg.online_every:
            self._refresh_pairs()  # before the clock starts: the ETA is of the training steps
        progress = Progress(self.cfg.steps, self.step, self.log, "DPO steps")
        with (self.out / LOG_NAME).open("a") as logf:
            while self.step < self.cfg.steps:
                rec = self.train_step()
                logf.write(json.dumps(rec) + "\n")
                logf.flush()
                reporter.log(rec, "train")
                if rec["step"] % 10 == 0:
                    progress.advance(
                        self.step,
                        f"step {rec['step']}: dpo {rec['dpo_loss']:.4f}, acc {rec['implicit_accuracy']:.2f}",
                    )
                if self.step % self.cfg.checkpoint_every == 0 or self.step == self.cfg.steps:
                    save_state(self.out, self.policy, self.opt, self.step, self.cfg)
        progress.close()
        reporter.close()
        self.policy.eval()
        final = self.system.save(self.out / "final")
        self.lock.release()
        return final
