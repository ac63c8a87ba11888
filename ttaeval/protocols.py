"""Named metric protocols, and the formulas they pin down.

A protocol fixes a whole metric definition so that numbers are comparable with published ones:
which scorers, with which released checkpoints, at which sample rates and windows, and which
set-level formulas in which direction. ``PROTOCOLS`` holds ``tta-bench``, ``audiocaps-sam`` and
``audioldm-eval``; ``ttaeval protocols --explain NAME`` prints one. The formulas:

- Robustness (TTA-Bench): each perturbed prompt's score divided by its source prompt's score
  (the source id is in the perturbed prompt's ``notes``), averaged per perturbation type.
- Fairness score FS (TTA-Bench): for each family of groups (gender, age, language, from the
  prompt's ``notes``), the mean over group pairs of 100 * |a - b| / max(a, b), with a, b the
  groups' mean scores.
- Set metrics (audioldm-eval, audiocaps-sam): executable specs such as ``fd:embed:panns`` that the
  runner's scorers produce artefacts for and ``ttaeval.metrics.set_metrics`` computes.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pandas as pd

from ttaeval.io.prompts import Prompt
from ttaeval.registry import Registry
from ttaeval.scorers import Scorer

_TRAILING_NUMBER = re.compile(r"(\d+)$")


def source_id(perturbed: Prompt, ids: Iterable[str]) -> str | None:
    """The source prompt id of a robustness prompt: ``notes`` as an id, or as a prompt number.

    TTA-Bench's own files write ``"notes": "8"`` for ``prompt_0008``, and for synonyms
    ``"8; rattling->clattering, 4"`` (source number first).
    """
    raw = str(perturbed.attributes.get("notes") or "").strip()
    ids = list(ids)
    if raw in ids:
        return raw
    note = raw.split(";", 1)[0].strip()
    if note.isdigit():
        for pid in ids:
            m = _TRAILING_NUMBER.search(pid)
            if m and int(m.group(1)) == int(note):
                return pid
    return None


class Ratio(NamedTuple):
    """A robustness ratio: its value (NaN: n/a), the pairs it averages, and why pairs were left out
    or the ratio is n/a ('' when every pair counted)."""

    value: float
    n: int
    note: str = ""


NEAR_ZERO = 0.1
"""A source score below this share of the metric's typical (median positive) score, or not above
0, makes a ratio meaningless (a cosine of 0.003 turns a perturbed 0.2 into 67): such pairs are
left out."""


def near_zero_floor(values: Iterable[float]) -> float:
    """``NEAR_ZERO`` times the median of the positive finite ``values``: source scores below it are
    too close to 0 for a ratio (infinite when there is no positive value)."""
    positive = [v for v in values if math.isfinite(v) and v > 0]
    return NEAR_ZERO * float(np.median(positive)) if positive else math.inf


def robustness_ratios(
    scores: Mapping[str, float], prompts: Iterable[Prompt], floor: float | None = None
) -> dict[str, Ratio]:
    """Per perturbation type: mean of score(perturbed) / score(source) over the pairs, how many, and
    a note on what was left out.

    Pairs where either score is missing (NaN) are not counted. A ratio means something only for a
    score that is positive and not near 0: pairs whose source score is below ``floor`` (default:
    ``near_zero_floor`` of these scores; give the metric's own, from every system, so a weak system
    is not measured against its own near-zero scores) or not above 0, or whose perturbed score is
    negative, are left out and said so; when that leaves fewer than half of the scored pairs, the
    ratio is n/a (NaN) with the reason. A perturbation with no scored pair is NaN too.
    """
    prompts = list(prompts)
    ids = [p.id for p in prompts]
    pairs: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for p in prompts:
        kind = p.attributes.get("perturbation_type")
        if not kind:
            continue
        src = source_id(p, ids)
        a, b = scores.get(p.id, math.nan), scores.get(src, math.nan) if src else math.nan
        pairs.setdefault(kind, [])  # a perturbation with no scored pair still gets its (NaN) row
        if math.isfinite(a) and math.isfinite(b):
            pairs[kind].append((a, b))
    if floor is None:
        floor = near_zero_floor(b for kinds in pairs.values() for _, b in kinds)
    out = {}
    for kind, scored in pairs.items():
        usable = [a / b for a, b in scored if b > 0 and b >= floor and a >= 0]
        left = len(scored) - len(usable)
        if not scored:
            out[kind] = Ratio(math.nan, 0, "no scored pair")
        elif len(usable) * 2 < len(scored):
            out[kind] = Ratio(
                math.nan, len(usable), f"n/a: {left} of {len(scored)} pairs score near or below 0"
            )
        else:
            note = f"{left} of {len(scored)} pairs left out: score near or below 0" if left else ""
            out[kind] = Ratio(float(np.mean(usable)), len(usable), note)
    return out


def fairness_score(group_means: Mapping[str, float]) -> float:
    """TTA-Bench's FS: mean over group pairs of 100 * |a - b| / max(a, b) (0 = perfectly fair).

    Groups with a missing mean are left out; fewer than two groups give NaN. Scores must be
    positive for the ratio to mean anything.
    """
    values = [v for v in group_means.values() if math.isfinite(v)]
    if any(v <= 0 for v in values):
        raise ValueError("fairness score needs positive group means (a ratio of scores)")
    pairs = list(itertools.combinations(values, 2))
    if not pairs:
        return math.nan
    return float(np.mean([100 * abs(a - b) / max(a, b) for a, b in pairs]))


FAIRNESS_FAMILIES = {
    "gender": ("male", "female"),
    "age": ("old", "middle", "youth", "child"),
    "language": ("en", "zh", "other"),
}
"""TTA-Bench's demographic tags (a fairness prompt's ``notes``), by family."""


def tta_bench_summary(
    scores: pd.DataFrame,
    prompts: Iterable[Prompt],
    metrics: Sequence[str],
    ratio_metrics: Sequence[str] | None = None,
) -> pd.DataFrame:
    """TTA-Bench's tables from per-clip scores (columns ``system``, ``prompt_id`` and ``metrics``).

    Long table, one row per system, section, group and metric with ``value``, ``n`` (prompts) and
    ``note`` (what was left out, or why a value is n/a): ``dimension`` (mean per dimension),
    ``event_count`` and ``event_relation`` (accuracy prompts by attribute), ``robustness`` (mean
    ratio perturbed / source per perturbation type, both from the same system; only for
    ``ratio_metrics`` when given: scores whose ratio means something, not signal checks) and
    ``fairness`` (FS per family of groups, lower = fairer). Samples of one prompt are averaged
    first; NaN scores are left out.
    """
    prompts = list(prompts)
    info = pd.DataFrame(
        {
            "prompt_id": [p.id for p in prompts],
            "dimension": [p.dimension for p in prompts],
            **{
                key: [None if p.attributes.get(key) is None else str(p.attributes[key]) for p in prompts]
                for key in ("event_count", "event_relation")
            },
            "notes": [str(p.attributes.get("notes") or "") for p in prompts],
        }
    )
    rows = []
    floors = {m: near_zero_floor(scores.groupby(["system", "prompt_id"])[m].mean()) for m in metrics}
    for system, frame in scores.groupby("system", sort=True):
        per_prompt = (
            frame.groupby("prompt_id")[list(metrics)].mean().reset_index().merge(info, on="prompt_id")
        )
        for metric in metrics:
            for section in ("dimension", "event_count", "event_relation"):
                part = (
                    per_prompt
                    if section == "dimension"
                    else per_prompt[per_prompt["dimension"] == "accuracy"]
                )
                for group, values in part.groupby(section, sort=True)[metric]:
                    rows.append(
                        (system, section, str(group), metric, values.mean(), int(values.notna().sum()), "")
                    )
            by_id = dict(zip(per_prompt["prompt_id"], per_prompt[metric]))
            if ratio_metrics is None or metric in ratio_metrics:
                for kind, r in sorted(robustness_ratios(by_id, prompts, floors[metric]).items()):
                    rows.append((system, "robustness", kind, metric, r.value, r.n, r.note))
            fair = per_prompt[per_prompt["dimension"] == "fairness"]
            for family, tags in FAIRNESS_FAMILIES.items():
                groups = {t: fair.loc[fair["notes"] == t, metric].mean() for t in tags}
                n = int(fair.loc[fair["notes"].isin(tags), metric].notna().sum())
                if n:
                    rows.append((system, "fairness", family, metric, _fairness_or_nan(groups), n, ""))
    return pd.DataFrame(rows, columns=["system", "section", "group", "metric", "value", "n", "note"])


def _fairness_or_nan(groups: Mapping[str, float]) -> float:
    try:
        return fairness_score(groups)
    except ValueError:  # a metric that is not a positive score (e.g. a cosine <= 0)
        return math.nan


@dataclass(frozen=True)
class Protocol:
    """A named metric definition: scorers with their released checkpoints, and set metrics.

    ``weights`` names every file the protocol needs (key -> which released file); the per-clip
    scorer specs are templates filled from them (``scorer_specs``), each labelled by its
    ``NAME:BACKEND`` in tables. ``set_metrics`` are executable specs (``ttaeval.metrics.set_metrics``)
    against the run's reference, each with what it is; ``summaries`` describe the per-prompt tables
    the protocol reads from per-clip scores (``ttaeval leaderboard --protocol``).
    """

    name: str
    version: str
    summary: str
    weights: Mapping[str, str]
    clip_scorers: tuple[str, ...]
    details: str
    set_metrics: Mapping[str, str] = field(default_factory=dict)
    summaries: tuple[str, ...] = ()
    per_clip_tables: bool = False
    """``ttaeval leaderboard --protocol NAME`` prints its own tables (TTA-Bench's per dimension and
    attribute); otherwise its summaries are columns of the plain leaderboard."""

    @property
    def id(self) -> str:
        return f"{self.name}@{self.version}"

    def scorer_specs(self, weights: Mapping[str, str]) -> list[str]:
        """The per-clip scorer specs, with every checkpoint path filled in."""
        missing = [k for k in self.weights if k not in weights]
        if missing:
            need = "; ".join(f"--weights {k}=PATH ({self.weights[k]})" for k in missing)
            raise ValueError(f"protocol {self.name} needs {need}")
        unknown = sorted(set(weights) - set(self.weights))
        if unknown:
            raise ValueError(
                f"protocol {self.name} has no weights {unknown}; it takes {sorted(self.weights)}"
            )
        return [spec.format(**weights) for spec in self.clip_scorers]

    def scorer_labels(self) -> list[str]:
        """How each per-clip scorer is named in tables: its ``NAME:BACKEND`` (no paths)."""
        return [spec.split(",", 1)[0] for spec in self.clip_scorers]

    def explain(self) -> str:
        lines = [f"{self.id}: {self.summary}", "", self.details.strip(), "", "Weights (--weights KEY=PATH):"]
        lines += [f"  {k}: {v}" for k, v in self.weights.items()]
        lines += ["", "Per-clip scorers (ttaeval run computes these for every clip):"]
        lines += [f"  {s}" for s in self.clip_scorers] or ["  (none)"]
        if self.set_metrics:
            lines += [
                "",
                "Set metrics (against the reference: --reference SYSTEM or --reference folder:DIR):",
            ]
            lines += [f"  {spec}\n      {text}" for spec, text in self.set_metrics.items()]
        if self.summaries:
            where = (
                f"ttaeval leaderboard RUN --protocol {self.name}"
                if self.per_clip_tables
                else ("columns of ttaeval leaderboard RUN")
            )
            lines += ["", f"Tables ({where}):"]
            lines += [f"  {t}" for t in self.summaries]
        return "\n".join(lines) + "\n"


PROTOCOLS: Registry[Protocol] = Registry("protocol")
PROTOCOLS.register(
    "tta-bench",
    Protocol(
        name="tta-bench",
        version="1",
        summary="TTA-Bench: msclap-2023 CLAP and Audiobox-Aesthetics per dimension, robustness, fairness",
        weights={
            "msclap": "CLAP_weights_2023.pth (microsoft/msclap)",
            "gpt2": "folder with the gpt2 config and tokenizer (msclap's text tower)",
            "aesthetics": "checkpoint.pt or folder of facebook/audiobox-aesthetics",
        },
        clip_scorers=(
            "clap:msclap,checkpoint={msclap},text_model={gpt2}",
            "aesthetics:audiobox,checkpoint={aesthetics}",
        ),
        summaries=(
            "per dimension: mean of clap (higher) and CE, CU, PQ (higher), PC (descriptive) over prompts",
            "accuracy prompts by event_count and by event_relation: the same means",
            "robustness: mean over pairs of score(perturbed) / score(source prompt from notes), "
            "per perturbation type (1 = unaffected)",
            "fairness: FS = mean over group pairs of 100*|a-b|/max(a,b) per family "
            "(gender, age, language; lower = fairer)",
        ),
        per_clip_tables=True,
        details="""
