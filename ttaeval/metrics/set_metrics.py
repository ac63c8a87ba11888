"""Set metrics as a registry, computed from the artefacts a run store keeps.

A set metric is one small class: its name, the artefact it reads, its direction, how it pairs a
system's clips with the reference's (unpaired, or by prompt id), its options (dataclass fields), and
``compute``. It is named by a spec ``METRIC:SCORER[,KEY=VALUE]...`` — ``fad:embed:vggish``,
``fd:embed:panns``, ``kl:embed:panns,posterior=sigmoid``, ``is:embed:panns`` — where ``SCORER`` picks
the run's scorer whose artefacts it reads (``NAME:BACKEND``, or the label the scorer was given).

``evaluate_set_metrics(store, reference=..., specs=..., by=...)`` computes them for every system
against the reference system: the leaderboard, the report, ``ttaeval fad`` and the protocols all
call it, so a number means the same wherever it is printed. Embeddings are read from the store
(never recomputed) and turned into float64 statistics.

Third-party packages add set metrics through the ``ttaeval.set_metrics`` entry-point group.
"""

from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd

from ttaeval.metrics import formulas
from ttaeval.registry import Registry, options_to_kwargs, parse_options

EMBEDDING, FRAMES, LOGITS = "audio_embedding", "frames", "logits"
SAMPLES = "samples"
"""A metric that reads ``samples`` gets each clip's frames where the scorer stores them (VGGish,
OpenL3, EnCodec), else its one embedding: the FAD paper's choice for per-frame models."""


COLUMNS = (
    "group",
    "system",
    "metric",
    "higher_is_better",
    "mean",
    "ci_low",
    "ci_high",
    "n",
    "n_clips",
    "n_failed",
    "spec",
)
"""The columns of ``evaluate_set_metrics``' table: the leaderboard's (``best`` aside)."""


class SetMetricError(ValueError):
    """A set metric cannot be computed as asked (too few clips, mismatched embedding models, NaN)."""


class SetMetric(ABC):
    """Base of every set metric; subclasses are dataclasses whose fields are the options."""

    name: ClassVar[str]
    """Registry name (``fad``)."""
    label: ClassVar[str]
    """Column suffix in tables (``FAD``): ``SCORER_LABEL/LABEL``."""
    artefact: ClassVar[str]
    """What it reads: ``samples``, ``audio_embedding`` or ``logits``."""
    higher_is_better: ClassVar[bool]
    paired: ClassVar[bool] = False
    """Pairs each generated clip with the reference clip of the same prompt id."""
    needs_reference: ClassVar[bool] = True
    min_clips: ClassVar[int] = 2

    @property
    def column(self) -> str:
        return self.label

    @abstractmethod
    def compute(self, generated: list[np.ndarray], reference: list[np.ndarray] | None) -> float:
        """The value from per-clip arrays (aligned by pair for paired metrics)."""


def _rows(arrays: list[np.ndarray]) -> np.ndarray:
    """Per-clip arrays (each ``(dim,)`` or ``(frames, dim)``) stacked to ``(n, dim)`` float64."""
    return np.concatenate([np.atleast_2d(a) for a in arrays]).astype(np.float64)


@dataclass
class FAD(SetMetric):
    """Frechet distance of the Gaussian fits of the two sets' samples (frames for per-frame models)."""

    name = "fad"
    label = "FAD"
    artefact = SAMPLES
    higher_is_better = False

    def compute(self, generated, reference):
        return formulas.fad(_rows(generated), _rows(reference))


@dataclass
class FD(FAD):
    """Frechet distance of clip embeddings (one per clip: audioldm-eval's FD on PANNs)."""

    name = "fd"
    label = "FD"
    artefact = EMBEDDING


