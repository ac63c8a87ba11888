"""Recipe: train clap-mini on the synthetic world and write the shipped weights.

    python -m ttaeval.synth.train_clap --out ttaeval/synth/weights/clap_mini.safetensors

The held-out clap-mini (``clap:mini-heldout``: another seed, another architecture, for judging
models fine-tuned on clap-mini rewards, as Resonate trains on LAION-CLAP and evaluates with msclap):

    python -m ttaeval.synth.train_clap --seed 115 --n-mels 48 --width 96 --audio-layers 3 \
        --out ttaeval/synth/weights/clap_mini_heldout.safetensors

Steps: build a BPE tokenizer from the world's training captions; render training scenes (never a
held-out combination); train both towers with the symmetric InfoNCE loss, drawing a fresh caption
(random template and paraphrase, and with probability ``perturb_prob`` one of TTA-Bench's surface
perturbations) for every scene at every step; then evaluate on the held-out suites and write the
numbers beside the weights (``clap_mini.metrics.json``).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from ttaeval.backbones.clap_mini import DEFAULT_CHECKPOINT, ClapMini, ClapMiniConfig, save_clap_mini
from ttaeval.synth.scenes import Scene, caption, render
from ttaeval.synth.suites import (
    PERTURBATIONS,
    SEEDS,
    accuracy_suite,
    generalization_suite,
    perturb,
    random_scene,
    robustness_suite,
)

TRAIN_PERTURBATIONS = tuple(p for p in PERTURBATIONS if p != "rewrite")  # rewrite = a fresh caption


@dataclass
class TrainConfig:
    """Knobs of the recipe. The defaults wrote the shipped weights."""

    scenes: int = 6000
    """Training scenes rendered once (their captions are drawn anew every step)."""
    steps: int = 1500
    """Optimiser steps."""
    batch_size: int = 96
    """Scenes per step; the other scenes of the batch are each caption's negatives."""
    lr: float = 1e-3
    """Peak AdamW learning rate (linear warm-up, cosine decay)."""
    warmup: int = 100
    """Warm-up steps."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    perturb_prob: float = 0.4
    """Probability that a training caption gets one of TTA-Bench's surface perturbations."""
    gain_db: float = 2.0
    """Random gain (uniform, +-dB) applied to the audio at every step."""
    seed: int = SEEDS["train"]
    """Seed of scenes, captions, initialisation and batches."""
    vocab_size: int = 1000
    """BPE vocabulary size (special tokens included)."""
    n_mels: int = 64
    """Mel bands of the audio front end."""
    width: int = 128
    """Transformer width of both towers."""
    audio_layers: int = 2
    """Audio transformer layers."""
    text_layers: int = 2
    """Text transformer layers."""
    workers: int = 2
    """Processes rendering scenes."""


def build_tokenizer(vocab_size: int, seed: int) -> Tokenizer:
    """A lower-casing BPE tokenizer trained on training captions and their perturbations."""
    rng = np.random.default_rng(seed + 1)
    corpus = []
    for _ in range(6000):
        text = caption(random_scene(rng), rng)
        corpus.append(text)
        corpus.append(perturb(text, TRAIN_PERTURBATIONS[int(rng.integers(len(TRAIN_PERTURBATIONS)))], rng))
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.BPEDecoder()
    alphabet = list("abcdefghijklmnopqrstuvwxyz0123456789.,;:!?-'\"()")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["[PAD]", "[UNK]"],
        initial_alphabet=alphabet,
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    return tok


def _render_many(scenes: list[dict]) -> np.ndarray:
    return np.stack([render(Scene.from_dict(s))[0] for s in scenes])


def render_scenes(scenes: list[Scene], workers: int) -> np.ndarray:
    """Render scenes to (n, samples) float32, in ``workers`` processes."""
    dicts = [s.to_dict() for s in scenes]
    chunks = [dicts[i : i + 250] for i in range(0, len(dicts), 250)]
    if workers <= 1:
        return np.concatenate([_render_many(c) for c in chunks])
    with ProcessPoolExecutor(workers) as pool:
        return np.concatenate(list(pool.map(_render_many, chunks)))


@torch.no_grad()
def _features(model: ClapMini, audio: np.ndarray) -> torch.Tensor:
    out = [model.logmel(torch.from_numpy(audio[i : i + 256])) for i in range(0, len(audio), 256)]
    return torch.cat(out)


