"""``tangoflux:PATH`` — TangoFlux (Hung et al. 2024, declare-lab), a flow-matching text-to-audio
model, from a local folder, through the published ``tangoflux`` package's own model class.

The folder is the ``declare-lab/TangoFlux`` snapshot plus a local text encoder::

    PATH/
      config.json             TangoFlux's model config (``text_encoder_name``: google/flan-t5-large)
      tangoflux.safetensors   the model's weights (transformer, projections, duration embedder, T5)
      vae.safetensors         Stable Audio Open's AutoencoderOobleck (diffusers' default config), or
      vae/                    the same VAE as a diffusers folder (config.json + weights), e.g.
                              stable-audio-open-1.0's ``vae/`` subfolder
      text_encoder/           google/flan-t5-large's files (config, weights, tokenizer.json)

Offline, the config's text-encoder name must resolve to local files: ``text_encoder/`` inside the
folder wins; else the name itself when it is a local folder (absolute, or relative to PATH); else
the name's snapshot in the Hugging Face cache. For the real model::

    huggingface-cli download declare-lab/TangoFlux --local-dir tangoflux
    huggingface-cli download google/flan-t5-large --local-dir tangoflux/text_encoder
    ttaeval run --system tangoflux=tangoflux:tangoflux ...

Loading follows the package's ``TangoFluxInference``, which itself only loads from the hub by repo
id (``snapshot_download``): ``TangoFlux(config)`` with the text-encoder name pointed at the local
files, ``load_state_dict(..., strict=False)`` (the T5 embedding is tied, so its second name is
missing from the checkpoint; any other missing or unexpected name is an error here), the VAE, then
``inference_flow`` and ``vae.decode`` of the raw latents (TangoFlux trains on unscaled VAE latents).
The clip is cut to the requested duration (44.1 kHz stereo for the released model).

Settings: ``steps`` -> ``num_inference_steps``, ``guidance`` -> ``guidance_scale``, ``duration``
-> the duration conditioning and the clip's length. Defaults are TangoFlux's published ones: 50
steps (its README: "inference with 50 steps yields the best results", its CLI's default), guidance
4.5 (``TangoFluxInference.generate``'s default) and 10 s (the CLI's and ``generate``'s default).

Determinism: ``inference_flow`` draws its noise from torch's global CPU generator (it takes no
``generator``), so each clip is sampled alone, under ``torch.random.fork_rng`` seeded with the
clip's own seed: the same (prompt, seed) gives the same clip whatever else is in the batch, and the
caller's random state is left as it was. Package quirks worked around: ``inference_flow`` handles
one prompt per call (its classifier-free-guidance path mis-shapes a batch of prompts), hence
``batch_size`` 1; and with ``guidance`` <= 1 it calls ``encode_text`` with an argument that method
does not take, so the loaded model's ``encode_text`` is wrapped to accept it; and it passes the
transformer 3-d position ids, which recent diffusers accept but log as deprecated twice a step: that
one message is filtered out while sampling.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ttaeval.checkpoints import layout_digest
from ttaeval.generators import GenerationFailure, GenerationSettings, Generator
from ttaeval.io.audio import Clip
from ttaeval.io.prompts import Prompt

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "tangoflux.safetensors"
VAE_WEIGHTS_NAME = "vae.safetensors"
VAE_DIR = "vae"
TEXT_ENCODER_DIR = "text_encoder"
RELEASED_VAE_CONFIG: dict[str, Any] = {}
"""``AutoencoderOobleck`` arguments for a root ``vae.safetensors``: none, i.e. diffusers' defaults,
which are Stable Audio Open's VAE (44.1 kHz stereo, 2048 samples per 64-channel latent frame)."""
DEFAULT_TEXT_ENCODER = "google/flan-t5-large"
"""TangoFlux's default when its config names none."""
DTYPE_NAMES = ("float32", "bfloat16")


