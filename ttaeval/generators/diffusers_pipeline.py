"""``diffusers:PATH`` — a diffusers text-to-audio pipeline from a local folder (AudioLDM, AudioLDM 2,
Stable Audio Open, or any pipeline whose call takes ``prompt`` and returns ``.audios``).

The run's settings map onto the pipeline's own arguments: ``steps`` -> ``num_inference_steps``,
``guidance`` -> ``guidance_scale``, ``duration`` -> ``audio_length_in_s`` (AudioLDM family) or
``audio_end_in_s`` (Stable Audio). Each clip's noise comes from a ``torch.Generator`` seeded with the
clip's seed. With ``batch_size`` 1 (the default) a clip never depends on which prompts share its
batch; larger batches are faster, but batched matmuls may change the last float bits, and so the
content key.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ttaeval.generators import GenerationFailure, GenerationSettings, Generator
from ttaeval.io.audio import Clip
from ttaeval.io.prompts import Prompt

_DURATION_ARGS = ("audio_length_in_s", "audio_end_in_s")


@dataclass
class DiffusersGenerator(Generator):
    """Generate with ``DiffusionPipeline.from_pretrained(path)`` (local files only)."""

    path: Path
    """The pipeline folder (``model_index.json`` and its components)."""
    device: str = "cpu"
    """torch device."""
    dtype: str = "float32"
    """Weights' dtype: float32, float16 or bfloat16."""
    batch_size: int = 1
    """Prompts per pipeline call (see the module note on determinism)."""
    negative_prompt: str = ""
    """Negative prompt for classifier-free guidance (empty: the pipeline's default)."""
    _pipe: Any = field(default=None, init=False, repr=False)

    kind = "diffusers"

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if not (self.path / "model_index.json").is_file():  # fail when the run is planned, not mid-run
            raise FileNotFoundError(f"diffusers: {self.path} holds no model_index.json (a pipeline folder)")

    @property
    def identity(self) -> dict[str, Any]:
        """Options plus a digest of the pipeline's configs and its weight files' names and sizes, so
        retrained weights saved into the same folder count as another generator."""
        from ttaeval.checkpoints import layout_digest

        ident = {k: v for k, v in super().identity.items() if k not in ("path", "device", "batch_size")}
        return {**ident, "pipeline": layout_digest([self.path])}  # the content, wherever it lives or runs

    def _pipeline(self) -> Any:
        if self._pipe is None:
            import torch
            from diffusers import DiffusionPipeline

            if not (Path(self.path) / "model_index.json").is_file():
                raise FileNotFoundError(
                    f"diffusers: {self.path} holds no model_index.json (a pipeline folder)"
                )
            self._pipe = DiffusionPipeline.from_pretrained(
                str(self.path), torch_dtype=getattr(torch, self.dtype), local_files_only=True
            ).to(self.device)
            self._pipe.set_progress_bar_config(disable=True)
            self._params = set(inspect.signature(self._pipe.__call__).parameters)
        return self._pipe

    @property
    def sample_rate(self) -> int:
        pipe = self._pipeline()
        vae = getattr(pipe, "vae", None)
        if vae is not None and hasattr(vae, "sampling_rate"):
            return int(vae.sampling_rate)
        return int(pipe.vocoder.config.sampling_rate)

    def resolve(self, settings: GenerationSettings) -> dict[str, Any]:
        """The call's arguments with the pipeline's defaults filled in (what the clip was made with)."""
        self._pipeline()
        defaults = {
            n: p.default
            for n, p in inspect.signature(self._pipe.__call__).parameters.items()
            if p.default is not inspect.Parameter.empty
        }
        out = {
            "steps": settings.steps or defaults.get("num_inference_steps"),
            "guidance": settings.guidance
            if settings.guidance is not None
            else defaults.get("guidance_scale"),
        }
        if settings.duration is not None:
            out["duration"] = settings.duration
        return out

    def _kwargs(self, settings: GenerationSettings) -> dict[str, Any]:
        kw: dict[str, Any] = {}
        if settings.steps is not None:
            kw["num_inference_steps"] = settings.steps
        if settings.guidance is not None:
            kw["guidance_scale"] = settings.guidance
        if settings.duration is not None:
            name = next((a for a in _DURATION_ARGS if a in self._params), None)
            if name is None:
                raise ValueError(f"diffusers: {type(self._pipe).__name__} takes no duration argument")
            kw[name] = settings.duration
        if "output_type" in self._params:
            kw["output_type"] = "np"
        return kw

    def generate(
        self,
        prompts: Sequence[Prompt],
        seeds: Sequence[int],
        settings: GenerationSettings,
        samples: Sequence[int] | None = None,
    ) -> list[Clip | GenerationFailure]:
        import torch

        pipe = self._pipeline()
        kwargs = self._kwargs(settings)
        rate = self.sample_rate
        out: list[Clip | GenerationFailure] = []
        for start in range(0, len(prompts), self.batch_size):
            batch = list(prompts[start : start + self.batch_size])
            gens = [
                torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds[start : start + len(batch)]
            ]
            extra = {"negative_prompt": [self.negative_prompt] * len(batch)} if self.negative_prompt else {}
            try:
                with torch.inference_mode():
                    result = pipe(prompt=[p.text for p in batch], generator=gens, **kwargs, **extra)
                audios = result.audios
                audios = audios.float().cpu().numpy() if hasattr(audios, "numpy") else np.asarray(audios)
            except Exception as exc:  # one batch's failure is recorded, the run goes on
                out += [GenerationFailure(f"diffusers: {type(exc).__name__}: {exc}")] * len(batch)
                continue
            for p, audio in zip(batch, audios):
                audio = np.asarray(audio, dtype=np.float32)
                audio = audio[None] if audio.ndim == 1 else audio
                out.append(Clip(audio, rate, prompt=p, source=f"diffusers:{p.id}"))
        return out
