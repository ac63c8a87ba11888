"""``resonate:CKPT`` — a resonate_train checkpoint as a ``ttaeval run`` system.

Registered in ttaeval's ``ttaeval.generators`` entry-point group by this package's metadata, so
ttaeval never imports resonate_train: ``ttaeval run --system base=resonate:runs/grpo/final``;
plain ``resonate`` is the shipped resonate-mini.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resonate_train.system import CONFIG_NAME, RESONATE_MINI, WEIGHTS_NAME, ResonateSystem
from ttaeval.checkpoints import weights_digest
from ttaeval.generators import GenerationFailure, GenerationSettings, Generator
from ttaeval.io.audio import Clip
from ttaeval.io.prompts import Prompt


@dataclass
class ResonateGenerator(Generator):
    """Generate with a resonate_train checkpoint folder (Euler ODE sampling with CFG)."""

    path: Path = RESONATE_MINI
    """The checkpoint folder (config.json + model.safetensors), or a folder laid out like the Resonate
    release (``resonate_train.model.official``); default: the shipped resonate-mini."""
    device: str = "cpu"
    """torch device: ``cpu``, ``cuda``, ``cuda:1``, or ``auto`` (the GPU when there is one); under
    torchrun a CUDA device is the rank's own (``ttaeval.devices.resolve_device``)."""
    dtype: str = "float32"
    """Precision of the network's forward passes: ``bfloat16`` samples under autocast (float32
    weights); the clips differ from float32's in the last bits, so it is part of the identity."""
    batch_size: int = 16
    """Prompts per sampling call. Each clip's noise comes from its own seed whatever the batch, but
    batched matmuls may round differently next to other prompts (ttaeval run keeps batches fixed)."""
    _system: Any = field(default=None, init=False, repr=False)

    kind = "resonate"

    def __post_init__(self) -> None:
        from resonate_train.model.official import is_release_folder, release_files
        from ttaeval.devices import resolve_dtype

        resolve_dtype(self.dtype)  # a bad name fails when the run is planned
        self.path = Path(self.path)
        if is_release_folder(self.path) and not (self.path / CONFIG_NAME).is_file():
            self._files = list(release_files(self.path).values())  # every file there, before generating
        elif (self.path / CONFIG_NAME).is_file():
            self._files = [self.path / CONFIG_NAME, self.path / WEIGHTS_NAME]
        else:
            raise FileNotFoundError(
                f"resonate: {self.path} is neither a checkpoint folder (no {CONFIG_NAME}) nor a Resonate "
                "release folder (Resonate_GRPO.pth or Resonate_PT.pth)"
            )

    @property
    def identity(self) -> dict[str, Any]:
        if "_digest" not in self.__dict__:  # the content, wherever it lives or runs (hashed once)
            if self._files[0].name == CONFIG_NAME:
                digest = hashlib.blake2b(digest_size=8)
                for f in self._files:
                    digest.update(f.read_bytes())
                self.__dict__["_digest"] = digest.hexdigest()
            else:
                self.__dict__["_digest"] = "+".join(weights_digest(f) for f in self._files)
        ident = {k: v for k, v in super().identity.items() if k not in ("path", "device", "batch_size")}
        if self.dtype == "float32":  # the identity of runs stored before the field existed
            ident.pop("dtype")
        return {**ident, "checkpoint": self.__dict__["_digest"]}

    def load(self) -> None:
        self._loaded()

    def _loaded(self) -> ResonateSystem:
        if self._system is None:
            from ttaeval.devices import resolve_device

            self.device = str(resolve_device(self.device))
            self._system = ResonateSystem.load(self.path, self.device)
            self._system.dtype = self.dtype
        return self._system

    def resolve(self, settings: GenerationSettings) -> dict[str, Any]:
        d = self._loaded().defaults
        return {
            "duration": settings.duration or d.duration,
            "steps": settings.steps or d.steps,
            "guidance": settings.guidance if settings.guidance is not None else d.guidance,
        }

    def generate(
        self,
        prompts: Sequence[Prompt],
        seeds: Sequence[int],
        settings: GenerationSettings,
        samples: Sequence[int] | None = None,
    ) -> list[Clip | GenerationFailure]:
        system = self._loaded()
        s = self.resolve(settings)
        out: list[Clip | GenerationFailure] = []
        for start in range(0, len(prompts), self.batch_size):
            batch = list(prompts[start : start + self.batch_size])
            audio = system.generate(
                [p.text for p in batch],
                list(seeds[start : start + len(batch)]),
                s["duration"],
                s["steps"],
                s["guidance"],
            )
            out += [
                Clip(a[None], system.sample_rate, prompt=p, source=f"resonate:{p.id}")
                for p, a in zip(batch, audio)
            ]
        return out
