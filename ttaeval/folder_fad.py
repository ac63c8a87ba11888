"""FAD between two folders of audio — what fadtk and frechet-audio-distance compute — as a thin front
on the run path: both folders are scored by an embedding scorer into a run store (files decoded in
threads, embedded in batches, cached by content when the store is kept), and the ``fad`` set metric
is read from it by ``evaluate_set_metrics``, as leaderboards and protocols read it. A file that
cannot be read is named with its cause and left out; never a 0.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ttaeval.embedders.base import EMBEDDING
from ttaeval.io.audio import ValidationConfig
from ttaeval.io.folder import collect_folder
from ttaeval.metrics.set_metrics import evaluate_set_metrics
from ttaeval.scorers import Scorer, get_scorer
from ttaeval.scoring import score_items
from ttaeval.store import RunStore

GENERATED, REFERENCE = "generated", "reference"


@dataclass
class FolderFad:
    """FAD of a generated folder against a reference folder (lower is closer)."""

    fad: float
    generated_files: int
    reference_files: int
    errors: list[str] = field(default_factory=list)


def embedding_scorer(spec: str) -> Scorer:
    """An embedding scorer from ``embed:NAME[,K=V]`` or the short ``NAME[,K=V]``."""
    head = spec.split(",", 1)[0]
    scorer = get_scorer(spec if ":" in head else f"embed:{spec}")
    if scorer.name != "embed":
        raise ValueError(f"{spec!r} is not an embedding scorer (embed:NAME; `ttaeval scorers` lists them)")
    return scorer


def folder_fad(
    generated: str | Path,
    reference: str | Path,
    scorer: Scorer,
    *,
    store_dir: str | Path | None = None,
    workers: int = 2,
    batch_size: int = 32,
    validation: ValidationConfig | None = None,
) -> FolderFad:
    """FAD of the files in ``generated`` against those in ``reference`` under ``scorer``.

    ``store_dir`` keeps the embeddings in a run store there (a second call embeds only new or
    changed files); by default a temporary one is used. Raises ValueError when a folder has no
    readable file (its errors in the message), NotADirectoryError for a missing folder.
    """
    items = {}
    for system, folder in ((GENERATED, generated), (REFERENCE, reference)):
        items[system] = collect_folder(folder, None, system)
    with tempfile.TemporaryDirectory() as tmp, RunStore(store_dir or tmp) as store:
        store.register_scorers([scorer])
        for system in items:  # the folders as they are now: a file removed since is no longer counted
            store.forget_clips(system)
        summary = score_items(
            items[GENERATED] + items[REFERENCE],
            [scorer],
            store,
            batch_size=batch_size,
            workers=workers,
            validation=validation,
        )
        embedded = store.artefacts(scorer.id, EMBEDDING)["system"].value_counts()
        counts = {system: int(embedded.get(system, 0)) for system in items}
        for system, folder in ((GENERATED, generated), (REFERENCE, reference)):
            if counts[system] == 0:
                errors = [e for e in summary.errors if Path(folder).name in e] or ["no audio files"]
                raise ValueError(f"{system} folder {folder}: nothing to embed ({'; '.join(errors[:3])})")
        selector = scorer.id.split("@", 1)[0]  # NAME:BACKEND
        table = evaluate_set_metrics(
            store, reference=REFERENCE, specs=[f"fad:{selector}"], systems=[GENERATED]
        )
    return FolderFad(float(table["mean"].iloc[0]), counts[GENERATED], counts[REFERENCE], summary.errors)
