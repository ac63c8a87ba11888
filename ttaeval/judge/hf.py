"""``judge:hf`` — the judge on a transformers model from a folder; ``judge:mini`` — the shipped judge-mini.

Supported: Qwen2-Audio (``Qwen2AudioForConditionalGeneration``) and the thinker of Qwen2.5-Omni
(``Qwen2_5OmniThinkerForConditionalGeneration``; the talker is never loaded). Only the first answer
token's distribution is needed, so there is no ``generate``: the questions go through the model in
left-padded batches, one forward pass each, and the last position of every row is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ttaeval.checkpoints import weights_digest
from ttaeval.judge.base import Answer, JudgeScorer
from ttaeval.scorers.clap_common import check_tokenizer

FAMILY_OF_MODEL_TYPE = {
    "qwen2_audio": "qwen2-audio",
    "qwen2_5_omni": "qwen2.5-omni",
    "qwen2_5_omni_thinker": "qwen2.5-omni",
}


def load_judge_model(path: Path, device: str = "cpu"):
    """(model, processor, model_type) from a Qwen2-Audio or Qwen2.5-Omni folder, offline."""
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
    else:
        raise ValueError(
            f"judge:hf supports Qwen2-Audio and Qwen2.5-Omni folders; {path} holds a {kind!r} model"
        )
    processor = AutoProcessor.from_pretrained(path, local_files_only=True)
    return model.to(device).eval(), processor, kind


@dataclass
class HFJudgeScorer(JudgeScorer):
    """The judge on a transformers Qwen2-Audio or Qwen2.5-Omni (thinker) folder."""

    backend = "hf"
    id_exclude = (*JudgeScorer.id_exclude, "question_batch")

    model: Path | None = None
    """Folder with the model and its processor (feature extractor, tokenizer, chat template)."""
    family: str = "auto"
    """Question texts and answer tokens (see ``TEMPLATES``); ``auto`` = from the model type."""
    question_batch: int = 16
    """Questions per forward pass."""
    device: str = "cpu"
    """torch device."""
    _model: object = field(init=False, repr=False, default=None)
    _processor: object = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        if self.model is None or not Path(self.model).is_dir():
            raise FileNotFoundError(
                f"judge:{self.backend} model folder not found: {self.model} (set model=DIR)"
            )
        path = Path(self.model)
        self._model, self._processor, self._kind = load_judge_model(path, self.device)
        if self.family == "auto":
            self.family = FAMILY_OF_MODEL_TYPE[self._kind]
        super().__post_init__()
        tokenizer = self._processor.tokenizer
        check_tokenizer(tokenizer, f"judge:{self.backend} {path}")
        tokenizer.padding_side = "left"  # the last position is every row's next token
        self._token_ids = {t: self._single_token(t) for t in self.answer_tokens}
        self._digest = weights_digest(path)

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
        """The model's chat-template text for one audio clip followed by one question."""
        audio_part = {"type": "audio", "audio_url": "clip"}
        conversation = [{"role": "user", "content": [audio_part, {"type": "text", "text": question}]}]
        return self._processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)

    def next_token_probs(self, audio: Sequence[np.ndarray], questions: Sequence[str]) -> np.ndarray:
        """``(len(questions), vocab)`` first-answer-token probabilities, in left-padded batches.

        Questions are grouped by length (less padding to compute through) and put back in order.
        """
        import torch

        texts = [self.chat(q) for q in questions]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out: np.ndarray | None = None
        size = max(1, self.question_batch)
        for s in range(0, len(order), size):
            rows = order[s : s + size]
            inputs = self._processor(
                text=[texts[i] for i in rows],
                audio=[audio[i] for i in rows],
                sampling_rate=self.sample_rate,
                return_tensors="pt",
                padding=True,
            ).to(self.device)
            with torch.inference_mode():
                if self._kind == "qwen2_audio":  # 1-D positions, and the vocabulary only where it is read
                    positions = (inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)
                    hidden = self._model.model(**inputs, position_ids=positions).last_hidden_state
                    logits = self._model.lm_head(hidden[:, -1, :])
                else:  # Omni computes its own 3-D positions from the mask
                    logits = self._model(**inputs).logits[:, -1, :]
            probs = torch.softmax(logits.float(), dim=-1).cpu().numpy()
            if out is None:
                out = np.empty((len(texts), probs.shape[1]), np.float32)
            out[rows] = probs
        return out if out is not None else np.zeros((0, 0), np.float32)

    def answer(
        self, audio: Sequence[np.ndarray], questions: Sequence[str], tokens: Sequence[str]
    ) -> list[Answer]:
        probs = self.next_token_probs(audio, questions)
        decode = self._processor.tokenizer.convert_ids_to_tokens
        return [
            Answer({t: float(p[self._token_ids[t]]) for t in tokens}, raw=str(decode(int(p.argmax()))))
            for p in probs
        ]


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