CLAP (clap:msclap): 44.1 kHz mono; 7 s windows — shorter clips repeated to 7 s as msclap does,
longer ones covered by evenly spaced full windows whose embeddings are averaged (msclap itself
takes one random 7 s crop); GPT-2 text tower, text + ' <|endoftext|>', 77 tokens; raw cosine.
Aesthetics (aesthetics:audiobox): 16 kHz mono, 10 s windows with a 10 s hop, the last zero-padded
and masked, predictions weighted by window length; CE/CU/PC/PQ on the 1-10 scale.
Audio is resampled once with soxr (high quality) to each scorer's rate.""",
    ),
)
PROTOCOLS.register(
    "audioldm-eval",
    Protocol(
        name="audioldm-eval",
        version="2",
        summary="audioldm_eval: FD on PANNs, FAD on VGGish, KL(ref||gen) on PANNs, IS (10 splits)",
        weights={
            "panns": "Cnn14_16k_mAP=0.438.pth (PANNs Cnn14, 16 kHz)",
            "vggish": "vggish-10086976.pth (torch VGGish)",
        },
        clip_scorers=(
            "embed:panns,checkpoint={panns},variant=16k",
            "embed:vggish,checkpoint={vggish}",
        ),
        set_metrics={
            "fd:embed:panns": "FD: Frechet distance of PANNs Cnn14-16k 2048-d clip embeddings, "
            "float64 (lower)",
            "fad:embed:vggish": "FAD: Frechet distance of VGGish 128-d embeddings of 0.96 s frames, no PCA, "
            "no final ReLU, 16 kHz (lower)",
            "kl:embed:panns": "KL: mean over clips paired by prompt id of KL(ref || gen), softmax of PANNs "
            "logits, eps 1e-6 (lower)",
            "kl:embed:panns,posterior=sigmoid": "KL_sigmoid: the same on per-class sigmoids (lower)",
            "is:embed:panns": "IS: exp(E KL(p(y|x) || p(y))) of generated PANNs logits (softmax), 10 splits "
            "after a RandomState(2020) shuffle; the mean over splits (higher)",
        },
        details="""
PANNs Cnn14 16 kHz: window 512, hop 160, 64 mel bins 50-8000 Hz; each clip embedded whole.
VGGish: 16 kHz, 25 ms frames every 10 ms, 64 mel bands 125-7500 Hz, log(mel + 0.01), 96-frame
examples without overlap. Audio is resampled once with soxr (high quality) to 16 kHz.""",
    ),
)
PROTOCOLS.register(
    "audiocaps-sam",
    Protocol(
        name="audiocaps-sam",
        version="2",
        summary="stable-audio-metrics on AudioCaps: LAION-CLAP 630k-fusion at 48 kHz, FD on OpenL3, "
        "KL(gen||ref) on PaSST",
        weights={
            "laion": "630k-audioset-fusion-best.pt (LAION-CLAP)",
            "roberta": "folder with the roberta-base config and tokenizer",
            "openl3": "torchopenl3_mel256_env_512.pth.tar (torchopenl3's port of OpenL3)",
            "passt": "passt-s-f128-p16-s10-ap.476-swa.pt (hear21passt)",
        },
        clip_scorers=(
            "clap:laion,checkpoint={laion},text_model={roberta}",
            "embed:openl3,checkpoint={openl3},content=env,channels=2,bandwidth=44100,hop=0.5",
            "embed:passt,checkpoint={passt}",
        ),
        set_metrics={
            "fad:embed:openl3": "FD_openl3: Frechet distance of OpenL3 frames (mel256, env, 512-d per "
            "channel, left and right concatenated), float64 (lower)",
            "kl:embed:passt,direction=gen_ref": "KL_passt: mean over clips paired by prompt id of "
            "KL(gen || ref) on softmax posteriors of window-averaged PaSST logits (lower)",
        },
        summaries=(
            "CLAP: mean cosine of LAION-CLAP 630k-audioset-fusion audio and caption embeddings (higher)",
        ),
        details="""
LAION-CLAP fusion at 48 kHz, int16 round trip, 10 s windows (repeat-padded when shorter; longer
clips covered by evenly spaced full windows, averaged — the package itself draws random chunks).
OpenL3: peak-normalised to -1 dBFS, 44.1 kHz, resampled to 48 kHz (soxr), 1 s frames every 0.5 s,
through torchopenl3's PyTorch port of the network (stable-audio-metrics runs the TensorFlow
original, which is not reachable here). PaSST: 32 kHz, 10 s windows every 5 s, logits averaged.""",
    ),
)


