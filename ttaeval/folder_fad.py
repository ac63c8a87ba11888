"""FAD between two folders of audio files — what fadtk and frechet-audio-distance compute — in one
call: files decoded and resampled in threads (the next chunk while this one is embedded), embedded
in batches, float64 statistics streamed chunk by chunk (memory does not grow with the folder), one
Frechet distance. A file that cannot be read is named with its cause and left out; never a 0."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ttaeval.audio import Clip, ValidationConfig, try_load_audio
from ttaeval.embedders import Embedder, get_embedder
from ttaeval.folder import audio_files
from ttaeval.frechet import GaussianStats
from ttaeval.registry import convert_option


@dataclass
class FolderStats:
    """A folder's FAD statistics and what went into them."""

    stats: GaussianStats | None
    files: int
    errors: list[str] = field(default_factory=list)


@dataclass
class FolderFad:
    """FAD of a generated folder against a reference folder (lower is closer)."""

    fad: float
    generated: FolderStats
    reference: FolderStats


def embedder_from_spec(spec: str) -> Embedder:
    """``NAME[,KEY=VALUE]...`` (``vggish,checkpoint=vggish.pth``, ``mini``) -> a built embedder;
    values are converted to the types of the embedder's constructor arguments."""
    name, *parts = [p.strip() for p in spec.split(",")]
    from ttaeval.embedders import EMBEDDERS

    cls = EMBEDDERS.get(name)
    params = inspect.signature(cls.__init__).parameters
    hints = typing.get_type_hints(cls.__init__)
    kwargs = {}
    for part in parts:
        key, eq, raw = part.partition("=")
        if not eq or key not in params or key == "self":
            known = ", ".join(p for p in params if p != "self")
            raise ValueError(f"embedder {name}: bad option {part!r}; options: {known}")
        kwargs[key] = convert_option(raw, hints.get(key, str), f"embedder {name} option {key}")
    return get_embedder(name, **kwargs)


def folder_stats(
    folder: str | Path,
    embedder: Embedder,
    *,
    workers: int = 4,
    chunk: int = 64,
    validation: ValidationConfig | None = None,
) -> FolderStats:
    """Statistics of every audio file directly in ``folder`` under ``embedder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"audio folder not found: {folder}")
    validation = validation or ValidationConfig()
    files = audio_files(folder)
    rate, channels = embedder.sample_rate, embedder.channels

    def load(path: Path) -> Clip | str:
        return try_load_audio(path, sample_rate=rate, channels=channels, validation=validation)

    result = FolderStats(None, 0)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:

        def chunks() -> Iterator[list]:
            pending = [pool.submit(load, p) for p in files[:chunk]]
            for start in range(chunk, len(files) + chunk, chunk):
                following = [pool.submit(load, p) for p in files[start : start + chunk]]  # decoded meanwhile
                yield [f.result() for f in pending]
                pending = following

        for loaded in chunks():
            clips = [c for c in loaded if isinstance(c, Clip)]
            result.errors += [c for c in loaded if isinstance(c, str)]
            if not clips:
                continue
            samples = embedder.fad_samples(clips)
            if result.stats is None:
                result.stats = GaussianStats.from_embeddings(samples)
            else:
                result.stats.update(samples)
            result.files += len(clips)
    return result


def folder_fad(
    generated: str | Path, reference: str | Path, embedder: Embedder, *, workers: int = 4, chunk: int = 64
) -> FolderFad:
    """FAD of the files in ``generated`` against those in ``reference``. Raises ValueError when a
    folder has no readable file (its errors are in the message)."""
    gen = folder_stats(generated, embedder, workers=workers, chunk=chunk)
    ref = folder_stats(reference, embedder, workers=workers, chunk=chunk)
    for what, path, st in (("generated", generated, gen), ("reference", reference, ref)):
        if st.stats is None:
            detail = "; ".join(st.errors[:3]) or "no audio files"
            raise ValueError(f"{what} folder {path}: nothing to embed ({detail})")
    return FolderFad(gen.stats.frechet_distance(ref.stats), gen, ref)