@dataclass
class FADInf(SetMetric):
    """FAD extrapolated to infinite N (fadtk): FAD of ``steps`` seeded subsets, intercept at 1/N = 0.
    ``min_size`` 0 means half the set, at most 500."""

    name = "fad_inf"
    label = "FAD-inf"
    artefact = SAMPLES
    higher_is_better = False
    steps: int = 15
    min_size: int = 0
    seed: int = 0

    def compute(self, generated, reference):
        x = _rows(generated)
        size = self.min_size or max(2, min(500, len(x) // 2))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # n <= d is said once per table, not once per subset
            return formulas.fad_inf(
                x, _rows(reference), steps=self.steps, min_size=size, seed=self.seed
            ).value


@dataclass
class KAD(SetMetric):
    """Kernel audio distance (unbiased MMD^2), bandwidth from the reference set unless given."""

    name = "kad"
    label = "KAD"
    artefact = SAMPLES
    higher_is_better = False
    bandwidth: float = 0.0
    """0: the median pairwise distance of the reference set."""

    def compute(self, generated, reference):
        return formulas.kad(_rows(generated), _rows(reference), bandwidth=self.bandwidth or None)


@dataclass
class PerClipFAD(SetMetric):
    """Mean over clips of each clip's own frame statistics against the reference set's (fadtk's
    per-song FAD); clips with fewer than two frames are left out."""

    name = "fad_per_clip"
    label = "FAD-per-clip"
    artefact = SAMPLES
    higher_is_better = False

    def compute(self, generated, reference):
        values = formulas.fad_per_clip([np.atleast_2d(g) for g in generated], _rows(reference))
        if not np.isfinite(values).any():
            raise SetMetricError("per-clip FAD needs clips of at least two frames")
        return float(np.nanmean(values))


@dataclass
class KL(SetMetric):
    """Mean over prompt-paired clips of a KL divergence between class posteriors.

    ``posterior``: ``softmax`` or ``sigmoid`` (per class) of the logits; ``direction``: ``ref_gen``
    is KL(ref || gen) (audioldm-eval), ``gen_ref`` is KL(gen || ref) (stable-audio-metrics).
    """

    name = "kl"
    label = "KL"
    artefact = LOGITS
    higher_is_better = False
    paired = True
    min_clips = 1
    posterior: str = "softmax"
    direction: str = "ref_gen"

    def __post_init__(self) -> None:
        if self.posterior not in ("softmax", "sigmoid") or self.direction not in ("ref_gen", "gen_ref"):
            raise ValueError(
                f"kl: posterior must be softmax or sigmoid and direction ref_gen or gen_ref, got "
                f"{self.posterior!r}, {self.direction!r}"
            )

    @property
    def column(self) -> str:
        return "KL" + ("_sigmoid" if self.posterior == "sigmoid" else "")

    def compute(self, generated, reference):
        g, r = _rows(generated), _rows(reference)
        if self.direction == "ref_gen":
            return formulas.kl_audioldm(g, r, self.posterior)
        if self.posterior != "softmax":
            raise ValueError("kl direction gen_ref (stable-audio-metrics) is defined on softmax posteriors")
        return formulas.kl_sam(g, r)


@dataclass
class IS(SetMetric):
    """Inception score of the generated clips' logits (audioldm-eval: 10 splits, RandomState(2020)
    shuffle); no reference."""

    name = "is"
    label = "IS"
    artefact = LOGITS
    higher_is_better = True
    needs_reference = False
    splits: int = 10
    seed: int = 2020

    def compute(self, generated, reference):
        return formulas.inception_score(_rows(generated), splits=self.splits, shuffle_seed=self.seed).mean


SET_METRICS: Registry[type[SetMetric]] = Registry("set metric", entry_points="ttaeval.set_metrics")
for _cls in (FAD, FD, FADInf, KAD, PerClipFAD, KL, IS):
    SET_METRICS.register(_cls.name, _cls)

DEFAULT_SET_METRICS = ("fad", "fad_inf", "kad")
"""What a leaderboard with a reference computes for every scorer that stores clip embeddings, when
no protocol names its own."""


@dataclass(frozen=True)
class SetMetricSpec:
    """A parsed ``METRIC:SCORER[,KEY=VALUE]...``."""

    metric: str
    scorer: str
    options: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        return ",".join([f"{self.metric}:{self.scorer}", *(f"{k}={v}" for k, v in self.options)])

    def build(self) -> SetMetric:
        cls = SET_METRICS.get(self.metric)
        return cls(**options_to_kwargs(cls, self.options, f"set metric {self.metric}"))


def parse_set_metric(spec: str) -> SetMetricSpec:
    """``fad:embed:vggish`` -> (fad, embed:vggish); options after commas are the metric's."""
    head, *parts = [p.strip() for p in spec.strip().split(",")]
    metric, colon, scorer = head.partition(":")
    if not colon or not metric or not scorer:
        raise ValueError(f"set metric spec {spec!r}: expected METRIC:SCORER, e.g. fad:embed:vggish")
    parsed = SetMetricSpec(metric, scorer, parse_options(parts, spec, "set metric"))
    parsed.build()  # unknown metrics and options fail here, before any work
    return parsed


def _scorer_ids(store_scorers: pd.DataFrame, selector: str) -> list[tuple[str, str]]:
    """(scorer id, label) of the stored scorers ``selector`` names: by ``NAME:BACKEND`` or label."""
    out = []
    for sid, label in zip(store_scorers["scorer_id"], store_scorers["label"]):
        if sid.split("@", 1)[0] == selector or label == selector:
            out.append((sid, label))
    return out


def _artefacts(store, scorer_id: str, artefact: str) -> pd.DataFrame:
    if artefact != SAMPLES:
        return store.artefacts(scorer_id, artefact)
    frames = store.artefacts(scorer_id, FRAMES)
    return frames if not frames.empty else store.artefacts(scorer_id, EMBEDDING)


def _choose_scorer(
    store, spec: SetMetricSpec, metric: SetMetric, systems: Sequence[str], reference: str | None
) -> tuple[str, str, pd.DataFrame]:
    """The one stored scorer whose artefacts hold the reference's and the systems' clips."""
    scorers = store.scorers()
    candidates = _scorer_ids(scorers, spec.scorer)
    if not candidates:
        known = ", ".join(sorted(scorers["label"])) or "none"
        raise SetMetricError(f"{spec}: no scorer {spec.scorer!r} in this run (its scorers: {known})")
    found = []
    for sid, label in candidates:
        arts = _artefacts(store, sid, metric.artefact)
        if arts.empty:
            continue
        have = set(arts["system"])
        found.append((sid, label, arts, have))
    if not found and not any(
        store.has_artefacts(sid, name) for sid, _ in candidates for name in (EMBEDDING, FRAMES, LOGITS)
    ):  # the scorer ran and every clip failed: no number, the failures counted (not a usage error)
        sid, label = candidates[0]
        return sid, label, pd.DataFrame(columns=["system", "prompt_id", "sample", "array"])
    if not found:
        hint = (
            "classifiers such as embed:panns store logits" if metric.artefact == LOGITS else "score with it"
        )
        raise SetMetricError(
            f"{spec}: the run stores no {metric.artefact} artefacts of {spec.scorer} ({hint})"
        )
    wanted = set(systems) | ({reference} if reference else set())
    complete = [f for f in found if wanted <= f[3]]
    if len(complete) == 1:
        sid, label, arts, _ = complete[0]
        return sid, label, arts
    if len(complete) > 1:
        raise SetMetricError(
            f"{spec}: several scorers {spec.scorer} hold every system's clips "
            f"({', '.join(f[0] for f in complete)}); name one by its label"
        )
    if reference:
        ref_ids = [f[0] for f in found if reference in f[3]]
        for system in systems:
            own = [f[0] for f in found if system in f[3]]
            if own and ref_ids and not set(own) & set(ref_ids):
                raise SetMetricError(
                    f"{spec}: system {system!r} was embedded by {', '.join(own)} and the reference "
                    f"{reference!r} by {', '.join(ref_ids)}: different embedding models cannot be "
                    "compared; score both with the same scorer"
                )
    sid, label, arts, _ = max(found, key=lambda f: len(f[3]))
    return sid, label, arts


def evaluate_set_metrics(
    store,
    *,
    reference: str | None,
    specs: Sequence[str] | None = None,
    by: str | None = None,
    systems: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Every set metric of every system against ``reference`` (a system of the run).

    Args:
        store: a ``RunStore`` holding the clips' artefacts.
        reference: the reference system (metrics that need none, like IS, run without it).
        specs: set metric specs; None means ``DEFAULT_SET_METRICS`` for every scorer that stores
            clip embeddings.
        by: compute within each group of prompts (``dimension`` or a prompt attribute).
        systems: which systems (default: every system with clips, the reference excepted).

    Returns:
        Long table, one row per (group,) system and metric: ``metric`` (``SCORER_LABEL/LABEL``),
        ``higher_is_better``, ``mean`` (the value), ``n`` (clips or pairs used), ``n_clips``,
        ``n_failed`` (clips without the artefact), ``ci_low``/``ci_high`` (NaN: no CI), ``spec``.

    Raises:
        SetMetricError: fewer than two reference clips (with ``by``, such a group is left out with a
            warning instead), NaN in an artefact, generated and reference
            clips embedded by different models, a paired metric without any pair.
    """
    clips = store.clips()
    if reference is not None and reference not in set(clips["system"]):
        raise SetMetricError(f"reference system {reference!r} is not in the run")
    all_systems = sorted(s for s in set(clips["system"]) if s != reference)
    systems = list(systems) if systems is not None else all_systems
    if specs is None:
        scorers = store.scorers()
        with_embeddings = [  # named by label, or by NAME:BACKEND where the label holds options
            sid.split("@", 1)[0] if "," in label else label
            for sid, label in zip(scorers["scorer_id"], scorers["label"])
            if store.has_artefacts(sid, EMBEDDING)
        ]
        specs = [f"{m}:{label}" for label in dict.fromkeys(with_embeddings) for m in DEFAULT_SET_METRICS]
        specs = specs if reference is not None else []
    groups = store.prompt_groups(by) if by else None
    clips = clips.assign(group=clips["prompt_id"].map(groups) if groups is not None else "")
    rows = []
    for text in specs:
        spec = parse_set_metric(text)
        metric = spec.build()
        if metric.needs_reference and reference is None:
            raise SetMetricError(f"{spec} compares against a reference: give a reference system")
        _, label, arts = _choose_scorer(store, spec, metric, systems, reference)
        arts = arts.merge(
            clips[["system", "prompt_id", "sample", "group"]], on=["system", "prompt_id", "sample"]
        )
        for group in sorted(set(clips["group"])):
            in_group = arts[arts["group"] == group]
            ref = in_group[in_group["system"] == reference] if reference else None
            ref_clips = int(((clips["system"] == reference) & (clips["group"] == group)).sum())
            no_value = False
            if in_group.empty:  # nothing to compare: each system's row says how many clips failed
                ref = None
            elif ref is not None and by and len(ref) < 2:  # a group the reference does not cover
                warnings.warn(
                    f"{spec}: left out for {by} = {group}: the reference has {len(ref)} clip(s) there",
                    stacklevel=2,
                )
                continue
            elif ref is not None and len(ref) < 2 <= ref_clips:  # the reference's clips failed
                warnings.warn(
                    f"{spec}: no value: {ref_clips - len(ref)} of the reference's {ref_clips} clips failed",
                    stacklevel=2,
                )
                no_value = True
            if ref is not None and not no_value:
                _check_set(
                    ref, f"{spec}: the reference {reference!r}" + (f" in group {group!r}" if by else ""), 2
                )
            for system in systems:
                part = in_group[in_group["system"] == system]
                n_clips = int(((clips["system"] == system) & (clips["group"] == group)).sum())
                if n_clips == 0:
                    continue
                if no_value:  # the system's own clips are fine: only its failures are counted
                    row = _row(spec, metric, label, system, group, part.iloc[:0], None, n_clips, by)
                    rows.append({**row, "n_failed": n_clips - len(part)})
                    continue
                rows.append(_row(spec, metric, label, system, group, part, ref, n_clips, by))
    singular = [r.pop("_singular") for r in rows if "_singular" in r]
    if singular:
        more = f" (and {len(singular) - 1} more)" if len(singular) > 1 else ""
        warnings.warn(
            f"singular covariances, fewer samples than dimensions: {singular[0]}{more}; Frechet "
            "distances are biased there and comparable only at equal n",
            stacklevel=2,
        )
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _check_set(part: pd.DataFrame, what: str, minimum: int) -> None:
    if len(part) < minimum:
        raise SetMetricError(f"{what} has {len(part)} clip(s) with embeddings; at least {minimum} are needed")
    bad = [
        f"{p}#{s}"
        for p, s, a in zip(part["prompt_id"], part["sample"], part["array"])
        if not np.isfinite(a).all()
    ]
    if bad:
        raise SetMetricError(f"{what}: NaN/Inf in the embeddings of {', '.join(bad[:5])}")
    dims = {a.shape[-1] for a in part["array"]}
    if len(dims) > 1:
        raise SetMetricError(f"{what}: embeddings of different dimensions {sorted(dims)}")


def _row(spec, metric, label, system, group, part, ref, n_clips, by) -> dict:
    where = f"system {system!r}" + (f" in group {group!r}" if by else "")
    base = {
        "group": group,
        "system": system,
        "metric": f"{label}/{metric.column}",
        "higher_is_better": metric.higher_is_better,
        "ci_low": math.nan,
        "ci_high": math.nan,
        "n_clips": n_clips,
        "n_failed": n_clips - len(part),
        "spec": str(spec),
    }
    if len(part) < metric.min_clips:  # its clips failed: no number, and the failures are counted
        return {**base, "mean": math.nan, "n": len(part)}
    _check_set(part, f"{spec}: {where}", metric.min_clips)
    gen = list(part["array"])
    refs = list(ref["array"]) if ref is not None else None
    if refs is not None and gen[0].shape[-1] != refs[0].shape[-1]:
        raise SetMetricError(
            f"{spec}: {where} has {gen[0].shape[-1]}-d embeddings, the reference {refs[0].shape[-1]}-d"
        )
    n = len(gen)
    if metric.paired:
        first = {}
        for pid, arr in zip(ref["prompt_id"], ref["array"]):
            first.setdefault(pid, arr)
        pairs = [(g, first[p]) for p, g in zip(part["prompt_id"], gen) if p in first]
        if not pairs:
            raise SetMetricError(f"{spec}: {where} shares no prompt id with the reference: nothing to pair")
        gen, refs, n = [g for g, _ in pairs], [r for _, r in pairs], len(pairs)
    elif metric.artefact == SAMPLES and refs is not None:
        n_rows = min(sum(len(np.atleast_2d(a)) for a in gen), sum(len(np.atleast_2d(a)) for a in refs))
        if n_rows <= gen[0].shape[-1]:  # gathered into one warning by evaluate_set_metrics
            base["_singular"] = f"{spec} of {where}: {n_rows} samples of dimension {gen[0].shape[-1]}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            value = metric.compute(gen, refs)
        except ValueError as exc:  # a formula's own limits (IS splits, FAD-inf sizes): not a number
            warnings.warn(f"{spec} of {system}: not computed: {exc}", stacklevel=3)
            value = math.nan
    return {**base, "mean": float(value), "n": n}
