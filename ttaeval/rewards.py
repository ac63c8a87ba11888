"""Scorers as rewards for any trainer: the objects ``ttaeval run`` scores with, behind the reward
signatures of TRL and of diffusers/DDPO-style trainers.

A reward spec is ``SCORER_SPEC[#METRIC][@WEIGHT]``: ``clap:mini@0.5``, ``judge:mini#aqa``,
``judge:mini,w_quality=0#total``. The metric defaults to the scorer's first (clap's ``clap``, the
judge's ``aqa``: Resonate's reward). Clips are resampled and down-mixed to what each scorer wants;
a clip that a term cannot score gets NaN with its reason, never 0.

    from ttaeval.rewards import trl_reward

    reward = trl_reward(["clap:mini", "judge:mini#aqa"], weights=[0.5, 1.0], sample_rate=16000)
    scores = reward(prompts=["a dog barks"], completions=[waveform])  # [float], NaN where it failed
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ttaeval.io.audio import Clip, prepare, try_load_audio
from ttaeval.io.prompts import Prompt
from ttaeval.scorers import Scorer, get_scorer


@dataclass
class RewardTerm:
    """One weighted scorer metric of a reward."""

    scorer: Scorer
    metric: str
    weight: float

    @classmethod
    def parse(cls, spec: str, device: str | None = None, weight: float | None = None) -> RewardTerm:
        """A term from its spec; a scorer whose spec sets no device computes on ``device``;
        ``weight`` (when given) is the term's weight, and the spec must then carry none."""
        from ttaeval.protocols import device_options

        head, at, written = spec.rpartition("@") if "@" in spec else (spec, "", "")
        if at and weight is not None:
            raise ValueError(f"reward {spec!r}: its weight is given twice (in the spec and in the weights)")
        head, hash_, metric = head.partition("#")
        scorer = get_scorer(head, **device_options(head, device))
        names = [m.name for m in scorer.metrics]
        metric = metric if hash_ else names[0]
        if metric not in names:
            raise ValueError(
                f"reward {spec!r}: {scorer.label} has no metric {metric!r}; it has {', '.join(names)}"
            )
        if weight is None:
            try:
                weight = float(written) if at else 1.0
            except ValueError:
                raise ValueError(f"reward {spec!r}: weight {written!r} is not a number") from None
        return cls(scorer, metric, float(weight))

    @property
    def name(self) -> str:
        return f"{self.scorer.label}#{self.metric}"


def parse_terms(
    specs: str | Sequence[str], weights: Sequence[float] | None = None, device: str | None = None
) -> list[RewardTerm]:
    """Terms from specs, with ``weights`` (one per spec) or the specs' own ``@WEIGHT`` (default 1)."""
    specs = [specs] if isinstance(specs, str) else list(specs)
    if not specs:
        raise ValueError("give at least one reward (e.g. clap:mini@1.0)")
    if weights is not None and len(weights) != len(specs):
        raise ValueError(f"{len(weights)} reward weights for {len(specs)} rewards")
    return [RewardTerm.parse(s, device, None if weights is None else weights[i]) for i, s in enumerate(specs)]


@dataclass
class RewardBatch:
    """The rewards of a batch: the weighted total per clip, each term's values, and why a clip's
    total is NaN (None where it is not)."""

    total: np.ndarray
    parts: dict[str, np.ndarray]
    reasons: list[str | None]


def score_clips(terms: Sequence[RewardTerm], clips: Sequence[Clip | str]) -> RewardBatch:
    """Score ``clips`` (a ``str`` stands for a clip that could not be read: its reason) with every
    term; a total is NaN when any term failed on the clip."""
    total = np.zeros(len(clips))
    reasons: list[str | None] = [c if isinstance(c, str) else None for c in clips]
    ok = [i for i, c in enumerate(clips) if not isinstance(c, str)]
    total[[i for i, r in enumerate(reasons) if r]] = math.nan
    parts = {}
    for term in terms:
        values = np.full(len(clips), math.nan)
        if ok:
            prepared = [prepare(clips[i], term.scorer.sample_rate, term.scorer.channels) for i in ok]
            for i, result in zip(ok, term.scorer.score(prepared)):
                values[i] = result.values.get(term.metric, math.nan)
                if not math.isfinite(values[i]) and reasons[i] is None:
                    why = (
                        result.errors.get(term.metric) or result.not_applicable.get(term.metric) or "no value"
                    )
                    reasons[i] = f"{term.name}: {why}"
        parts[term.name] = values
        total = total + term.weight * values  # NaN stays NaN
    return RewardBatch(total, parts, reasons)


