"""The records that scorers produce and the store keeps: what a metric is, and one clip's result.

Nothing here imports a scorer, a model or the store, so every layer can share these types.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal, Protocol

import numpy as np

Status = Literal["ok", "failed", "n/a"]
"""A metric value's status: a number, a failure (with its reason), or not applicable to the clip
(a relation question for a one-event prompt, a metric weighted 0): left out of means like a
failure, but never counted as one."""


@dataclass(frozen=True)
class MetricSpec:
    """What a metric is: its name, which direction is better, and its range.

    ``higher_is_better`` is None for descriptive metrics (loudness, duration) that have no better
    direction.
    """

    name: str
    higher_is_better: bool | None
    range: tuple[float, float] = (-math.inf, math.inf)
    description: str = ""

    @property
    def arrow(self) -> str:
        return {True: "↑", False: "↓", None: ""}[self.higher_is_better]


@dataclass
class ScoreResult:
    """The outcome of scoring one clip.

    Attributes:
        values: every metric of the scorer -> value; NaN where it could not be computed.
        errors: metric -> reason, for every NaN that is a failure.
        not_applicable: metric -> why it does not apply, for every NaN that is not a failure.
        artefacts: per-clip arrays kept by the store for set-level metrics (embeddings, logits).
        failure: why the clip could not be scored at all (the only sign of failure for scorers that
            return artefacts and no metric, such as embedders).
    """

    values: dict[str, float]
    errors: dict[str, str] = field(default_factory=dict)
    artefacts: dict[str, np.ndarray] = field(default_factory=dict)
    not_applicable: dict[str, str] = field(default_factory=dict)
    failure: str | None = None

    @classmethod
    def failed_with(cls, metrics: Sequence[MetricSpec], reason: str) -> ScoreResult:
        """A clip that could not be scored: every metric NaN with ``reason``."""
        return cls({m.name: math.nan for m in metrics}, {m.name: reason for m in metrics}, failure=reason)

    def status(self, metric: str) -> Status:
        if metric in self.not_applicable:
            return "n/a"
        value = self.values.get(metric, math.nan)
        return "ok" if math.isfinite(value) and metric not in self.errors else "failed"

    @property
    def ok(self) -> bool:
        """Every metric has a value or does not apply, and the clip did not fail."""
        return self.failure is None and not self.errors

    @property
    def failed(self) -> bool:
        """Nothing could be computed for the clip (retried on the next run). A result whose metrics
        all do not apply is not a failure; neither is one with no metric (artefacts only)."""
        if self.failure is not None:
            return True
        if not self.values or any(math.isfinite(v) for v in self.values.values()):
            return False
        return not all(k in self.not_applicable for k in self.values)

    @property
    def error(self) -> str | None:
        """All distinct failure reasons joined, or None when nothing failed."""
        reasons = ([self.failure] if self.failure else []) + list(self.errors.values())
        return "; ".join(dict.fromkeys(reasons)) or None


class ScorerInfo(Protocol):
    """What the store records of a scorer (every ``Scorer`` has these): the store needs no more, and
    so never imports the scorers."""

    id: str
    label: str
    uses_prompt: bool
    metrics: tuple[MetricSpec, ...]


@dataclass(frozen=True)
class Efficiency:
    """How one clip was made: stored with it (``ClipRecord.efficiency``)."""

    seconds: float
    """Generation wall time of the clip: its call's time divided by the call's clips."""
    rtf: float
    """Real-time factor: ``seconds`` / the clip's duration."""
    peak_memory: int | None
    """Bytes at the call's peak (``memory_kind`` says which measure); None when unmeasurable."""
    memory_kind: str
    """``cuda peak allocated`` (GPU) or ``peak RSS growth`` (CPU process)."""
    batch_size: int
    """Clips made by the call."""
    device: str
    """Where the generator computed."""

    def to_json(self) -> str:
        return json.dumps(asdict(self))