def get_protocol(name: str) -> Protocol:
    return PROTOCOLS.get(name)


def run_set_metrics(config: Mapping[str, object]) -> list[str] | None:
    """The set metric specs a run record's config asks for: its protocol's and its own
    ``set_metrics``; None when it names neither (the leaderboard's defaults then apply)."""
    specs: list[str] = []
    protocol = config.get("protocol")
    if protocol:
        specs += list(get_protocol(str(protocol).split("@", 1)[0]).set_metrics)
    specs += list(config.get("set_metrics") or [])
    return list(dict.fromkeys(specs)) or None


def device_options(spec: str, device: str | Callable[[], str] | None) -> dict[str, str]:
    """``{"device": device}`` for a scorer that has a device option its spec does not set (the
    keyword arguments that put it on the run's or trainer's device), else nothing. ``device`` may be
    a function giving it, called only for such a scorer."""
    import dataclasses

    from ttaeval.scorers import SCORERS, parse_spec

    if device is None:
        return {}
    parsed = parse_spec(spec)
    cls = SCORERS.get(f"{parsed.name}:{parsed.backend}")
    has_device = dataclasses.is_dataclass(cls) and "device" in {f.name for f in dataclasses.fields(cls)}
    if not has_device or "device" in dict(parsed.options):
        return {}
    return {"device": device() if callable(device) else device}