@dataclass
class TangoFluxGenerator(Generator):
    """Generate with a TangoFlux checkpoint folder (see the module note for its layout)."""

    path: Path
    """The TangoFlux folder: config.json, tangoflux.safetensors, the VAE, the text encoder."""
    device: str = "cpu"
    """torch device; ``auto``: the local GPU when there is one, else the CPU."""
    dtype: str = "float32"
    """Compute precision: float32, or bfloat16 (autocast; the weights stay float32)."""
    batch_size: int = 1
    """Prompts per model call. TangoFlux's ``inference_flow`` takes one prompt per call, so only 1
    is accepted (the runner's batches are still generated together, one clip after another)."""
    steps: int = 50
    """Flow-matching Euler steps when the run sets none (TangoFlux's README and CLI: 50)."""
    guidance: float = 4.5
    """Classifier-free guidance scale when the run sets none (``TangoFluxInference.generate``: 4.5)."""
    duration: float = 10.0
    """Seconds per clip when the run sets none (TangoFlux's CLI and ``generate``: 10)."""
    _model: Any = field(default=None, init=False, repr=False)
    _vae: Any = field(default=None, init=False, repr=False)

    kind = "tangoflux"

    def __post_init__(self) -> None:
        from ttaeval.devices import resolve_device

        self.path = Path(self.path)
        if self.dtype not in DTYPE_NAMES:
            raise ValueError(f"tangoflux: dtype {self.dtype!r}: expected one of {', '.join(DTYPE_NAMES)}")
        if self.batch_size != 1:
            raise ValueError(
                f"tangoflux: batch_size {self.batch_size}: TangoFlux's inference_flow generates one "
                "prompt per call, so batch_size must be 1"
            )
        if self.steps < 1 or self.duration <= 0:
            raise ValueError(
                f"tangoflux: steps ({self.steps}) and duration ({self.duration}) must be positive"
            )
        self.device = str(resolve_device(self.device))  # a concrete device: the runner times on it
        self._text_encoder = self._check_folder()  # fail when the run is planned, not mid-run

    def _check_folder(self) -> Path:
        """Every file the model needs, or a FileNotFoundError naming the folder and what it lacks;
        returns the text encoder's local folder."""
        folder = self.path
        layout = (
            f"expected {CONFIG_NAME}, {WEIGHTS_NAME}, {VAE_WEIGHTS_NAME} (or {VAE_DIR}/) and "
            f"{TEXT_ENCODER_DIR}/, as in the declare-lab/TangoFlux snapshot plus google/flan-t5-large"
        )
        if not folder.is_dir():
            raise FileNotFoundError(f"tangoflux: {folder} is not a folder ({layout})")
        missing = [name for name in (CONFIG_NAME, WEIGHTS_NAME) if not (folder / name).is_file()]
        vae_dir = folder / VAE_DIR
        if vae_dir.is_dir():
            if not (vae_dir / "config.json").is_file():
                missing.append(f"{VAE_DIR}/config.json")
            if not any(vae_dir.glob("*.safetensors")) and not any(vae_dir.glob("*.bin")):
                missing.append(f"{VAE_DIR}/ weights (diffusion_pytorch_model.safetensors)")
        elif not (folder / VAE_WEIGHTS_NAME).is_file():
            missing.append(f"{VAE_WEIGHTS_NAME} (or a {VAE_DIR}/ folder)")
        text_encoder: Path | None = None
        if (folder / CONFIG_NAME).is_file():
            name = json.loads((folder / CONFIG_NAME).read_text()).get(
                "text_encoder_name", DEFAULT_TEXT_ENCODER
            )
            text_encoder = _find_text_encoder(folder, name)
            if text_encoder is None:
                missing.append(
                    f"{TEXT_ENCODER_DIR}/ (the text encoder {name!r} is neither a local folder nor in "
                    "the Hugging Face cache)"
                )
            elif not (text_encoder / "config.json").is_file():
                missing.append(f"{text_encoder}/config.json")
        if missing:
            raise FileNotFoundError(f"tangoflux: {folder} lacks {', '.join(missing)} ({layout})")
        assert text_encoder is not None
        return text_encoder

    @property
    def identity(self) -> dict[str, Any]:
        """Options plus a digest of the folder's configs and tokenizer files and its weight files'
        names and sizes, so retrained weights saved into the same folder count as another system."""
        if "_digest" not in self.__dict__:
            roots = [self.path]
            if not self._text_encoder.is_relative_to(self.path):
                roots.append(self._text_encoder)
            self.__dict__["_digest"] = layout_digest(roots, (".json", ".model", ".txt"))
        ident = {k: v for k, v in super().identity.items() if k not in ("path", "device", "batch_size")}
        return {**ident, "checkpoint": self.__dict__["_digest"]}

    def load(self) -> None:
        """Build the TangoFlux module and the VAE from the folder onto the device (once)."""
        if self._model is not None:
            return
        import torch
        from diffusers import AutoencoderOobleck
        from safetensors.torch import load_file
        from tangoflux.model import TangoFlux

        config = json.loads((self.path / CONFIG_NAME).read_text())
        model = TangoFlux({**config, "text_encoder_name": str(self._text_encoder)})
        missing, unexpected = model.load_state_dict(load_file(str(self.path / WEIGHTS_NAME)), strict=False)
        # The T5 encoder's embedding is tied to its shared embedding, saved once: the package expects
        # that name (or other text-encoder ones, which keep text_encoder/'s weights) to be missing.
        wrong = [k for k in missing if not k.startswith("text_encoder.")] + list(unexpected)
        if wrong:
            raise ValueError(
                f"tangoflux: {self.path / WEIGHTS_NAME} does not match config.json: "
                f"{len(wrong)} missing or unexpected weights, e.g. {', '.join(wrong[:5])}"
            )
        _accept_samples_per_prompt(model)
        if (self.path / VAE_DIR).is_dir():
            vae = AutoencoderOobleck.from_pretrained(str(self.path / VAE_DIR), local_files_only=True)
        else:
            vae = AutoencoderOobleck(**RELEASED_VAE_CONFIG)
            vae.load_state_dict(load_file(str(self.path / VAE_WEIGHTS_NAME)))
        with torch.no_grad():
            self._model = model.to(self.device).eval()
            self._vae = vae.to(self.device).eval()

    @property
    def sample_rate(self) -> int:
        self.load()
        return int(self._vae.config.sampling_rate)

    @property
    def max_duration(self) -> float:
        """The longest clip in seconds: the duration conditioning's range, and the latent window
        give or take one latent frame (645 frames of 2048 samples hold 29.95 s; a 30 s request gets
        them all, as with the package's own ``generate``)."""
        self.load()
        hop = math.prod(self._vae.config.downsampling_ratios)
        window = (self._model.audio_seq_len + 1) * hop / self.sample_rate
        return min(float(self._model.max_duration), window)

    def resolve(self, settings: GenerationSettings) -> dict[str, Any]:
        """The duration, steps and guidance a clip is made with: the run's, else this generator's."""
        return {
            "duration": settings.duration if settings.duration is not None else self.duration,
            "steps": settings.steps if settings.steps is not None else self.steps,
            "guidance": settings.guidance if settings.guidance is not None else self.guidance,
        }

    def generate(
        self,
        prompts: Sequence[Prompt],
        seeds: Sequence[int],
        settings: GenerationSettings,
        samples: Sequence[int] | None = None,
    ) -> list[Clip | GenerationFailure]:
        import torch

        from ttaeval.devices import autocast

        self.load()
        used = self.resolve(settings)
        duration, steps, guidance = float(used["duration"]), int(used["steps"]), float(used["guidance"])
        rate = self.sample_rate
        if not 0 < duration <= self.max_duration:
            reason = (
                f"tangoflux: duration {duration} s is outside this model's range "
                f"(0, {self.max_duration:.3f}] s"
            )
            return [GenerationFailure(reason)] * len(prompts)
        if steps < 1:
            return [GenerationFailure(f"tangoflux: steps must be at least 1, got {steps}")] * len(prompts)
        length = round(duration * rate)
        out: list[Clip | GenerationFailure] = []
        for prompt, seed in zip(prompts, seeds):
            try:
                with _quiet_flux_ids(), torch.random.fork_rng(devices=[]), torch.inference_mode():
                    torch.manual_seed(int(seed))  # inference_flow's noise: torch.randn on the CPU
                    with autocast(self.device, self.dtype):
                        latents = self._model.inference_flow(
                            prompt.text,
                            num_inference_steps=steps,
                            guidance_scale=guidance,
                            duration=duration,
                            disable_progress=True,
                            num_samples_per_prompt=1,
                        )
                        wave = self._vae.decode(latents.transpose(2, 1)).sample
                audio = wave[0, :, :length].float().cpu().numpy().astype(np.float32)
            except Exception as exc:  # one clip's failure is recorded, the run goes on
                out.append(GenerationFailure(f"tangoflux: {type(exc).__name__}: {exc}"))
                continue
            out.append(Clip(audio, rate, prompt=prompt, source=f"tangoflux:{prompt.id}"))
        return out


