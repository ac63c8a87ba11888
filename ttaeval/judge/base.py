"""``judge`` — an audio language model asked questions about a clip, read from first-token probabilities.

Resonate's reward asks an LALM "Does this audio contain the sound events described by the text:
{caption}? ..." and scores P(yes) / (P(yes) + P(no)) from the first answer token's probabilities
(AQAScore). Here the questions are data (``JudgeTemplates``, hashed into the scorer id), every
question of a batch goes to the backend at once, and an answer that cannot be read is NaN with the
reason and the raw answer — never a silent 0.

Metrics:
- ``aqa``: the caption question's yes-score.
- ``events``: for each item of the prompt's ``event_list``, "Can you hear {event}?"; the mean
  yes-score.
- ``relation``: for TTA-Bench's ``sequence`` prompts, whether the listed events occur in that order;
  for ``parallelism``, whether they overlap.
- ``quality``: a rating read as the expectation over the rating tokens' probabilities (renormalised
  over those tokens), not a parsed string. The default scale is 1-9: Qwen tokenizers split numbers
  into digits, so with a 1-10 scale the first answer token cannot tell 1 from 10.
- ``total``: the weighted mean of the metrics that apply to the prompt (quality mapped to 0-1), for
  use as a reward. A metric with weight 0 is not asked at all (saves the model calls); one that
  applies but failed makes the total NaN rather than quietly dropping it.

A prompt without an event list, or without a sequence/parallelism of two or more events, gets NaN
with the reason for ``events``/``relation``; the total is then the weighted mean of the rest.
Backends implement ``answer``: ``judge:hf`` (transformers, ``hf.py``), ``judge:http``
(OpenAI-compatible servers, ``http.py``), ``judge:mini`` (the shipped judge-mini via ``hf``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ttaeval.io.audio import Clip
from ttaeval.scorers.base import MetricSpec, Scorer, ScoreResult


@dataclass(frozen=True)
class JudgeTemplates:
    """The questions and the answer tokens read from the reply (per model family; editable as JSON)."""

    aqa: str = (
        "Does this audio contain the sound events described by the text: {caption}? "
        "Please only answer yes or no, without other explanations."
    )
    event: str = "Can you hear {event} in this audio? Please only answer yes or no."
    sequence: str = (
        "Do these sounds occur one after another in this order: {events}? Please only answer yes or no."
    )
    parallel: str = "Do these sounds occur at the same time: {events}? Please only answer yes or no."
    quality: str = (
        "Rate the sound quality of this audio from 1 to 9, where 1 is very poor and 9 is excellent. "
        "Please only answer with the number."
    )
    yes: tuple[str, ...] = ("Yes",)
    no: tuple[str, ...] = ("No",)
    ratings: tuple[str, ...] = ("1", "2", "3", "4", "5", "6", "7", "8", "9")
    """Rating tokens, each read as the number it spells; the quality is their expectation."""

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]

    @property
    def rating_values(self) -> np.ndarray:
        return np.array([float(r) for r in self.ratings])

    @classmethod
    def from_json(cls, path: Path, base: JudgeTemplates) -> JudgeTemplates:
        """``base`` with the fields a JSON file sets (lists become tuples); unknown keys are an error."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"judge templates {path}: {exc}") from None
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if not isinstance(data, dict) or unknown:
            raise ValueError(f"judge templates {path}: unknown keys {unknown}; known: {sorted(known)}")
        data = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        templates = dataclasses.replace(base, **data)
        try:
            _ = templates.rating_values
        except ValueError:
            raise ValueError(f"judge templates {path}: every rating must spell a number") from None
        return templates


TEMPLATES = {
    "qwen2-audio": JudgeTemplates(),
    "qwen2.5-omni": JudgeTemplates(),
    "qwen3-omni": JudgeTemplates(yes=("yes",), no=("no",)),
}
"""Answer-token variants per model family (Qwen2.5-Omni answers "Yes"/"No", Qwen3-Omni "yes"/"no")."""

METRIC_NAMES = ("aqa", "events", "relation", "quality")


@dataclass
class Answer:
    """What a backend read from the first answer token of one question.

    ``probs`` holds the probability of each candidate token asked for (absent: none was readable);
    ``raw`` is the most likely token the model gave (kept for failure records); ``error`` says why
    the answer could not be read at all (a failed request, a reply without logprobs).
    """

    probs: dict[str, float]
    raw: str = ""
    error: str | None = None


