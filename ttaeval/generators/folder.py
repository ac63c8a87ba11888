"""``folder:PATH`` — audio someone already generated, named by prompt id.

``{id}.wav`` answers a prompt (sample 0); with several samples a prompt, ``{id}_{k}.wav`` is sample
``k`` (``{id}_0.wav`` may stand for sample 0). Any extension ``load_audio`` reads works. A prompt
with no file is a recorded failure naming the file expected, never a silent skip. The files are
indexed by listing the folder: a prompt id never becomes a path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ttaeval.audio import AudioError, Clip, load_audio
from ttaeval.folder import audio_files
from ttaeval.generators import GenerationFailure, GenerationSettings, Generator
from ttaeval.prompts import Prompt


@dataclass
class FolderGenerator(Generator):
    """Read each clip from ``path``; generation settings do not apply (recorded as absent)."""

    path: Path
    """The folder of audio files."""
    max_duration: float = 600.0
    """Refuse files longer than this (seconds) before decoding them."""
    _index: dict[str, Path] | None = field(default=None, init=False, repr=False)

    kind = "folder"
    stores_audio = False

    def resolve(self, settings: GenerationSettings) -> dict:
        return {}

    def _files(self) -> dict[str, Path]:
        if self._index is None:
            if not self.path.is_dir():
                raise NotADirectoryError(f"folder generator: no such folder {self.path}")
            self._index = {}
            for f in audio_files(self.path.resolve()):
                self._index.setdefault(f.stem, f)
        return self._index

    def generate(
        self,
        prompts: Sequence[Prompt],
        seeds: Sequence[int],
        settings: GenerationSettings,
        samples: Sequence[int] | None = None,
    ) -> list[Clip | GenerationFailure]:
        from ttaeval.audio import ValidationConfig

        files = self._files()
        validation = ValidationConfig(max_duration=self.max_duration)
        out: list[Clip | GenerationFailure] = []
        for prompt, sample in zip(prompts, samples or [0] * len(prompts)):
            names = [f"{prompt.id}_{sample}"] + ([prompt.id] if sample == 0 else [])
            path = next((files[n] for n in names if n in files), None)
            if path is None:
                out.append(
                    GenerationFailure(f"{self.path}: no file for prompt {prompt.id!r} ({names[0]}.wav)")
                )
                continue
            try:
                out.append(load_audio(path, prompt=prompt, validation=validation))
            except AudioError as exc:
                out.append(GenerationFailure(str(exc)))
            except OSError as exc:
                out.append(GenerationFailure(f"{path}: unreadable: {exc.strerror or exc}"))
        return out