def _find_text_encoder(folder: Path, name: str) -> Path | None:
    """The local folder of the config's text encoder (see the module note), or None."""
    if (folder / TEXT_ENCODER_DIR).is_dir():
        return folder / TEXT_ENCODER_DIR
    for candidate in (Path(name).expanduser(), folder / name):
        if candidate.is_dir():
            return candidate
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        cached = try_to_load_from_cache(name, "config.json")
    except Exception:  # not a repo id
        return None
    return Path(cached).parent if isinstance(cached, str) else None


def _accept_samples_per_prompt(model: Any) -> None:
    """tangoflux 0.1.0's ``inference_flow`` without guidance (scale <= 1) calls
    ``encode_text(prompt, num_samples_per_prompt=...)``, which that method does not take: wrap the
    instance's method so that it does (repeating each prompt's rows, as the guided path does)."""
    import inspect

    encode = model.encode_text
    if "num_samples_per_prompt" in inspect.signature(encode).parameters:
        return

    def encode_text(prompt: Any, num_samples_per_prompt: int = 1) -> Any:
        states, mask = encode(prompt)
        return (
            states.repeat_interleave(num_samples_per_prompt, 0),
            mask.repeat_interleave(num_samples_per_prompt, 0),
        )

    model.encode_text = encode_text


class _DropIdsDeprecation(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "_ids` 3d torch.Tensor is deprecated" not in record.getMessage()


@contextlib.contextmanager
def _quiet_flux_ids() -> Iterator[None]:
    """Drop diffusers' "Passing `txt_ids` 3d torch.Tensor is deprecated" warnings while sampling:
    ``inference_flow`` passes 3-d ids, so recent diffusers log two lines per step of every clip."""
    log = logging.getLogger("diffusers.models.transformers.transformer_flux")
    quiet = _DropIdsDeprecation()
    log.addFilter(quiet)
    try:
        yield
    finally:
        log.removeFilter(quiet)
