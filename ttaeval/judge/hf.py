"""``judge:hf`` — the judge on a transformers model from a folder; ``judge:mini`` — the shipped judge-mini.

Supported: Qwen2-Audio (``Qwen2AudioForConditionalGeneration``) and the thinkers of Qwen2.5-Omni
(``Qwen2_5OmniThinkerForConditionalGeneration``) and of Qwen3-Omni
(``Qwen3OmniMoeThinkerForConditionalGeneration``), from a thinker folder or a released whole-model
folder (the talker is never loaded). Only the first answer token's distribution is needed, so there
is no ``generate``: the questions go through the model in left-padded batches, one forward pass
each, and the last position of every row is read.

Every family hears at most its feature extractor's window (``n_samples``: 30 s in the released
folders): Qwen2-Audio's and Qwen2.5-Omni's processors cut there themselves; Qwen3-Omni's would encode
the whole clip, so the clip is cut before it (its audio tokens then fit the context accounting below).

A clip's questions share one pass through the audio encoder (Qwen2-Audio): rows of a scoring call
whose audio features are equal are encoded once, the first time they come, and reused by every
later batch of the call. (The Omni thinkers encode each row's audio; their encoders take the
batch's features concatenated, which this does not split.)

A question whose chat-template text is longer than the model's context (``max_text_tokens``) is cut
in the middle to fit, its start and its end (where the templates put the instruction) kept, as the
CLAP scorers cut their texts at 77 tokens; one that cannot fit even so is not run (NaN with the
reason). Attention memory grows with the square of the length, so running a long question as it is
could ask for any amount of memory.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from ttaeval.checkpoints import weights_digest
from ttaeval.judge.base import Answer, JudgeScorer
from ttaeval.scorers.clap_common import check_tokenizer

log = logging.getLogger(__name__)

DEFAULT_CONTEXT = 8192
"""Positions assumed for a model whose config does not say (Qwen2-Audio's context)."""
CUT = " ... "
"""What replaces the middle of a question cut to fit the model's context."""

SYSTEM_PROMPTS = {
    "qwen2-audio": "You are a helpful assistant.",
    "qwen2.5-omni": (
        "You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of "
        "perceiving auditory and visual inputs, as well as generating text and speech."
    ),
}
"""Each family's own system prompt (its model card's), which the ``official`` layout sends. Qwen3-Omni
has none: its model card names no default (only one for spoken audio-visual chat), so ``official``
is refused for it."""
LAYOUTS = ("audio-first", "official")

FAMILY_OF_MODEL_TYPE = {
    "qwen2_audio": "qwen2-audio",
    "qwen2_5_omni": "qwen2.5-omni",
    "qwen2_5_omni_thinker": "qwen2.5-omni",
    "qwen3_omni_moe": "qwen3-omni",
    "qwen3_omni_moe_thinker": "qwen3-omni",
}


def qwen3_omni_audio_tokens(frames: int, n_window: int = 50) -> int:
    """Audio tokens Qwen3-Omni's encoder makes of ``frames`` mel frames (its processor's count): 13 per
    full chunk of ``2 * n_window`` frames, the rest halved three times."""
    chunk = 2 * n_window
    rest = (frames % chunk - 1) // 2 + 1
    return ((rest - 1) // 2 + 1 - 1) // 2 + 1 + frames // chunk * 13


def load_judge_model(path: Path, device: str = "cpu"):
    """(model, processor, model_type) from a Qwen2-Audio, Qwen2.5-Omni or Qwen3-Omni folder, offline."""
    from ttaeval.optional import quiet_loading

    with quiet_loading():
        return _load_judge_model(path, device)


def _load_judge_model(path: Path, device: str):
    from transformers import AutoConfig, AutoProcessor

    config = AutoConfig.from_pretrained(path, local_files_only=True)
    kind = config.model_type
    if kind == "qwen2_audio":
        from transformers import Qwen2AudioForConditionalGeneration

        model = Qwen2AudioForConditionalGeneration.from_pretrained(path, local_files_only=True)
    elif kind == "qwen2_5_omni_thinker":
        from transformers import Qwen2_5OmniThinkerForConditionalGeneration

        model = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(path, local_files_only=True)
    elif kind == "qwen2_5_omni":  # a released Omni folder: keep the thinker, never build the talker
        from transformers import Qwen2_5OmniForConditionalGeneration

        full = Qwen2_5OmniForConditionalGeneration.from_pretrained(
            path, local_files_only=True, enable_audio_output=False
        )
        model = full.thinker
    elif kind == "qwen3_omni_moe_thinker":
        from transformers import Qwen3OmniMoeThinkerForConditionalGeneration

        model = Qwen3OmniMoeThinkerForConditionalGeneration.from_pretrained(path, local_files_only=True)
    elif kind == "qwen3_omni_moe":  # a released Qwen3-Omni folder: keep the thinker, never build the talker
        from transformers import Qwen3OmniMoeForConditionalGeneration

        full = Qwen3OmniMoeForConditionalGeneration.from_pretrained(
            path, local_files_only=True, enable_audio_output=False
        )
        model = full.thinker
    else:
        raise ValueError(
            f"judge:hf supports Qwen2-Audio, Qwen2.5-Omni and Qwen3-Omni folders (a thinker or the whole "
            f"model); {path} holds a {kind!r} model"
        )
    processor = AutoProcessor.from_pretrained(path, local_files_only=True)
    return model.to(device).eval(), processor, kind


@dataclass
class HFJudgeScorer(JudgeScorer):
    """The judge on a transformers Qwen2-Audio, Qwen2.5-Omni or Qwen3-Omni (thinker) folder."""

    backend = "hf"
    id_exclude = (*JudgeScorer.id_exclude, "question_batch", "max_text_tokens")
    id_neutral: ClassVar[dict[str, object]] = {**JudgeScorer.id_neutral, "layout": "audio-first"}

    model: Path | None = None
    """Folder with the model and its processor (feature extractor, tokenizer, chat template)."""
    family: str = "auto"
    """Question texts and answer tokens (see ``TEMPLATES``); ``auto`` = from the model type."""
    question_batch: int = 16
    """Questions per forward pass."""
    device: str = "cpu"
    """torch device: cpu, cuda, cuda:N, or auto (the local GPU, else the CPU; resolved once when the
    model loads; under torchrun, cuda means cuda:LOCAL_RANK)."""
    dtype: str = "float32"
    """Precision of the forward passes: "bfloat16" (or "float16" on GPUs) runs them under autocast
    with float32 weights; outputs are float32 (the softmax too). Part of the id when not float32."""
    layout: str = "audio-first"
    """How a question is put to the model: ``audio-first`` (the clip, then the question, no system
    message of ours: how judge-mini was trained) or ``official`` (Resonate's judge: the question
    text first, then the clip, after the family's system prompt, ``SYSTEM_PROMPTS``). The scores
    are read the same way (AQAScore unchanged); the layout enters the id when not audio-first."""
    max_text_tokens: int = 0
    """Longest chat-template text given to the model, in tokens (the audio counted as its one
    placeholder token): a longer question is cut in the middle to fit; one whose template alone is
    longer is not run (NaN with the reason). 0: the model's context (``max_position_embeddings``)
    less the audio tokens of the longest clip it hears."""
    _model: object = field(init=False, repr=False, default=None)
    _audio_cache: dict | None = field(init=False, repr=False, default=None)
    encoder_rows: int = field(init=False, repr=False, default=0)
    """Audio rows the encoder has run on (clips, once each per scoring call, on Qwen2-Audio)."""
    _cut_logged: bool = field(init=False, repr=False, default=False)
    _processor: object = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        self.bind_device()
        if self.layout not in LAYOUTS:
            raise ValueError(
                f"judge:{self.backend}: layout must be one of {', '.join(LAYOUTS)}, not {self.layout!r}"
            )
        if self.model is None or not Path(self.model).is_dir():
            raise FileNotFoundError(
                f"judge:{self.backend} model folder not found: {self.model} (set model=DIR)"
            )
        path = Path(self.model)
        self._model, self._processor, self._kind = load_judge_model(path, self.device)
        if self._kind == "qwen2_audio":
            self._encode_each_clip_once()
        if self.family == "auto":
            self.family = FAMILY_OF_MODEL_TYPE[self._kind]
        super().__post_init__()
        if self.layout == "official" and self.family not in SYSTEM_PROMPTS:
            raise ValueError(
                f"judge:{self.backend}: layout=official sends the family's system prompt, and {self.family} "
                f"has none (known: {', '.join(SYSTEM_PROMPTS)}); use layout=audio-first"
            )
        tokenizer = self._processor.tokenizer
        check_tokenizer(tokenizer, f"judge:{self.backend} {path}")
        tokenizer.padding_side = "left"  # the last position is every row's next token
        self._token_ids = {t: self._single_token(t) for t in self.answer_tokens}
        self._digest = weights_digest(path)
        if self.max_text_tokens < 0:
            raise ValueError(f"judge:{self.backend}: max_text_tokens must be >= 0 (0: the model's context)")
        self._context = self._context_tokens()
        self.max_text_tokens = self.max_text_tokens or self._context[0] - self._context[1]
        if self.max_text_tokens < 1:
            raise ValueError(f"judge:{self.backend}: the model's context leaves no room for a question")
        vocab = tokenizer.get_vocab()
        self._longest_token = max((len(t) for t in vocab), default=1)  # characters, bounds a pre-check

    def _encode_each_clip_once(self) -> None:
        """Wrap the audio encoder's forward: within a scoring call (``_audio_cache`` set), rows whose
        features equal a row already encoded take its output instead of a new pass."""
        import hashlib

        import torch
        from transformers.modeling_outputs import BaseModelOutput

        tower = getattr(self._model, "model", self._model).audio_tower
        encode = tower.forward

        def once(input_features: torch.Tensor, attention_mask: torch.Tensor | None = None, **kw):
            if self._audio_cache is None:
                self.encoder_rows += len(input_features)
                return encode(input_features, attention_mask=attention_mask, **kw)
            feats = input_features.detach().cpu().numpy()
            keys = [hashlib.sha1(row.tobytes()).hexdigest() for row in feats]
            new = list(dict.fromkeys(k for k in keys if k not in self._audio_cache))
            if new:
                rows = [keys.index(k) for k in new]
                mask = None if attention_mask is None else attention_mask[rows]
                hidden = encode(input_features[rows], attention_mask=mask, **kw).last_hidden_state
                self.encoder_rows += len(rows)
                self._audio_cache.update(zip(new, hidden))
            return BaseModelOutput(last_hidden_state=torch.stack([self._audio_cache[k] for k in keys]))

        tower.forward = once

    def _context_tokens(self) -> tuple[int, int]:
        """(positions the language model reads, audio tokens of the longest clip its feature extractor
        keeps): Qwen2-Audio's encoder (and Qwen2.5-Omni's) halves the mel frames twice (a stride-2
        conv, then pooling); Qwen3-Omni's is ``qwen3_omni_audio_tokens``."""
        config = self._model.config
        text = getattr(config, "text_config", None) or config
        positions = getattr(text, "max_position_embeddings", None) or DEFAULT_CONTEXT
        extractor = getattr(self._processor, "feature_extractor", None)
        frames = getattr(extractor, "nb_max_frames", 0) or 0
        if self._kind.startswith("qwen3_omni"):
            audio = qwen3_omni_audio_tokens(frames, getattr(self._processor, "n_window", 50)) if frames else 0
        else:
            audio = ((frames - 1) // 2 + 1 - 2) // 2 + 1 if frames > 2 else 0
        return int(positions), int(audio)

    def _count(self, text: str) -> int:
        return len(self._processor.tokenizer(text, add_special_tokens=False)["input_ids"])

    def refusal(self, text: str) -> str | None:
        """Why the chat-template text ``text`` is not run (longer than ``max_text_tokens``), or None.

        A text too long for the longest token to fit is refused without tokenising it all."""
        limit = self.max_text_tokens
        positions, audio = self._context
        context = f"this judge reads at most {limit} (its {positions} positions less {audio} for the audio)"
        if self.max_text_tokens != positions - audio:
            context = f"this judge reads at most {limit} (max_text_tokens)"
        if len(text) > limit * self._longest_token:
            return f"the question is {len(text)} characters, more than {limit} tokens; {context}"
        count = self._count(text)
        if count > limit:
            return f"the question is {count} tokens in the chat template; {context}"
        return None

    def fit(self, question: str) -> str:
        """``question`` with its middle replaced by ``CUT`` so that its chat text fits
        ``max_text_tokens``: the start and the end kept, about as many tokens each; "" when the
        template alone leaves no room."""
        tokenizer = self._processor.tokenizer
        bound = self.max_text_tokens * self._longest_token  # characters a side: more cannot fit
        if len(question) > 2 * bound:  # only the middle goes: tokenise no more than can be kept
            question = question[:bound] + question[-bound:]
        ids = tokenizer(question, add_special_tokens=False)["input_ids"]
        keep = min(len(ids), self.max_text_tokens - self._count(self._render(CUT)))
        while keep > 0:
            head, tail = keep - keep // 2, keep // 2
            cut = tokenizer.decode(ids[:head]) + CUT + (tokenizer.decode(ids[-tail:]) if tail else "")
            excess = self._count(self._render(cut)) - self.max_text_tokens
            if excess <= 0:
                return cut
            keep -= excess  # the pieces tokenise differently where they were cut: try again, shorter
        return ""

    def _single_token(self, text: str) -> int:
        ids = self._processor.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ValueError(
                f"judge:{self.backend}: the answer {text!r} is {len(ids)} tokens for this tokenizer, not one"
            )
        return ids[0]

    def backend_identity(self) -> dict[str, object]:
        return {"weights": self._digest}

    def chat(self, question: str) -> str:
        """The model's chat-template text for one audio clip followed by one question, the question
        cut in the middle (``fit``) if the text would be longer than ``max_text_tokens``."""
        text = self._render(question)
        if self.refusal(text) is None:
            return text
        if not self._cut_logged:
            self._cut_logged = True
            log.warning(
                "judge:%s: questions longer than the %d tokens it reads are cut in the middle to fit "
                "(the first: %d characters)",
                self.backend,
                self.max_text_tokens,
                len(question),
            )
        return self._render(self.fit(question))

    def _render(self, question: str) -> str:
        audio_part = {"type": "audio", "audio_url": "clip"}
        text_part = {"type": "text", "text": question}
        if self.layout == "official":
            system = {"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPTS[self.family]}]}
            conversation = [system, {"role": "user", "content": [text_part, audio_part]}]
        else:
            conversation = [{"role": "user", "content": [audio_part, text_part]}]
        return self._processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)

    def next_token_probs(self, audio: Sequence[np.ndarray], questions: Sequence[str]) -> np.ndarray:
        """``(len(questions), vocab)`` first-answer-token probabilities, in left-padded batches.

        Questions are grouped by length (less padding to compute through) and put back in order.
        """
        texts = [self.chat(q) for q in questions]
        for i, text in enumerate(texts):
            if reason := self.refusal(text):
                raise ValueError(f"judge:{self.backend}: question {i}: {reason}")
        return self._probs(audio, texts)

    def _probs(self, audio: Sequence[np.ndarray], texts: Sequence[str]) -> np.ndarray:
        """``next_token_probs`` of chat-template texts already checked against ``max_text_tokens``."""

        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out: np.ndarray | None = None
        size = max(1, self.question_batch)
        self._audio_cache = {}
        try:
            out = self._batches(audio, texts, order, size)
        finally:
            self._audio_cache = None
        return out if out is not None else np.zeros((0, 0), np.float32)

    def _batches(self, audio, texts, order: list[int], size: int) -> np.ndarray | None:
        import torch

        out: np.ndarray | None = None
        window = getattr(getattr(self._processor, "feature_extractor", None), "n_samples", None)
        for s in range(0, len(order), size):
            rows = order[s : s + size]
            inputs = self._processor(
                text=[texts[i] for i in rows],
                audio=[audio[i][:window] for i in rows],  # what the extractor keeps (Qwen3-Omni's keeps all)
                sampling_rate=self.sample_rate,
                return_tensors="pt",
                padding=True,
            ).to(self.device)
            with torch.inference_mode(), self.precision():
                if self._kind == "qwen2_audio":  # 1-D positions, and the vocabulary only where it is read
                    positions = (inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)
                    hidden = self._model.model(**inputs, position_ids=positions).last_hidden_state
                    logits = self._model.lm_head(hidden[:, -1, :])
                else:  # an Omni thinker computes its own 3-D positions from the mask
                    hidden = self._model.model(**inputs, use_cache=False).last_hidden_state
                    logits = self._model.lm_head(hidden[:, -1, :])
            probs = torch.softmax(logits.float(), dim=-1).cpu().numpy()
            if out is None:
                out = np.empty((len(texts), probs.shape[1]), np.float32)
            out[rows] = probs
        return out

    def answer(
        self, audio: Sequence[np.ndarray], questions: Sequence[str], tokens: Sequence[str]
    ) -> list[Answer]:
        texts = [self.chat(q) for q in questions]
        refused = [self.refusal(text) for text in texts]
        run = [i for i, reason in enumerate(refused) if reason is None]
        probs = self._probs([audio[i] for i in run], [texts[i] for i in run])
        decode = self._processor.tokenizer.convert_ids_to_tokens
        answers = [Answer({}, error=f"judge:{self.backend}: {reason}") for reason in refused]
        for i, p in zip(run, probs):
            answers[i] = Answer(
                {t: float(p[self._token_ids[t]]) for t in tokens}, raw=str(decode(int(p.argmax())))
            )
        return answers


JUDGE_MINI = Path(__file__).resolve().parent.parent / "synth" / "weights" / "judge_mini"


@dataclass
class MiniJudgeScorer(HFJudgeScorer):
    """judge-mini, the shipped Qwen2-Audio-architecture judge of the synthetic world (``hf`` code path).

    Trained by ``python -m ttaeval.synth.train_judge``; its held-out numbers are in the folder's
    ``metrics.json``. It hears 4 s: longer clips are cut by its feature extractor, as Qwen2-Audio cuts
    at 30 s.
    """

    backend = "mini"

    model: Path | None = JUDGE_MINI
    """The judge-mini folder (default: the one shipped in the package)."""


@dataclass
class MiniV1JudgeScorer(MiniJudgeScorer):
    """``judge:mini-v1``: the first judge-mini (stage 1 without alignment; held-out presence 0.73, aqa
    ROC-AUC 0.65: its ``metrics.json``). Kept because the study's judge-reward runs (issue 8,
    ``resonate_train/configs/grpo_judge_*.toml``) were trained and scored with it: their recipes and
    reports stay reproducible until they are re-run with the current judge-mini."""

    backend = "mini-v1"

    model: Path | None = JUDGE_MINI.parent / "judge_mini_v1"
    """The judge-mini v1 folder shipped in the package."""


@dataclass
class MiniEvalJudgeScorer(MiniJudgeScorer):
    """``judge:mini-eval``: a second judge-mini, trained by the same recipe with another seed and so
    on other training scenes (``metrics.json`` beside it), that no fine-tune is trained on: the
    independent judge a study reads its judge claims from, as ``clap:mini-heldout`` is for CLAP."""

    backend = "mini-eval"

    model: Path | None = JUDGE_MINI.parent / "judge_mini_eval"
    """The judge-mini-eval folder shipped in the package."""
