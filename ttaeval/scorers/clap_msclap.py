"""``clap:msclap`` — CLAP score with Microsoft CLAP 2023 (``msclap``), TTA-Bench's own CLAP.

The model is msclap's own ``models.clap.CLAP`` built from the package's ``configs/config_2023.yml``
(HTSAT audio tower, GPT-2 text tower, 1024-d projections) and the released ``CLAP_weights_2023.pth``
(``checkpoint=PATH``; its ``"model"`` entry). msclap's wrapper (``CLAPWrapper``) imports torchaudio,
which cannot live next to a CPU torch, so we load ``msclap.models`` without it and do the wrapper's
preprocessing ourselves, as its source does:

- Audio: 44.1 kHz mono (the framework resamples with soxr; the wrapper used torchaudio's sinc
  resampler, a difference below the model's sensitivity but not bit-identical), 7 s windows. A clip of
  at most 7 s is repeated ``ceil(7 s / length)`` times and cut to 7 s. A longer clip: the wrapper takes
  one random 7 s crop; we use ``ceil(length / 7 s)`` full windows evenly spaced from start to end and
  average their normalised embeddings. ``crop=random`` reproduces the wrapper with Python's
  ``random.Random(seed)`` drawn once per clip.
- Text: ``text + ' <|endoftext|>'``, the GPT-2 tokenizer with ``'!'`` added as the pad token, padded to
  77 tokens (we also truncate there; the wrapper fails on longer texts), the embedding taken at the
  last non-pad position (as msclap counts it: ids != 0, so a ``!`` in a prompt counts as padding,
  exactly as in published TTA-Bench numbers).
- The GPT-2 tower's weights come from the checkpoint; only its config and tokenizer are read from
  ``text_model`` (a local copy of ``gpt2``, or that name in the Hugging Face cache). msclap calls
  ``AutoModel.from_pretrained('gpt2')``, which needs the hub; we build the tower from that config.
- msclap loads with ``strict=False``, which would accept a checkpoint that fits nothing; we refuse
  missing weights and allow only the known stale buffers of older transformers as unexpected keys.
"""

from __future__ import annotations

import contextlib
import importlib.util
import random
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ttaeval.checkpoints import load_checkpoint
from ttaeval.optional import hub_offline, install_hint, weights_file
from ttaeval.scorers.clap_common import (
    ClapScorer,
    local_text_model,
    pool_windows,
    split_windows,
    weights_digest,
)

STALE_BUFFERS = (".attn.bias", ".attn.masked_bias", ".position_ids")
"""Buffers older transformers saved and newer ones no longer have (GPT-2 attention masks)."""
PACKAGE = "_ttaeval_msclap_models"


def msclap_models(where: str = "clap:msclap"):
    """``msclap.models`` imported without ``msclap/__init__`` (which imports torchaudio)."""
    if PACKAGE in sys.modules:
        return sys.modules[PACKAGE]
    spec = importlib.util.find_spec("msclap")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"{where} needs msclap's model code: {install_hint('msclap')}")
    root = Path(spec.submodule_search_locations[0])
    models = importlib.util.spec_from_file_location(
        PACKAGE, root / "models" / "__init__.py", submodule_search_locations=[str(root / "models")]
    )
    module = importlib.util.module_from_spec(models)
    sys.modules[PACKAGE] = module
    try:
        models.loader.exec_module(module)
    except ImportError as exc:
        del sys.modules[PACKAGE]
        raise ImportError(f"{where} needs {exc.name}: {install_hint('msclap')}") from None
    module.config_dir = root / "configs"
    return module


@contextlib.contextmanager
def _text_tower_from(clap_module, config) -> Iterator[None]:
    """Make msclap's ``AutoModel.from_pretrained(name)`` build the tower from a local config."""
    from transformers import AutoModel

    original = clap_module.AutoModel
    clap_module.AutoModel = type(
        "AutoModelFromConfig",
        (),
        {"from_pretrained": staticmethod(lambda *a, **k: AutoModel.from_config(config))},
    )
    try:
        yield
    finally:
        clap_module.AutoModel = original


