"""Pretraining: conditional flow matching on the synthetic world -> a ``resonate-mini`` checkpoint.

x_t = (1 - t) x_0 + t noise, the network predicts noise - x_0 (MSE), t ~ U(0, 1); the text
condition is replaced by the empty prompt's features for ``cond_dropout`` of the rows, which
teaches the unconditional branch classifier-free guidance needs. Latents are the codec's, normalised
by per-channel statistics measured on the training set and saved with the weights.

    resonate-train pretrain --out resonate_train/weights/resonate_mini   # the shipped weights: 15 min
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from resonate_train.config_file import config_from_toml
from resonate_train.model import FluxAudioConfig, fluxaudio_mini
from resonate_train.model.codec import MelCodec
from resonate_train.model.fluxaudio import MINI_CONFIG
from resonate_train.model.text import ClapMiniTextEncoder
from resonate_train.reporting import Progress, Reporter, check_report_to
from resonate_train.sampling import in_precision
from resonate_train.system import ResonateSystem, SamplingDefaults
from ttaeval.devices import setup_process


@dataclass
class PretrainConfig:
    """Knobs of the mini pretraining recipe (the defaults wrote the shipped resonate-mini)."""

    scenes: int = 4000
    """Training scenes rendered once (from the training distribution: no held-out combination)."""
    captions_per_scene: int = 3
    """Captions drawn per scene (paraphrases); each step picks one."""
    steps: int = 1500
    """Optimiser steps."""
    batch_size: int = 32
    """Clips per step."""
    lr: float = 1e-3
    """Peak AdamW learning rate (linear warm-up, cosine decay to 10%)."""
    warmup: int = 200
    """Warm-up steps."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    cond_dropout: float = 0.1
    """Share of rows trained with the empty prompt (classifier-free guidance)."""
    ema: float = 0.999
    """Decay of the weights' exponential moving average (the EMA is what is saved), warmed up as
    min(ema, (1 + step) / (10 + step)) so the random initialisation does not linger in it."""
    seed: int = 16
    """Seed of scenes, captions, initialisation and batches."""
    workers: int = 2
    """Processes rendering scenes."""
    log_every: int = 50
    """Steps between log lines."""
    device: str = "auto"
    """Where the network trains: ``auto`` (the GPU when there is one), ``cpu``, ``cuda``. Scenes,
    captions, initialisation and batches are drawn on the CPU, so only the arithmetic moves."""
    dtype: str = "float32"
    """Precision of the forward passes: ``bfloat16`` runs them under autocast (weights, EMA,
    optimiser state and the loss stay float32)."""

    report_to: str = "none"
    """Where the logged scalars also go: ``none``, ``tensorboard`` (``OUT/tensorboard``) or ``wandb``
    (the optional extras of the same names); the JSONL log is written either way."""

    def __post_init__(self) -> None:
        from ttaeval.devices import check_device_name, resolve_dtype

        check_device_name(self.device)
        resolve_dtype(self.dtype)
        check_report_to(self.report_to)

    @classmethod
    def from_toml(cls, path: str | Path, **overrides: object) -> PretrainConfig:
        return config_from_toml(cls, path, **overrides)


def training_set(cfg: PretrainConfig, codec: MelCodec, text: ClapMiniTextEncoder):
    """Latents ``(N, T, C)`` of rendered training scenes, and text features of their captions
    ``(N, K, L, D)``, ``(N, K, D_c)``."""
    from ttaeval.synth.scenes import caption
    from ttaeval.synth.suites import SEEDS, random_scene
    from ttaeval.synth.train_clap import render_scenes

    rng = np.random.default_rng([SEEDS["train"], cfg.seed])
    scenes = [random_scene(rng) for _ in range(cfg.scenes)]
    audio = torch.from_numpy(render_scenes(scenes, cfg.workers))
    latents = torch.cat([codec.encode(audio[i : i + 256]) for i in range(0, len(audio), 256)])
    texts = [caption(s, rng) for s in scenes for _ in range(cfg.captions_per_scene)]
    feats, pooled = [], []
    for i in range(0, len(texts), 512):
        f, p = text.encode(texts[i : i + 512])
        feats.append(f)
        pooled.append(p)
    k = cfg.captions_per_scene
    feats_t, pooled_t = torch.cat(feats), torch.cat(pooled)
    return latents, feats_t.view(len(scenes), k, *feats_t.shape[1:]), pooled_t.view(len(scenes), k, -1)


