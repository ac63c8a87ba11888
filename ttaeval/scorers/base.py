"""The scorer contract shared by the benchmark runner and the trainers.

A scorer is a dataclass whose fields are its options (every knob documented on the field). It
declares its metrics, the sample rate and channel count it wants (the framework resamples once
before calling it), and whether it reads the prompt. ``score(clips)`` takes a batch and returns one
``ScoreResult`` per clip: a value for every metric, and for every NaN the reason — never a silent 0.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from ttaeval.io.audio import Clip
from ttaeval.records import MetricSpec, ScoreResult

__all__ = ["MetricSpec", "ScoreResult", "Scorer"]


class Scorer(ABC):
    """Base class of every scorer. Subclasses are dataclasses: their fields are the options.

    Class attributes to set:
        name, backend: the spec ``name:backend`` the scorer is registered under.
        version: bump when the numbers change for the same options.
        metrics: the MetricSpecs ``score`` returns (none for embedding scorers: their results are
            artefacts only, and a clip that failed says so in ``ScoreResult.failure``).
        sample_rate, channels: what the audio is converted to before ``score_batch`` (None: as is).
        uses_prompt: whether scores depend on the prompt (then cache keys include the prompt content).
        id_exclude: option names that do not change the numbers (batch size, device) and stay out of
            the id.
        id_neutral: options that enter the id only when set to something other than the value given
            here: knobs added after ids were first stored whose neutral value computes what those ids
            name (``dtype``: float32 is how every model ran before it existed), so the ids, and the
            caches under them, stay valid. See ``id``.

    Scorers that run a torch model have a ``device`` field ("auto" allowed) and a ``dtype`` field,
    and call ``bind_device`` first in ``__post_init__`` and run their forward passes under
    ``precision()``.
    """

    name: ClassVar[str]
    backend: ClassVar[str]
    version: ClassVar[str] = "1"
    metrics: ClassVar[tuple[MetricSpec, ...]]
    sample_rate: ClassVar[int | None] = None
    channels: ClassVar[int | None] = None
    uses_prompt: ClassVar[bool] = False
    id_exclude: ClassVar[tuple[str, ...]] = ("batch_size", "device")
    id_neutral: ClassVar[dict[str, object]] = {"dtype": "float32"}
    batch_size: int

    @property
    def label(self) -> str:
        """The spec the scorer was built from (``get_scorer`` sets it), for tables and messages."""
        return self.__dict__.get("spec") or f"{self.name}:{self.backend}"

    @property
    def id(self) -> str:
        """Full identity: name, backend, version and every option that changes the numbers.

        The one rule for ``id_neutral`` options (every backend, whatever its ``identity_options``):
        one at its neutral value is left out, one at any other value is in (``dtype=bfloat16``).
        """
        opts = dict(self.identity_options())
        for key, neutral in self.id_neutral.items():
            value = opts.get(key, getattr(self, key, neutral))
            if value == neutral:
                opts.pop(key, None)
            else:
                opts[key] = value
        text = ",".join(f"{k}={v}" for k, v in sorted(opts.items()))
        return f"{self.name}:{self.backend}@{self.version}" + (f",{text}" if text else "")

    def identity_options(self) -> dict[str, object]:
        """Options that enter the id. Backends with weight files override this to put a digest there."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
            if f.name not in self.id_exclude
        }

    # -- torch models: device and precision ----------------------------------------------------------
    def bind_device(self) -> None:
        """Check the ``dtype`` field (an unknown name fails here, before any weight is read) and
        resolve the ``device`` field once, where the model is about to load: "auto" becomes the local
        GPU, else the CPU; under torchrun, a CUDA device becomes ``cuda:LOCAL_RANK``."""
        from ttaeval.devices import resolve_device, resolve_dtype

        where = f"{self.name}:{self.backend}"
        try:
            resolve_dtype(self.dtype)  # type: ignore[attr-defined]
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        self.device = str(resolve_device(self.device))  # type: ignore[attr-defined]

    def precision(self):
        """The context of every forward pass: autocast in ``dtype`` on ``device`` (weights stay
        float32), nothing for float32. Outputs are made float32 (``.float()``) before they are read."""
        from ttaeval.devices import autocast

        return autocast(self.device, self.dtype)  # type: ignore[attr-defined]

    def score(self, clips: Sequence[Clip]) -> list[ScoreResult]:
        """Score a batch; one result per clip, in order. Never raises for a bad clip.

        Clips must already be at ``sample_rate``/``channels`` (the runner prepares them once). A
        batch that fails is retried clip by clip, so one bad clip cannot sink the others.
        """
        results: list[ScoreResult | None] = [None] * len(clips)
        todo = []
        for i, clip in enumerate(clips):
            reason = self._precheck(clip)
            if reason:
                results[i] = ScoreResult.failed_with(self.metrics, reason)
            else:
                todo.append(i)
        size = max(1, int(getattr(self, "batch_size", 16)))
        for start in range(0, len(todo), size):
            idx = todo[start : start + size]
            for i, result in zip(idx, self._score_isolated([clips[i] for i in idx])):
                results[i] = result
        return results  # type: ignore[return-value]

    @abstractmethod
    def score_batch(self, clips: Sequence[Clip]) -> list[ScoreResult]:
        """Score clips that passed the checks; may raise (the caller isolates the failing clip)."""

    def _precheck(self, clip: Clip) -> str | None:
        if self.sample_rate is not None and clip.sample_rate != self.sample_rate:
            return f"{self.name} expects {self.sample_rate} Hz audio, got {clip.sample_rate} Hz"
        if self.channels is not None and clip.channels != self.channels:
            return f"{self.name} expects {self.channels} channel(s), got {clip.channels}"
        if self.uses_prompt and clip.prompt is None:
            return f"{self.name} scores audio against its prompt, and this clip has none"
        if clip.num_samples == 0:
            return "empty audio"
        if not np.isfinite(clip.audio).all():
            return "audio holds NaN/Inf samples"
        return None

    def _score_isolated(self, clips: list[Clip]) -> list[ScoreResult]:
        try:
            results = self.score_batch(clips)
            if len(results) != len(clips):
                raise RuntimeError(f"{self.name} returned {len(results)} results for {len(clips)} clips")
        except Exception as exc:
            if len(clips) == 1:
                return [
                    ScoreResult.failed_with(self.metrics, f"{self.name} failed: {type(exc).__name__}: {exc}")
                ]
            return [r for clip in clips for r in self._score_isolated([clip])]
        return [self._complete(r) for r in results]

    def _complete(self, result: ScoreResult) -> ScoreResult:
        """Every metric present; every NaN with a reason."""
        for m in self.metrics:
            value = result.values.get(m.name, math.nan)
            result.values[m.name] = float(value)
            if math.isnan(value) and m.name not in result.errors and m.name not in result.not_applicable:
                result.errors[m.name] = f"{self.name} returned no value for {m.name}"
        return result