@dataclass(frozen=True)
class Question:
    clip: int
    metric: str
    text: str


def yes_score(answer: Answer, yes: Sequence[str], no: Sequence[str]) -> tuple[float, str | None]:
    """P(yes) / (P(yes) + P(no)) from one first-token answer, or NaN and why."""
    if answer.error:
        return math.nan, answer.error
    p_yes = sum(answer.probs.get(t, 0.0) for t in yes)
    p_no = sum(answer.probs.get(t, 0.0) for t in no)
    if not p_yes + p_no > 0:
        return math.nan, f"the answer is neither yes nor no (the model's first token: {answer.raw!r})"
    return p_yes / (p_yes + p_no), None


def expected_rating(answer: Answer, ratings: Sequence[str]) -> tuple[float, str | None]:
    """The expectation of the rating over the rating tokens' renormalised probabilities."""
    if answer.error:
        return math.nan, answer.error
    p = np.array([answer.probs.get(t, 0.0) for t in ratings])
    if not p.sum() > 0:
        return math.nan, f"the answer is not a rating (the model's first token: {answer.raw!r})"
    return float(p @ np.array([float(r) for r in ratings]) / p.sum()), None


@dataclass
class JudgeScorer(Scorer):
    """Question planning and score aggregation shared by the judge backends (which implement ``answer``)."""

    name = "judge"
    version = "2"
    sample_rate = 16_000
    channels = 1
    uses_prompt = True
    metrics = (
        MetricSpec("aqa", True, (0.0, 1.0), "P(yes)/(P(yes)+P(no)) for the caption question"),
        MetricSpec("events", True, (0.0, 1.0), "mean yes-score of 'Can you hear {event}?' over event_list"),
        MetricSpec(
            "relation", True, (0.0, 1.0), "yes-score of the order (sequence) or overlap (parallelism)"
        ),
        MetricSpec("quality", True, (1.0, 9.0), "expected rating over the rating tokens (default 1-9)"),
        MetricSpec("total", True, (0.0, 1.0), "weighted mean of the metrics that apply (the reward)"),
    )
    id_exclude = ("batch_size", "device", "model", "templates", "family")

    family: str = "qwen2-audio"
    """Which question texts and answer tokens to use (see ``TEMPLATES``)."""
    templates: Path | None = None
    """JSON file overriding any field of the family's ``JudgeTemplates`` (hashed into the id)."""
    w_aqa: float = 1.0
    """Weight of ``aqa`` in ``total``; 0 = not asked."""
    w_events: float = 1.0
    """Weight of ``events`` in ``total``; 0 = not asked."""
    w_relation: float = 1.0
    """Weight of ``relation`` in ``total``; 0 = not asked."""
    w_quality: float = 1.0
    """Weight of ``quality`` (mapped from the rating scale to 0-1) in ``total``; 0 = not asked."""
    batch_size: int = 8
    """Clips per ``score_batch`` call; the backend decides how it groups their questions."""

    def __post_init__(self) -> None:
        if self.family not in TEMPLATES:
            raise ValueError(f"judge family must be one of {sorted(TEMPLATES)}, got {self.family!r}")
        self.question_templates = TEMPLATES[self.family]
        if self.templates is not None:
            self.question_templates = JudgeTemplates.from_json(self.templates, self.question_templates)
        self.weights = {m: float(getattr(self, f"w_{m}")) for m in METRIC_NAMES}
        if any(w < 0 or not math.isfinite(w) for w in self.weights.values()) or not any(
            self.weights.values()
        ):
            raise ValueError(f"judge weights must be finite, >= 0 and not all 0; got {self.weights}")

    def identity_options(self) -> dict[str, object]:
        weights = {f"w_{m}": w for m, w in self.weights.items()}
        return {**weights, "templates": self.question_templates.digest, **self.backend_identity()}

    @abstractmethod
    def backend_identity(self) -> dict[str, object]:
        """What names the model behind the backend (a weights digest, a served model name)."""

    @abstractmethod
    def answer(
        self, audio: Sequence[np.ndarray], questions: Sequence[str], tokens: Sequence[str]
    ) -> list[Answer]:
        """First-token probabilities of ``tokens`` for each (audio, question) pair, in order."""

    # -- questions ---------------------------------------------------------------------------------
    def questions(self, clip: Clip, index: int = 0) -> list[Question]:
        """The questions asked about one clip (metrics with weight 0 are not asked)."""
        t, w = self.question_templates, self.weights
        out = []
        if w["aqa"]:
            out.append(Question(index, "aqa", t.aqa.format(caption=clip.prompt.text)))
        events = clip.prompt.attributes.get("event_list") or []
        if w["events"]:
            out += [Question(index, "events", t.event.format(event=e)) for e in events]
        if w["relation"]:
            question = self._relation_question(clip.prompt.attributes.get("event_relation"), events)
            if question:
                out.append(Question(index, "relation", question))
        if w["quality"]:
            out.append(Question(index, "quality", t.quality))
        return out

    def _relation_question(self, relation: object, events: Sequence[str]) -> str | None:
        """The order/overlap question for TTA-Bench's ``event_relation``, or None."""
        if len(events) < 2:
            return None
        kind = str(relation or "").strip().lower()
        if kind == "sequence":
            return self.question_templates.sequence.format(events=", then ".join(events))
        if kind in ("parallelism", "parallel"):
            return self.question_templates.parallel.format(events=" and ".join(events))
        return None

    @property
    def answer_tokens(self) -> tuple[str, ...]:
        t = self.question_templates
        return tuple(dict.fromkeys((*t.yes, *t.no, *t.ratings)))

    # -- scores ------------------------------------------------------------------------------------
    def score_batch(self, clips: Sequence[Clip]) -> list[ScoreResult]:
        asks = [q for i, clip in enumerate(clips) for q in self.questions(clip, i)]
        answers = self.answer(
            [clips[q.clip].audio[0] for q in asks], [q.text for q in asks], self.answer_tokens
        )
        if len(answers) != len(asks):
            raise RuntimeError(f"judge backend returned {len(answers)} answers for {len(asks)} questions")
        per_clip: list[dict[str, list[tuple[float, str | None]]]] = [{} for _ in clips]
        t = self.question_templates
        for q, a in zip(asks, answers):
            read = expected_rating(a, t.ratings) if q.metric == "quality" else yes_score(a, t.yes, t.no)
            per_clip[q.clip].setdefault(q.metric, []).append(read)
        return [self._result(clip, got) for clip, got in zip(clips, per_clip)]

    def _result(self, clip: Clip, got: dict[str, list[tuple[float, str | None]]]) -> ScoreResult:
        result = ScoreResult({}, {})
        for metric in METRIC_NAMES:
            reads = got.get(metric)
            if not self.weights[metric]:
                result.values[metric] = math.nan
                result.not_applicable[metric] = f"not asked ({self.name} weight w_{metric}=0)"
                continue
            if reads is None:
                result.values[metric] = math.nan
                result.not_applicable[metric] = self._not_applicable(metric)
                continue
            if metric == "events":  # every event must be read: a mean over some would flatter
                bad = [r for _, r in reads if r]
                value = math.nan if bad else float(np.mean([v for v, _ in reads]))
                reason = f"{len(bad)} of {len(reads)} event questions failed: {bad[0]}" if bad else None
            else:
                value, reason = reads[0]
            result.values[metric] = value
            if reason:
                result.errors[metric] = reason
        result.values["total"], reason = self._total(result, got)
        if reason is not None:
            target = result.errors if reason else result.not_applicable
            target["total"] = reason or "no weighted metric applies to this prompt"
        return result

    def _not_applicable(self, metric: str) -> str:
        if metric == "events":
            return "the prompt has no event_list"
        return "the prompt states no sequence or parallelism of two or more events"

    def _total(self, result: ScoreResult, got: dict) -> tuple[float, str | None]:
        """The weighted total and, when it is NaN, why: a failure's reason, or "" when no weighted
        metric applies to the prompt."""
        lo, hi = self.question_templates.rating_values.min(), self.question_templates.rating_values.max()
        num = den = 0.0
        for metric, weight in self.weights.items():
            if not weight or metric not in got:
                continue  # not asked, or does not apply to this prompt
            value = result.values[metric]
            if math.isnan(value):
                return math.nan, f"{metric} applies to this prompt and could not be read"
            if metric == "quality":
                value = (value - lo) / (hi - lo) if hi > lo else 1.0
            num, den = num + weight * value, den + weight
        if not den:
            return math.nan, ""
        return num / den, None
