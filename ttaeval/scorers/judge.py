"""``judge`` — an audio language model asked yes/no questions about a clip (AQAScore).

Resonate's reward asks an LALM "Does this audio contain the sound events described by the text:
{caption}? ..." and scores P(yes) / (P(yes) + P(no)) from the first answer token's probabilities.
Here the questions are data (``JudgeTemplates``, hashed into the scorer id), every question of a
batch of clips goes through the model in padded batches (one forward pass per batch, no
``generate``: only the first token's distribution is read), and a score that cannot be read is NaN
with the reason — never a silent 0.

Metrics: ``aqa`` (the caption question), ``events`` (for each item of the prompt's ``event_list``,
"Can you hear {event}?", the mean yes-score) and ``relation`` (for TTA-Bench's ``sequence`` prompts,
whether the listed events occur in that order; for ``parallelism``, whether they overlap). A prompt
without an event list, or without a sequence/parallelism relation of two or more events, gets NaN
with the reason for that metric. Backend ``judge:hf``: a transformers Qwen2-Audio model and
processor from a folder.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ttaeval.audio import Clip
from ttaeval.scorers.base import MetricSpec, Scorer, ScoreResult
from ttaeval.scorers.clap_common import check_tokenizer, weights_digest


@dataclass(frozen=True)
class JudgeTemplates:
    """The questions and the answer tokens read as yes and no (per model family)."""

    aqa: str = (
        "Does this audio contain the sound events described by the text: {caption}? "
        "Please only answer yes or no, without other explanations."
    )
    event: str = "Can you hear {event} in this audio? Please only answer yes or no."
    sequence: str = (
        "Do these sounds occur one after another in this order: {events}? Please only answer yes or no."
    )
    parallel: str = "Do these sounds occur at the same time: {events}? Please only answer yes or no."
    yes: tuple[str, ...] = ("Yes",)
    no: tuple[str, ...] = ("No",)

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


TEMPLATES = {
    "qwen2-audio": JudgeTemplates(),
    "qwen2.5-omni": JudgeTemplates(),
    "qwen3-omni": JudgeTemplates(yes=("yes",), no=("no",)),
}
"""Answer-token variants per model family (Qwen2.5-Omni answers "Yes"/"No", Qwen3-Omni "yes"/"no")."""


def yes_score(probs: np.ndarray, yes_ids: Sequence[int], no_ids: Sequence[int]) -> tuple[float, str | None]:
    """P(yes) / (P(yes) + P(no)) from one next-token distribution, or NaN and why."""
    p_yes, p_no = float(probs[list(yes_ids)].sum()), float(probs[list(no_ids)].sum())
    if not p_yes + p_no > 0:
        return math.nan, "the model gives no probability to either answer token"
    return p_yes / (p_yes + p_no), None


@dataclass
class HFJudgeScorer(Scorer):
    """Yes/no judge with a transformers Qwen2-Audio folder (model + processor with chat template)."""

    name = "judge"
    backend = "hf"
    version = "1"
    sample_rate = 16_000
    channels = 1
    uses_prompt = True
    metrics = (
        MetricSpec("aqa", True, (0.0, 1.0), "P(yes)/(P(yes)+P(no)) for the caption question"),
        MetricSpec("events", True, (0.0, 1.0), "mean yes-score of 'Can you hear {event}?' over event_list"),
        MetricSpec(
            "relation", True, (0.0, 1.0), "yes-score of the order (sequence) or overlap (parallelism)"
        ),
    )

    model: Path | None = None
    """Folder with the Qwen2-Audio model and its processor (feature extractor, tokenizer, chat template)."""
    family: str = "qwen2-audio"
    """Which answer tokens mean yes/no (see ``TEMPLATES``)."""
    batch_size: int = 8
    """Questions per forward pass."""
    device: str = "cpu"
    """torch device."""
    _model: object = field(init=False, repr=False, default=None)
    _processor: object = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        if self.model is None or not Path(self.model).is_dir():
            raise FileNotFoundError(f"judge:hf model folder not found: {self.model} (set model=DIR)")
        if self.family not in TEMPLATES:
            raise ValueError(f"judge:hf family must be one of {sorted(TEMPLATES)}, got {self.family!r}")
        from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

        path = str(self.model)
        self._processor = AutoProcessor.from_pretrained(path, local_files_only=True)
        tokenizer = self._processor.tokenizer
        check_tokenizer(tokenizer, f"judge:hf {path}")
        tokenizer.padding_side = "left"  # the last position is every row's next token
        self.templates = TEMPLATES[self.family]
        self._yes = [self._single_token(t) for t in self.templates.yes]
        self._no = [self._single_token(t) for t in self.templates.no]
        self._model = Qwen2AudioForConditionalGeneration.from_pretrained(path, local_files_only=True)
        self._model.to(self.device).eval()
        self._digest = weights_digest(Path(path))

    def _single_token(self, text: str) -> int:
        ids = self._processor.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ValueError(
                f"judge:hf: the answer {text!r} is {len(ids)} tokens for this tokenizer, not one"
            )
        return ids[0]

    def identity_options(self) -> dict[str, object]:
        return {"weights": self._digest, "templates": self.templates.digest}

    def _prompt(self, question: str) -> str:
        conversation = [
            {
                "role": "user",
                "content": [{"type": "audio", "audio_url": "clip"}, {"type": "text", "text": question}],
            }
        ]
        return self._processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)

    def yes_scores(
        self, audio: Sequence[np.ndarray], questions: Sequence[str]
    ) -> list[tuple[float, str | None]]:
        """One (score, reason) per (audio, question) pair, in padded batches."""
        import torch

        out = []
        for s in range(0, len(questions), self.batch_size):
            texts = [self._prompt(q) for q in questions[s : s + self.batch_size]]
            inputs = self._processor(
                text=texts,
                audio=list(audio[s : s + self.batch_size]),
                sampling_rate=self.sample_rate,
                return_tensors="pt",
                padding=True,
            ).to(self.device)
            positions = (inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)
            with torch.inference_mode():
                logits = self._model(**inputs, position_ids=positions).logits[:, -1, :]
            probs = torch.softmax(logits.float(), dim=-1).cpu().numpy()
            out += [yes_score(p, self._yes, self._no) for p in probs]
        return out

    def score_batch(self, clips: Sequence[Clip]) -> list[ScoreResult]:
        asks: list[tuple[int, str, str]] = []  # (clip, metric, question)
        for i, clip in enumerate(clips):
            asks.append((i, "aqa", self.templates.aqa.format(caption=clip.prompt.text)))
            events = clip.prompt.attributes.get("event_list") or []
            for event in events:
                asks.append((i, "events", self.templates.event.format(event=event)))
            question = self._relation_question(clip.prompt.attributes.get("event_relation"), events)
            if question:
                asks.append((i, "relation", question))
        answers = self.yes_scores([clips[i].audio[0] for i, _, _ in asks], [q for _, _, q in asks])
        results = [ScoreResult({}, {}) for _ in clips]
        per_event: dict[int, list[float]] = {}
        for (i, metric, _), (value, reason) in zip(asks, answers):
            if metric in ("aqa", "relation"):
                results[i].values[metric] = value
                if reason:
                    results[i].errors[metric] = reason
            elif not math.isnan(value):
                per_event.setdefault(i, []).append(value)
        for i, r in enumerate(results):
            if i in per_event:
                r.values["events"] = float(np.mean(per_event[i]))
            else:
                r.values["events"] = math.nan
                has_events = bool(clips[i].prompt.attributes.get("event_list"))
                r.errors["events"] = (
                    "no event could be scored" if has_events else "the prompt has no event_list"
                )
            if "relation" not in r.values:
                r.values["relation"] = math.nan
                r.errors["relation"] = "the prompt states no sequence or parallelism of two or more events"
        return results

    def _relation_question(self, relation: object, events: Sequence[str]) -> str | None:
        """The order/overlap question for TTA-Bench's ``event_relation``, or None."""
        if len(events) < 2:
            return None
        kind = str(relation or "").strip().lower()
        if kind == "sequence":
            return self.templates.sequence.format(events=", then ".join(events))
        if kind in ("parallelism", "parallel"):
            return self.templates.parallel.format(events=" and ".join(events))
        return None