def as_clips(
    audios: Sequence[Any], sample_rate: int | None, prompts: Sequence[str | Prompt]
) -> list[Clip | str]:
    """Clips from waveforms (``(samples,)`` or ``(channels, samples)`` arrays or tensors, at
    ``sample_rate``), ``Clip`` objects or paths (read at their own rate); an unreadable path becomes
    its reason."""
    out: list[Clip | str] = []
    for audio, prompt in zip(audios, prompts, strict=True):
        prompt = prompt if isinstance(prompt, Prompt) else Prompt(id=f"p{len(out)}", text=str(prompt))
        if isinstance(audio, Clip):
            out.append(replace(audio, prompt=prompt))
        elif isinstance(audio, (str, Path)):
            loaded = try_load_audio(audio)
            out.append(loaded if isinstance(loaded, str) else replace(loaded, prompt=prompt))
        else:
            if sample_rate is None:
                raise ValueError("waveforms need their sample_rate (give it to the adapter or the call)")
            array = np.asarray(
                audio.detach().cpu().float() if hasattr(audio, "detach") else audio, np.float32
            )
            out.append(Clip(array[None] if array.ndim == 1 else array, int(sample_rate), prompt=prompt))
    return out


def trl_reward(
    specs: str | Sequence[str],
    *,
    weights: Sequence[float] | None = None,
    sample_rate: int | None = None,
    device: str | None = None,
) -> Callable[..., list[float]]:
    """A TRL-style reward function ``f(prompts, completions, **kwargs) -> list[float]``.

    ``completions`` are waveforms at ``sample_rate`` (or a ``sample_rate`` keyword of the call),
    paths or ``Clip`` objects; the value is the weighted sum of the terms, NaN where any failed (TRL
    sums rewards with nansum; the reasons are on ``f.last_reasons``). To give TRL each term apart,
    make one function per spec and pass the weights as TRL's ``reward_weights``."""
    terms = parse_terms(specs, weights, device)

    def reward(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
        texts = [_text(p) for p in prompts]
        batch = score_clips(terms, as_clips(completions, kwargs.get("sample_rate", sample_rate), texts))
        reward.last_reasons = batch.reasons
        return [float(x) for x in batch.total]

    reward.__name__ = "+".join(t.name for t in terms)  # TRL logs each function by its name
    reward.last_reasons = []
    return reward


def ddpo_reward(
    specs: str | Sequence[str],
    *,
    sample_rate: int,
    weights: Sequence[float] | None = None,
    device: str | None = None,
) -> Callable[..., tuple[np.ndarray, dict]]:
    """A diffusers/DDPO-style ``reward_fn(audios, prompts, metadata) -> (scores, info)``, the shape
    Resonate's trainer uses: ``audios`` a ``(B, samples)`` or ``(B, channels, samples)`` batch at
    ``sample_rate``; ``scores`` float32 with NaN where a term failed; ``info`` holds each term's
    values (``parts``) and the failures' ``reasons``."""
    terms = parse_terms(specs, weights, device)

    def reward_fn(audios: Any, prompts: Sequence[Any], metadata: Any = None) -> tuple[np.ndarray, dict]:
        batch = score_clips(terms, as_clips(list(audios), sample_rate, [_text(p) for p in prompts]))
        return batch.total.astype(np.float32), {"parts": batch.parts, "reasons": batch.reasons}

    return reward_fn


def _text(prompt: Any) -> str | Prompt:
    """A prompt's text: TRL gives strings, or chat messages (the last user turn's content)."""
    if isinstance(prompt, (str, Prompt)):
        return prompt
    if isinstance(prompt, list) and prompt and isinstance(prompt[-1], dict):
        return str(prompt[-1].get("content", ""))
    return str(prompt)
