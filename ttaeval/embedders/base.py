"""The embedding scorer: clips in, per-clip artefacts out, for the set metrics (FAD and its family).

An embedder is a scorer like any other (``embed:vggish``, ``embed:panns,variant=32k``): built from a
spec, run by ``ttaeval run``/``score`` at its own sample rate, cached in the store by clip content
and its id. It returns no per-clip metric, only artefacts:

- ``audio_embedding``: one ``(dim,)`` vector per clip (the mean frame for per-frame models);
- ``frames``: ``(frames, dim)`` for per-frame models (VGGish examples, OpenL3 or EnCodec frames):
  FAD statistics use every frame as a sample, as the FAD paper and fadtk do;
- ``logits``: ``(classes,)`` for classifiers (PANNs, PaSST) — KL and IS read them.

A subclass is a dataclass whose fields are its options and implements ``embed_batch`` on clips
already at its ``sample_rate``/``channels``. NaN or Inf in an output fails the clip (with the reason);
it is never stored as a number.
"""

from __future__ import annotations

import dataclasses
from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np

from ttaeval.checkpoints import weights_digest
from ttaeval.io.audio import Clip, prepare
from ttaeval.records import ScoreResult
from ttaeval.scorers.base import Scorer

EMBEDDING = "audio_embedding"
FRAMES = "frames"
LOGITS = "logits"


class EmbeddingScorer(Scorer):
    """Base of the ``embed:*`` backends. Subclasses set ``backend``, ``sample_rate`` (or set it in
    ``__post_init__`` when an option decides it), ``per_frame``, and implement ``embed_batch``.

    ``weight_options`` name the fields that point at weight files or folders: the id carries their
    content digest (``weights=...``), never their path. ``dtype`` is among the options here and
    enters the id only when it is not float32 (``Scorer.id_neutral``, applied by ``Scorer.id``).
    """

    name: ClassVar[str] = "embed"
    metrics = ()
    channels: ClassVar[int | None] = 1
    per_frame: ClassVar[bool] = False
    artefacts: ClassVar[tuple[str, ...]] = (EMBEDDING,)
    """The artefacts every clip gets (``ttaeval scorers`` lists them)."""
    weight_options: ClassVar[tuple[str, ...]] = ("checkpoint",)
    id_exclude = ("batch_size", "device")

    def identity_options(self) -> dict[str, object]:
        """The options, weight files by content digest (hashed once: ``id`` is read per batch)."""
        cached = self.__dict__.get("_identity")
        if cached is not None:
            return cached
        opts: dict[str, object] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if f.name in self.id_exclude:
                continue
            if f.name in self.weight_options:
                opts["weights" if f.name == "checkpoint" else f"{f.name}_weights"] = (
                    weights_digest(Path(value)) if value else None
                )
            else:
                opts[f.name] = value
        self.__dict__["_identity"] = opts
        return opts

    @abstractmethod
    def embed_batch(self, clips: Sequence[Clip]) -> list[dict[str, np.ndarray]]:
        """Artefacts of each clip (already at ``sample_rate``/``channels``), in order."""

    def score_batch(self, clips: Sequence[Clip]) -> list[ScoreResult]:
        out = []
        for arts in self.embed_batch(clips):
            bad = sorted(k for k, a in arts.items() if not np.isfinite(a).all())
            if bad:
                out.append(ScoreResult.failed_with((), f"{self.label} gave NaN/Inf in {', '.join(bad)}"))
            else:
                out.append(ScoreResult({}, artefacts={k: np.asarray(a, np.float32) for k, a in arts.items()}))
        return out

    # -- direct use on clips at any rate (folders, tests, benchmarks) ------------------------------
    def outputs(self, clips: Sequence[Clip]) -> list[dict[str, np.ndarray]]:
        """Each clip's artefacts, the clips converted to this embedder's rate and channels first.
        Raises ValueError naming the clip when one cannot be embedded."""
        prepared = [prepare(c, self.sample_rate, self.channels) for c in clips]
        results = self.score(prepared)
        for clip, result in zip(clips, results):
            if result.failed:
                raise ValueError(f"{clip.source or 'clip'}: {result.error}")
        return [r.artefacts for r in results]

    def embed(self, clips: Sequence[Clip]) -> np.ndarray:
        """``(len(clips), dim)`` clip embeddings."""
        return np.stack([a[EMBEDDING] for a in self.outputs(clips)])

    def embed_frames(self, clips: Sequence[Clip]) -> list[np.ndarray]:
        """One ``(frames, dim)`` array per clip; clip-level models give their one embedding."""
        return [a.get(FRAMES, a[EMBEDDING][None]) for a in self.outputs(clips)]

    def logits(self, clips: Sequence[Clip]) -> np.ndarray:
        """``(len(clips), classes)`` class logits (classifiers only: PANNs, PaSST)."""
        if LOGITS not in self.artefacts:
            raise ValueError(f"{self.label} is no classifier: it gives no logits")
        return np.stack([a[LOGITS] for a in self.outputs(clips)])

    def fad_samples(self, clips: Sequence[Clip]) -> np.ndarray:
        """The rows FAD statistics are computed from: every frame for per-frame models, else clips."""
        return fad_samples(self.outputs(clips))


def fad_samples(artefacts: Sequence[dict[str, np.ndarray]]) -> np.ndarray:
    """FAD samples of clips' artefacts: their frames where the model has them, else one embedding
    each."""
    if artefacts and all(FRAMES in a for a in artefacts):
        return np.concatenate([a[FRAMES] for a in artefacts])
    return np.stack([a[EMBEDDING] for a in artefacts])


def per_frame_artefacts(frames: np.ndarray) -> dict[str, np.ndarray]:
    """A per-frame model's artefacts: its frames and their mean as the clip's embedding."""
    frames = np.asarray(frames, np.float32)
    if frames.ndim != 2 or len(frames) == 0:
        raise ValueError(f"expected (frames, dim) with at least one frame, got shape {frames.shape}")
    return {FRAMES: frames, EMBEDDING: frames.mean(axis=0)}


def require_file(path: Path | None, what: str, hint: str) -> Path:
    """``path`` when it is a file, else FileNotFoundError naming the option to pass."""
    if not path or not Path(path).is_file():
        raise FileNotFoundError(f"{what} checkpoint not found: {path} (checkpoint=PATH to {hint})")
    return Path(path)


def same_length_batches(clips: Sequence[Clip], batch_size: int) -> list[np.ndarray]:
    """Indices of clips grouped by length (stable order), in batches of at most ``batch_size``: a
    batch is stacked without padding, so no padding enters a clip's embedding."""
    lengths = np.array([c.num_samples for c in clips])
    batches: list[np.ndarray] = []
    current: list[int] = []
    for i in np.argsort(lengths, kind="stable"):
        if current and (len(current) == batch_size or lengths[current[0]] != lengths[i]):
            batches.append(np.array(current))
            current = []
        current.append(int(i))
    if current:
        batches.append(np.array(current))
    return batches
