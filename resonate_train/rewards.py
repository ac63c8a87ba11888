"""Rewards from ttaeval scorers: the very objects ``ttaeval run`` scores with.

A reward spec is ``SCORER_SPEC[#METRIC][@WEIGHT]``: ``clap:mini@0.5``, ``judge:mini#aqa@1.0``,
``judge:mini,w_quality=0#total``. The metric defaults to the scorer's first one (clap's ``clap``,
the judge's ``aqa``: Resonate's reward). The total is the weighted sum; a clip any component failed
on gets NaN (masked out of the advantages downstream), never 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ttaeval.audio import Clip, prepare
from ttaeval.prompts import Prompt
from ttaeval.scorers import Scorer, get_scorer


@dataclass
class RewardTerm:
    scorer: Scorer
    metric: str
    weight: float

    @classmethod
    def parse(cls, spec: str) -> RewardTerm:
        head, _at, weight = spec.rpartition("@") if "@" in spec else (spec, "", "1.0")
        head, hash_, metric = head.partition("#")
        scorer = get_scorer(head)
        names = [m.name for m in scorer.metrics]
        metric = metric if hash_ else names[0]
        if metric not in names:
            raise ValueError(
                f"reward {spec!r}: {scorer.label} has no metric {metric!r}; it has {', '.join(names)}"
            )
        try:
            w = float(weight)
        except ValueError:
            raise ValueError(f"reward {spec!r}: weight {weight!r} is not a number") from None
        return cls(scorer, metric, w)


class Rewards:
    """Score generated audio with one or more weighted scorer metrics; can run in the background."""

    def __init__(self, specs: Sequence[str], workers: int = 1) -> None:
        """``workers``: batches ``submit`` scores at once (in order of submission when 1)."""
        if not specs:
            raise ValueError("give at least one reward (e.g. clap:mini@1.0)")
        if workers < 1:
            raise ValueError(f"reward workers must be >= 1, got {workers}")
        self.terms = [RewardTerm.parse(s) for s in specs]
        self._pool = ThreadPoolExecutor(max_workers=workers)

    def __call__(
        self, audio: np.ndarray, rate: int, prompts: Sequence[Prompt]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Total reward per clip ``(B,)`` and each term's values (for logging)."""
        clips = [Clip(a[None] if a.ndim == 1 else a, rate, prompt=p) for a, p in zip(audio, prompts)]
        total = np.zeros(len(clips))
        parts = {}
        for term in self.terms:
            prepared = [prepare(c, term.scorer.sample_rate, term.scorer.channels) for c in clips]
            values = np.array([r.values.get(term.metric, math.nan) for r in term.scorer.score(prepared)])
            parts[f"{term.scorer.label}#{term.metric}"] = values
            total = total + term.weight * values  # NaN stays NaN
        return total, parts

    def submit(self, audio: np.ndarray, rate: int, prompts: Sequence[Prompt]) -> Future:
        """Score in a background thread (overlapping the next rollout); ``.result()`` gives ``__call__``'s."""
        return self._pool.submit(self, audio, rate, list(prompts))
