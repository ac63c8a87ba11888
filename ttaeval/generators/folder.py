"""``folder:PATH`` — audio someone already generated, named by prompt id.

``{id}.wav`` answers a prompt (sample 0); with several samples a prompt, ``{id}_{k}.wav`` is sample
``k`` (``{id}_0.wav`` may stand for sample 0); ``{id}`` may be the id's ``safe_name``, as ``ttaeval
run`` writes it, so a run's ``audio/SYSTEM`` folder is a folder system (the one naming rule of
``ttaeval.io.folder``). Any extension ``load_audio`` reads works. A prompt with no file is a recorded
failure naming the file expected, never a silent skip. The files are indexed by listing the folder: a
prompt id never becomes a path. A name that could belong to two requests (``dog_1.wav`` when the
suite has prompts ``dog`` and ``dog_1`` and two samples each, or ``dog.wav`` next to ``dog.flac``) is
a failure for both, never a guess.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ttaeval.generators import GenerationFailure, GenerationSettings, Generator
from ttaeval.io.audio import Clip, try_load_audio
from ttaeval.io.folder import audio_files, claims, file_names, printable, safe_name
from ttaeval.io.prompts import Prompt


@dataclass
class FolderGenerator(Generator):
    """Read each clip from ``path``; generation settings do not apply (recorded as absent)."""

    path: Path
    """The folder of audio files."""
    max_duration: float = 600.0
    """Refuse files longer than this (seconds) before decoding them."""
    _index: dict[tuple[str, int], list[Path]] | None = field(default=None, init=False, repr=False)
    _prompts: tuple[Prompt, ...] = field(default=(), init=False, repr=False)
    _samples: int = field(default=1, init=False, repr=False)

    kind = "folder"
    stores_audio = False

    def resolve(self, settings: GenerationSettings) -> dict:
        return {}

    def prepare(self, prompts: Sequence[Prompt], samples_per_prompt: int) -> None:
        self._prompts = tuple(prompts)
        self._index = None
        self._samples = samples_per_prompt

    def _files(self) -> dict[tuple[str, int], list[Path]]:
        """(prompt id, sample) -> every file whose name could be that request (``io.folder.claims``)."""
        if self._index is None:
            if not self.path.is_dir():
                raise NotADirectoryError(f"folder generator: no such folder {self.path}")
            names = file_names(self._prompts)
            self._index = {}
            for f in audio_files(self.path.resolve()):
                for request in claims(f.stem, names, self._samples):
                    self._index.setdefault(request, []).append(f)
        return self._index

    def _find(self, prompt: Prompt, sample: int) -> Path | str:
        """The file of a request, or why there is none."""
        files = self._files().get((prompt.id, sample), [])
        if not files:
            return f"{self.path}: no file for prompt {prompt.id!r} ({safe_name(prompt.id)}_{sample}.wav)"
        if len(files) > 1:
            listed = ", ".join(sorted(printable(f.name) for f in files))
            return f"{self.path}: ambiguous: {listed} all answer prompt {prompt.id!r}; keep one"
        names = file_names(self._prompts)
        others = claims(files[0].stem, names, self._samples) - {(prompt.id, sample)}
        if others:
            other = ", ".join(f"sample {k} of prompt {p!r}" for p, k in sorted(others))
            return (
                f"{self.path}: ambiguous: {printable(files[0].name)} could be sample {sample} of prompt "
                f"{prompt.id!r} or {other}; rename it"
            )
        return files[0]

    def generate(
        self,
        prompts: Sequence[Prompt],
        seeds: Sequence[int],
        settings: GenerationSettings,
        samples: Sequence[int] | None = None,
    ) -> list[Clip | GenerationFailure]:
        from ttaeval.io.audio import ValidationConfig

        validation = ValidationConfig(max_duration=self.max_duration)
        out: list[Clip | GenerationFailure] = []
        for prompt, sample in zip(prompts, samples or [0] * len(prompts)):
            path = self._find(prompt, sample)
            if isinstance(path, str):
                out.append(GenerationFailure(path))
                continue
            got = try_load_audio(path, prompt=prompt, validation=validation)
            out.append(GenerationFailure(got) if isinstance(got, str) else got)
        return out