def build_scorers(
    specs: Sequence[str],
    *,
    protocol: str | None = None,
    weights: Mapping[str, str] | None = None,
    set_metrics: Sequence[str] = (),
    reference: bool = False,
    reference_flag: str = "--reference",
    device: str | Callable[[], str] | None = None,
) -> list[Scorer]:
    """The scorers of ``specs`` and of ``protocol`` (labelled ``NAME:BACKEND`` in tables, not by their
    weight paths), after checking what can be checked before any audio is made or read: the
    protocol's weights all given, every set metric known and fed by one of these scorers, and a
    reference where a set metric needs one (``reference_flag`` names the flag that gives it).
    Scorers with a ``device`` option their spec leaves unset compute on ``device`` (when given)."""
    from ttaeval.metrics.set_metrics import parse_set_metric
    from ttaeval.scorers import get_scorer

    labelled: dict[str, str | None] = dict.fromkeys(specs)
    set_specs = list(set_metrics)
    if protocol is not None:
        named = get_protocol(protocol)
        labelled.update(zip(named.scorer_specs(weights or {}), named.scorer_labels()))
        set_specs = [*named.set_metrics, *set_specs]
    elif weights:
        raise ValueError("--weights goes with --protocol")
    parsed = [parse_set_metric(s) for s in dict.fromkeys(set_specs)]
    if not labelled:
        raise ValueError("give at least one scorer (--scorer) or a protocol")
    scorers = []
    for spec, label in labelled.items():
        scorer = get_scorer(spec, **device_options(spec, device))
        if label:
            scorer.spec = label  # type: ignore[attr-defined]
        scorers.append(scorer)
    names = {s.id.split("@", 1)[0] for s in scorers} | {s.label for s in scorers}
    for spec in parsed:
        if spec.scorer not in names:
            raise ValueError(f"set metric {spec} reads {spec.scorer}, which is not among the scorers")
        if spec.build().needs_reference and not reference:
            raise ValueError(f"set metric {spec} compares against reference audio: give {reference_flag}")
    return scorers