@dataclass
class MsClapScorer(ClapScorer):
    """CLAP score with Microsoft CLAP 2023."""

    backend = "msclap"
    version = "1"
    sample_rate = 44_100

    checkpoint: Path | None = None
    """CLAP_weights_2023.pth (msclap's release; a dict whose "model" entry is the state dict)."""
    text_model: str = "gpt2"
    """Folder (or Hugging Face cache name) with the GPT-2 config and tokenizer."""
    crop: str = "windows"
    """Clips over 7 s: "windows" (evenly spaced full windows, averaged) or "random" (msclap's own)."""
    seed: int = 0
    """Seed of the per-clip ``random.Random`` when crop=random."""
    batch_size: int = 8
    """Windows per forward pass."""
    device: str = "cpu"
    """torch device: cpu, cuda, cuda:N, or auto (the local GPU, else the CPU; resolved once when the
    model loads; under torchrun, cuda means cuda:LOCAL_RANK)."""
    dtype: str = "float32"
    """Precision of the forward passes: "bfloat16" (or "float16" on GPUs) runs them under autocast
    with float32 weights; outputs are float32. Part of the id when not float32."""
    _model: object = field(init=False, repr=False, default=None)
    _tokenizer: object = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        if self.crop not in ("windows", "random"):
            raise ValueError(f"clap:msclap crop must be 'windows' or 'random', got {self.crop!r}")
        self.bind_device()
        path = weights_file(self.checkpoint, "clap:msclap", "set checkpoint=PATH to CLAP_weights_2023.pth")
        with hub_offline():  # local files only: no request to the hub, even where it cannot be reached
            self._load(path)

    def _load(self, path: Path) -> None:
        import yaml

        models = msclap_models()
        args = yaml.safe_load((models.config_dir / "config_2023.yml").read_text())
        self._args = args
        where = f"clap:msclap text_model={self.text_model}"
        config, self._tokenizer, self._text_digest = local_text_model(self.text_model, where, "gpt2")
        self._tokenizer.add_special_tokens({"pad_token": "!"})  # as msclap's wrapper
        with _text_tower_from(models.clap, config):
            model = models.clap.CLAP(
                audioenc_name=args["audioenc_name"],
                sample_rate=args["sampling_rate"],
                window_size=args["window_size"],
                hop_size=args["hop_size"],
                mel_bins=args["mel_bins"],
                fmin=args["fmin"],
                fmax=args["fmax"],
                classes_num=args["num_classes"],
                out_emb=args["out_emb"],
                text_model=args["text_model"],
                transformer_embed_dim=args["transformer_embed_dim"],
                d_proj=args["d_proj"],
            )
        state = load_checkpoint(path)
        state = state.get("model", state)  # msclap's releases wrap the state dict; safetensors do not
        missing, unexpected = model.load_state_dict(state, strict=False)
        unexpected = [k for k in unexpected if not k.endswith(STALE_BUFFERS)]
        if missing or unexpected:
            raise ValueError(
                f"clap:msclap: {path} does not fit msclap 2023 with text_model={self.text_model} "
                f"({len(missing)} missing, e.g. {missing[:2]}; "
                f"{len(unexpected)} unexpected, e.g. {unexpected[:2]})"
            )
        self._model = model.to(self.device).eval()
        self._window = int(args["duration"] * args["sampling_rate"])
        self._digest = weights_digest(path)

    def identity_options(self) -> dict[str, object]:
        options = {"weights": self._digest, "text": self._text_digest, "crop": self.crop}
        if self.crop == "random":
            options["seed"] = self.seed
        return options

    def _fit(self, x: np.ndarray) -> np.ndarray:
        """msclap's ``load_audio_into_tensor``: repeat-and-cut to 7 s, or a seeded random 7 s crop."""
        n, w = len(x), self._window
        if w >= n:
            return np.tile(x, -(-w // n))[:w]
        start = random.Random(self.seed).randrange(n - w)
        return x[start : start + w]

    def embed_audio(self, audio: Sequence[np.ndarray]) -> np.ndarray:
        import torch

        if self.crop == "random":
            pieces, owner = list(audio), list(range(len(audio)))
        else:
            pieces, owner = split_windows(audio, self._window)
        embs = []
        with torch.inference_mode():
            for s in range(0, len(pieces), self.batch_size):
                batch = np.stack([self._fit(x) for x in pieces[s : s + self.batch_size]])
                with self.precision():
                    emb = self._model.audio_encoder(torch.from_numpy(batch).to(self.device))[0]
                embs.append(torch.nn.functional.normalize(emb.float(), dim=-1).cpu().numpy())
        return pool_windows(np.concatenate(embs), owner, len(audio))

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        import torch

        suffix = " <|endoftext|>" if "gpt" in self._args["text_model"] else ""
        tokens = self._tokenizer(
            [t + suffix for t in texts],
            max_length=self._args["text_len"],
            padding="max_length",
            truncation=True,
            return_tensors="pt",
        )
        inputs = {k: tokens[k].to(self.device) for k in ("input_ids", "attention_mask")}
        with torch.inference_mode(), self.precision():
            emb = self._model.caption_encoder(inputs)
        return torch.nn.functional.normalize(emb.float(), dim=-1).cpu().numpy()