def flow_matching_loss(
    network: torch.nn.Module,
    x0: torch.Tensor,
    feats: torch.Tensor,
    pooled: torch.Tensor,
    generator: torch.Generator,
    dtype: str = "float32",
) -> torch.Tensor:
    """MSE between the predicted and the true velocity (noise - x0) at a uniform random t; ``t`` and
    the noise come from the (CPU) ``generator`` whatever the device, the network's pass runs in
    ``dtype`` and the loss in float32."""
    t = torch.rand(x0.shape[0], generator=generator).to(x0.device)
    noise = torch.randn(x0.shape, generator=generator).to(x0.device)
    x_t = (1 - t[:, None, None]) * x0 + t[:, None, None] * noise
    return torch.nn.functional.mse_loss(in_precision(network, dtype)(x_t, t, feats, pooled), noise - x0)


def pretrain(
    cfg: PretrainConfig, out: str | Path, network_config: FluxAudioConfig = MINI_CONFIG, log=print
) -> Path:
    """Train and save the checkpoint folder ``out``; writes ``train_log.jsonl`` beside it."""
    start = time.perf_counter()
    device = setup_process(cfg.device).device  # before any model is built
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    codec, text = MelCodec(), ClapMiniTextEncoder()
    network = fluxaudio_mini(network_config).initialize_weights()
    system = ResonateSystem(network, text, codec, SamplingDefaults())
    system.set_empty_text()
    latents, feats, pooled = training_set(cfg, codec, text)
    network.latent_mean.copy_(latents.mean(dim=(0, 1), keepdim=True))
    network.latent_std.copy_(latents.std(dim=(0, 1), keepdim=True).clamp(min=1e-3))
    data = network.normalize(latents)
    log(f"data: {len(data)} clips {tuple(data.shape[1:])} in {time.perf_counter() - start:.0f} s")
    network.to(device)
    ema = {k: v.detach().clone() for k, v in network.state_dict().items()}
    opt = torch.optim.AdamW(network.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            min(1.0, (s + 1) / cfg.warmup)
            * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / cfg.steps))))
        ),
    )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    empty_f, empty_c = network.empty_text(1)
    network.train()
    reporter = Reporter(cfg.report_to, out, asdict(cfg), out.name)
    progress = Progress(cfg.steps, 0, log, "pretraining steps")
    with (out / "train_log.jsonl").open("w") as logf:
        for step in range(cfg.steps):
            idx = torch.randint(len(data), (cfg.batch_size,), generator=gen)
            which = torch.randint(cfg.captions_per_scene, (cfg.batch_size,), generator=gen)
            f, p = feats[idx, which].clone(), pooled[idx, which].clone()
            drop = torch.rand(cfg.batch_size, generator=gen) < cfg.cond_dropout
            f[drop], p[drop] = empty_f[0].cpu(), empty_c[0].cpu()
            f, p = f.to(device), p.to(device)
            loss = flow_matching_loss(network, data[idx].to(device), f, p, gen, cfg.dtype)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(network.parameters(), 1.0)
            opt.step()
            sched.step()
            decay = min(cfg.ema, (1 + step) / (10 + step))  # warm-up: no trace of the init at the end
            with torch.no_grad():
                for k, v in network.state_dict().items():
                    if v.is_floating_point():
                        ema[k].mul_(decay).add_(v.detach(), alpha=1 - decay)
                    else:
                        ema[k].copy_(v)
            if step % cfg.log_every == 0 or step == cfg.steps - 1:
                rec = {
                    "step": step,
                    "loss": loss.item(),
                    "lr": sched.get_last_lr()[0],
                    "s": time.perf_counter() - start,
                }
                logf.write(json.dumps(rec) + "\n")
                logf.flush()
                reporter.log(rec, "train")
                progress.advance(step + 1, f"step {step}: loss {rec['loss']:.4f}")
    progress.close()
    reporter.close()
    network.load_state_dict(ema)
    network.eval()
    system.save(out)
    (out / "pretrain_config.json").write_text(json.dumps(asdict(cfg), indent=1) + "\n")
    log(f"saved {out} after {time.perf_counter() - start:.0f} s")
    return out