def train(cfg: TrainConfig, log=print) -> tuple[ClapMini, list[float]]:
    """Train clap-mini; returns the model (eval mode) and the loss of every step."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    start = time.perf_counter()
    tokenizer = build_tokenizer(cfg.vocab_size, cfg.seed)
    arch = ClapMiniConfig(
        vocab_size=tokenizer.get_vocab_size(),
        n_mels=cfg.n_mels,
        width=cfg.width,
        audio_layers=cfg.audio_layers,
        text_layers=cfg.text_layers,
    )
    model = ClapMini(arch, tokenizer)
    scenes = [random_scene(rng) for _ in range(cfg.scenes)]
    audio = render_scenes(scenes, cfg.workers)
    mels = _features(model, audio)
    model.mel_mean.fill_(float(mels.mean()))
    model.mel_std.fill_(float(mels.std()))
    mels = ((mels - model.mel_mean) / model.mel_std).to(torch.float16)
    del audio
    log(f"rendered {cfg.scenes} scenes and features in {time.perf_counter() - start:.0f} s")

    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: min(1.0, (s + 1) / cfg.warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / cfg.steps))),
    )
    gain = cfg.gain_db / 10 * math.log(10) / model.mel_std.item()  # dB -> normalised log-power units
    model.train()
    losses = []
    for step in range(cfg.steps):
        idx = rng.choice(cfg.scenes, cfg.batch_size, replace=False)
        texts = []
        for i in idx:
            text = caption(scenes[i], rng)
            if rng.random() < cfg.perturb_prob:
                text = perturb(text, TRAIN_PERTURBATIONS[int(rng.integers(len(TRAIN_PERTURBATIONS)))], rng)
            texts.append(text)
        mel = mels[torch.from_numpy(idx)].float()
        mel = mel + torch.from_numpy(rng.uniform(-gain, gain, (len(idx), 1, 1)).astype(np.float32))
        a = torch.nn.functional.normalize(model.audio(mel), dim=-1)
        t = model.embed_text(texts)
        logits = model.logit_scale.exp().clamp(max=100) * a @ t.T
        target = torch.arange(len(idx))
        loss = (
            torch.nn.functional.cross_entropy(logits, target)
            + torch.nn.functional.cross_entropy(logits.T, target)
        ) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % 100 == 0 or step == cfg.steps - 1:
            log(f"step {step:5d}  loss {loss.item():.3f}  {time.perf_counter() - start:.0f} s", flush=True)
    return model.eval(), losses


@torch.no_grad()
def evaluate(model: ClapMini) -> dict[str, float]:
    """Retrieval on the held-out suite, matched vs shuffled captions, robustness ratios.

    Robustness here is the issue's check on the scorer itself: the mean score of each perturbation's
    50 prompts over the mean score of their sources (a ratio of means). TTA-Bench's per-prompt ratio,
    for judging generators, is ``ttaeval.protocols.robustness_ratios``.
    """
    model.eval()
    gen = generalization_suite()
    audio = render_scenes([Scene.from_dict(p.attributes["scene"]) for p in gen], workers=1)
    a = torch.from_numpy(model.embed_audio(list(audio)))
    t = model.embed_text([p.text for p in gen])
    sims = t @ a.T  # text -> audio
    ranks = (sims > sims.diag()[:, None]).sum(1)
    out = {"gen_R@1": float((ranks < 1).float().mean()), "gen_R@5": float((ranks < 5).float().mean())}

    acc = accuracy_suite()
    acc_audio = torch.from_numpy(
        model.embed_audio(
            list(render_scenes([Scene.from_dict(p.attributes["scene"]) for p in acc], workers=1))
        )
    )
    acc_text = model.embed_text([p.text for p in acc])
    matched = (acc_audio * acc_text).sum(1)
    shuffled = (acc_audio * acc_text[torch.roll(torch.arange(len(acc)), 1)]).sum(1)
    out["acc_matched_above_shuffled"] = float((matched > shuffled).float().mean())
    out["acc_mean_score"] = float(matched.mean())

    by_id = {p.id: i for i, p in enumerate(acc)}
    rob = robustness_suite()
    rob_text = model.embed_text([p.text for p in rob])
    for kind in PERTURBATIONS:
        rows = [
            (j, by_id[p.attributes["notes"]])
            for j, p in enumerate(rob)
            if p.attributes["perturbation_type"] == kind
        ]
        pert = torch.stack([(rob_text[j] * acc_audio[i]).sum() for j, i in rows]).mean()
        src = torch.stack([matched[i] for _, i in rows]).mean()
        out[f"robustness_{kind}"] = float(pert / src)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_CHECKPOINT, help="weights file to write")
    for name, default in asdict(TrainConfig()).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    args = vars(parser.parse_args(argv))
    out = args.pop("out")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    cfg = TrainConfig(**args)
    start = time.perf_counter()
    model, _ = train(cfg)
    minutes = (time.perf_counter() - start) / 60
    metrics = evaluate(model)
    save_clap_mini(model, out)
    report = {"train_minutes": round(minutes, 2), "config": asdict(cfg), "metrics": metrics}
    out.with_suffix(".metrics.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
