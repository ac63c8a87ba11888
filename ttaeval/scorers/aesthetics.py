"""``aesthetics:audiobox`` — Meta's Audiobox-Aesthetics: CE, CU, PC, PQ.

Content Enjoyment, Content Usefulness, Production Complexity and Production Quality, each a
regression head on a WavLM encoder (``audiobox_aesthetics.model.aes.AesMultiOutput``, the package's
own class). The checkpoint is the released ``checkpoint.pt`` (``{"state_dict", "model_cfg",
"target_transform"}``) or a ``from_pretrained`` folder (config.json + model.safetensors, the
``facebook/audiobox-aesthetics`` layout), given by ``checkpoint=PATH``; nothing is downloaded.

Preprocessing is the package's ``AesPredictor.forward`` (whose module imports torchaudio, so we
restate it): 16 kHz mono (the framework resamples with soxr where the package used torchaudio), 10 s
windows with a 10 s hop from the start, the last one zero-padded and masked, each window's
de-normalised prediction weighted by its unpadded length. No randomness anywhere.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ttaeval.checkpoints import load_checkpoint, weights_digest
from ttaeval.io.audio import Clip
from ttaeval.optional import hub_offline, import_reference, weights_file
from ttaeval.scorers.base import MetricSpec, Scorer, ScoreResult

AXES = ("CE", "CU", "PC", "PQ")
MODEL_CFG_KEYS = (
    "proj_num_layer",
    "proj_ln",
    "proj_act_fn",
    "proj_dropout",
    "nth_layer",
    "use_weighted_layer_sum",
    "precision",
    "normalize_embed",
    "output_dim",
)
"""What ``AesPredictor.setup_model`` passes from the checkpoint's ``model_cfg``."""
FOLDER_FILES = ("config.json", "model.safetensors")
"""What ``AesMultiOutput.from_pretrained`` reads from a local folder."""


def window_spans(num_samples: int, window: int) -> list[tuple[int, int]]:
    """The package's windows: starts every ``window`` samples from 0, each ``(start, length)``."""
    return [(s, min(window, num_samples - s)) for s in range(0, num_samples, window)]


@dataclass
class AudioboxAestheticsScorer(Scorer):
    """Audiobox-Aesthetics CE/CU/PC/PQ."""

    name = "aesthetics"
    backend = "audiobox"
    version = "1"
    sample_rate = 16_000
    channels = 1
    metrics = (
        MetricSpec("CE", True, (1.0, 10.0), "content enjoyment"),
        MetricSpec("CU", True, (1.0, 10.0), "content usefulness"),
        MetricSpec("PC", None, (1.0, 10.0), "production complexity (descriptive)"),
        MetricSpec("PQ", True, (1.0, 10.0), "production quality"),
    )

    checkpoint: Path | None = None
    """checkpoint.pt, or a folder with config.json + model.safetensors."""
    window_s: int = 10
    """Window and hop in seconds (the package's 10)."""
    batch_size: int = 8
    """Windows per forward pass."""
    device: str = "cpu"
    """torch device: cpu, cuda, cuda:N, or auto (the local GPU, else the CPU; resolved once when the
    model loads; under torchrun, cuda means cuda:LOCAL_RANK)."""
    dtype: str = "float32"
    """Precision of the forward passes: "bfloat16" (or "float16" on GPUs) runs them under autocast
    with float32 weights; outputs are float32. Part of the id when not float32."""
    _model: object = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        self.bind_device()
        hint = "set checkpoint=PATH to checkpoint.pt or a facebook/audiobox-aesthetics folder"
        if self.checkpoint and Path(self.checkpoint).is_dir():  # the from_pretrained layout
            path = Path(self.checkpoint)
            for name in FOLDER_FILES:
                weights_file(path / name, "aesthetics:audiobox", hint)
        else:
            path = weights_file(self.checkpoint, "aesthetics:audiobox", hint)
        with hub_offline():  # local files only: no request to the hub, even where it cannot be reached
            self._load(path)

    def _load(self, path: Path) -> None:
        aes = import_reference("audiobox_aesthetics.model.aes", "aesthetics:audiobox")
        if path.is_dir():
            model = aes.AesMultiOutput.from_pretrained(str(path), local_files_only=True)
        else:
            ckpt = load_checkpoint(path)
            state = {re.sub("^model.", "", k): v for k, v in ckpt["state_dict"].items()}
            cfg = {k: ckpt["model_cfg"][k] for k in MODEL_CFG_KEYS}
            model = aes.AesMultiOutput(**cfg, target_transform=ckpt["target_transform"])
            try:
                model.load_state_dict(state)
            except RuntimeError as exc:
                raise ValueError(
                    f"aesthetics:audiobox: {path} does not fit: {str(exc).splitlines()[0]}"
                ) from None
        if self.dtype != "float32":
            # the model's forward enters its own autocast, which (at its "32") switches ours off:
            # set its own precision knobs instead (weights stay float32)
            from ttaeval.devices import resolve_dtype

            model.precision, model.enable_autocast = resolve_dtype(self.dtype), True
        self._model = model.to(self.device).eval()
        self._transform = {a: model.target_transform[a] for a in AXES}
        self._digest = weights_digest(path)

    def identity_options(self) -> dict[str, object]:
        return {"weights": self._digest, "window_s": self.window_s}

    def score_batch(self, clips: Sequence[Clip]) -> list[ScoreResult]:
        import torch

        window = self.window_s * self.sample_rate
        wavs, masks, weights, owner = [], [], [], []
        for i, clip in enumerate(clips):
            x = clip.audio[0]
            for start, length in window_spans(len(x), window):
                wav = np.zeros(window, dtype=np.float32)
                wav[:length] = x[start : start + length]
                mask = np.zeros(window, dtype=bool)
                mask[:length] = True
                wavs.append(wav)
                masks.append(mask)
                weights.append(length / window)
                owner.append(i)
        preds = {a: [] for a in AXES}
        with torch.inference_mode():
            for s in range(0, len(wavs), self.batch_size):
                batch = {
                    "wav": torch.from_numpy(np.stack(wavs[s : s + self.batch_size])[:, None]).to(self.device),
                    "mask": torch.from_numpy(np.stack(masks[s : s + self.batch_size])[:, None]).to(
                        self.device
                    ),
                }
                with self.precision():
                    out = self._model(batch)
                for a in AXES:
                    t = self._transform[a]
                    preds[a].append((out[a].float() * t["std"] + t["mean"]).cpu().numpy())
        owner_arr, w = np.asarray(owner), np.asarray(weights, dtype=np.float64)
        results = []
        for i in range(len(clips)):
            sel = owner_arr == i
            values = {a: float(np.sum(np.concatenate(preds[a])[sel] * w[sel]) / np.sum(w[sel])) for a in AXES}
            results.append(ScoreResult(values))
        return results
