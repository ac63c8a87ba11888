"""A trained text-to-audio system: network + text encoder + codec + default sampling settings,
saved as one folder (``config.json`` + ``model.safetensors``) and able to generate audio.

    system = ResonateSystem.load("ckpt/")
    audio = system.generate(["a dog barks"], seeds=[0])    # (B, samples) float32 at system.sample_rate
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from resonate_train.model import FluxAudio, FluxAudioConfig
from resonate_train.model.codec import MelCodec
from resonate_train.model.fluxaudio import LEGACY_FUNCTION
from resonate_train.model.text import TextEncoder, text_encoder_from_dict
from resonate_train.sampling import euler_sample, guided, in_precision
from ttaeval.checkpoints import skipped_init

RESONATE_MINI = Path(__file__).parent / "weights" / "resonate_mini"
"""The shipped mini model, pretrained on the synthetic world (``resonate-train pretrain``)."""
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
"""How a checkpoint may store its weights; the network always computes from float32 parameters."""


@dataclass(frozen=True)
class SamplingDefaults:
    """How the system generates unless told otherwise."""

    duration: float = 4.0
    steps: int = 25
    guidance: float = 4.5


@dataclass
class ResonateSystem:
    network: FluxAudio
    text_encoder: TextEncoder
    codec: Any
    """``MelCodec`` (the mini world) or ``MMAudioCodec`` (the released model's VAE and BigVGAN)."""
    defaults: SamplingDefaults = field(default_factory=SamplingDefaults)
    dtype: str = "float32"
    """Precision of the network's forward passes when sampling: ``bfloat16`` runs them under
    autocast (weights, guidance and the sampler stay float32). Not saved: it is how a run computes."""

    @property
    def sample_rate(self) -> int:
        return self.codec.sample_rate

    def set_empty_text(self) -> None:
        """Store the empty prompt's features in the network (the unconditional branch)."""
        feats, pooled = self.text_encoder.encode([""])
        self.network.empty_string_feat.copy_(feats[0])
        self.network.empty_string_feat_c.copy_(pooled[0])

    def save(self, folder: str | Path, weights_dtype: str = "float32") -> Path:
        """Write the checkpoint folder. ``weights_dtype="float16"`` stores the floating-point weights
        at half the size (a shipped fine-tune); they load back into float32 parameters."""
        if weights_dtype not in STORAGE_DTYPES:
            raise ValueError(f"weights_dtype {weights_dtype!r}: one of {', '.join(STORAGE_DTYPES)}")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = {
            "format": "resonate_train/1",
            "network": self.network.config.to_dict(),
            "text_encoder": self.text_encoder.to_dict(),
            "codec": self.codec.to_dict(),
            "sampling": asdict(self.defaults),
        }
        if weights_dtype != "float32":  # float32 checkpoints keep the bytes they always had
            config["weights_dtype"] = weights_dtype
        (folder / CONFIG_NAME).write_text(json.dumps(config, indent=1) + "\n")
        stored = STORAGE_DTYPES[weights_dtype]
        state = {
            k: (v.to(stored) if v.is_floating_point() else v).detach().contiguous().cpu()
            for k, v in self.network.state_dict().items()
        }
        save_file(state, str(folder / WEIGHTS_NAME))
        return folder

    @classmethod
    def load(cls, folder: str | Path, device: str = "cpu") -> ResonateSystem:
        from resonate_train.model.official import MMAudioCodec, is_release_folder, load_official

        folder = Path(folder)
        if is_release_folder(folder) and not (folder / CONFIG_NAME).is_file():
            return load_official(folder, device)
        if not (folder / CONFIG_NAME).is_file() or not (folder / WEIGHTS_NAME).is_file():
            raise FileNotFoundError(
                f"{folder}: not a resonate_train checkpoint ({CONFIG_NAME} + {WEIGHTS_NAME})"
            )
        config = json.loads((folder / CONFIG_NAME).read_text())
        # a config saved before the network's function fields existed means the function it was
        # trained with (LEGACY_FUNCTION); saved fields always win
        with skipped_init():  # the weights file replaces every weight
            network = FluxAudio(FluxAudioConfig(**{**LEGACY_FUNCTION, **config["network"]}))
        network.load_state_dict(load_file(str(folder / WEIGHTS_NAME)))
        codec_spec = dict(config["codec"])
        kind = codec_spec.pop("kind")
        if kind not in ("mel", "mmaudio"):
            raise ValueError(f"{folder}: unknown codec {config['codec']}")
        codec = MelCodec(**codec_spec) if kind == "mel" else MMAudioCodec(**codec_spec, device=device)
        return cls(
            network.to(device).eval(),
            text_encoder_from_dict(config["text_encoder"]),
            codec,
            SamplingDefaults(**config.get("sampling", {})),
        )

    def conditions(self, texts: list[str]) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        """(cond, uncond) network inputs for the prompts: text features, and the empty prompt's."""
        device = self.network.latent_mean.device
        feats, pooled = self.text_encoder.encode(list(texts))
        empty = self.network.empty_text(len(texts))
        return (feats.to(device), pooled.to(device)), empty

    def noise(self, seeds: list[int], frames: int) -> torch.Tensor:
        """Each clip's starting noise from its own seed: a clip never depends on its batch-mates' seeds."""
        dim = self.network.config.latent_dim
        rows = [torch.randn(frames, dim, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
        return torch.stack(rows).to(self.network.latent_mean.device)

    @torch.no_grad()
    def sample_latents(
        self, texts: list[str], seeds: list[int], duration: float, steps: int, guidance: float
    ) -> torch.Tensor:
        """Normalised latents ``(B, T, C)`` by Euler ODE sampling with classifier-free guidance."""
        cond, uncond = self.conditions(texts)
        velocity = guided(in_precision(self.network, self.dtype), cond, uncond, guidance)
        return euler_sample(velocity, self.noise(seeds, self.codec.frames(duration)), steps)

    def decode(self, latents: torch.Tensor, duration: float) -> np.ndarray:
        """Audio ``(B, samples)`` from normalised latents: un-normalised first, then decoded."""
        samples = round(duration * self.codec.sample_rate)
        return self.codec.decode(self.network.unnormalize(latents), samples).cpu().numpy()

    def generate(
        self,
        texts: list[str],
        seeds: list[int],
        duration: float | None = None,
        steps: int | None = None,
        guidance: float | None = None,
    ) -> np.ndarray:
        """Audio ``(B, samples)`` float32 at ``sample_rate`` (the defaults fill what is not given)."""
        d = self.defaults
        duration = duration or d.duration
        guidance = guidance if guidance is not None else d.guidance
        return self.decode(self.sample_latents(texts, seeds, duration, steps or d.steps, guidance), duration)
