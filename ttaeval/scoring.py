"""Score audio items into a run store: load -> validate -> prepare per scorer -> score -> store.

Work goes in batches; each batch's clip rows and results are committed in one transaction, and a
(clip, prompt, scorer) that the store already holds is never computed again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ttaeval.io.audio import Clip, ValidationConfig, prepare, try_load_audio
from ttaeval.io.folder import AudioItem, printable
from ttaeval.scorers.base import Scorer, ScoreResult
from ttaeval.store import ClipRecord, RunStore, prompt_key_for


@dataclass
class ScoringSummary:
    """What a scoring pass did.

    ``computed`` counts (clip, scorer) results newly computed, ``cached`` those the store already
    had, ``failed`` the computed ones with no value at all. Clips that never reached a scorer are
    recorded failures counted by cause: ``missing`` (a prompt with no file), ``unmatched`` (a file
    whose name answers no prompt, or could answer two), ``load_failed`` (a file that cannot be read).
    """

    clips: int = 0
    missing: int = 0
    unmatched: int = 0
    load_failed: int = 0
    computed: int = 0
    cached: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def all_ok(self) -> bool:
        return not (self.missing or self.unmatched or self.load_failed or self.failed)

    def unscored(self) -> str:
        """The clips that never reached a scorer, by cause ("" when none)."""
        parts = [
            f"{self.missing} prompt(s) without a file" if self.missing else "",
            f"{self.unmatched} file name(s) matching no prompt" if self.unmatched else "",
            f"{self.load_failed} file(s) could not be read" if self.load_failed else "",
        ]
        return "; ".join(p for p in parts if p)


def score_items(
    items: Sequence[AudioItem],
    scorers: Sequence[Scorer],
    store: RunStore,
    *,
    batch_size: int = 32,
    validation: ValidationConfig | None = None,
    workers: int = 2,
    on_batch: Callable[[int], None] | None = None,
) -> ScoringSummary:
    """Score every item with every scorer and commit the results as it goes.

    Args:
        items: files paired with prompts (see ``ttaeval.io.folder.collect_folder``).
        scorers: built scorers; each gets the audio at its own rate/channels, converted once per
            batch and shared by scorers that want the same.
        store: where clip rows and results go; its cache decides what is computed.
        batch_size: items loaded, scored and committed together.
        validation: the audio checks' thresholds (default: ``ValidationConfig()``).
        workers: threads decoding files.
        on_batch: called with the number of items finished after each commit (progress bars).
    """
    summary = ScoringSummary()
    validation = validation or ValidationConfig()
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for start in range(0, len(items), batch_size):
            batch = items[start : start + batch_size]
            loaded = list(pool.map(lambda it: _load(it, validation), batch))
            records, clips = [], []
            for item, got in zip(batch, loaded):
                summary.clips += 1
                if isinstance(got, str):
                    if item.problem == "missing":
                        summary.missing += 1
                    elif item.problem:
                        summary.unmatched += 1
                    else:
                        summary.load_failed += 1
                    summary.errors.append(got)
                    source = printable(str(item.path)) if item.path else None
                    records.append(
                        ClipRecord(item.system, item.prompt_id, item.sample, None, None, source, error=got)
                    )
                    continue
                clips.append(got)
                records.append(
                    ClipRecord(
                        item.system,
                        item.prompt_id,
                        item.sample,
                        got.key,
                        item.prompt.content_key if item.prompt else None,
                        printable(str(item.path)),
                        got.sample_rate,
                        got.channels,
                        got.duration,
                        got.warnings,
                    )
                )
            score_and_commit(records, clips, scorers, store, summary)
            if on_batch:
                on_batch(len(batch))
    return summary


def score_and_commit(
    records: Sequence[ClipRecord],
    clips: Sequence[Clip],
    scorers: Sequence[Scorer],
    store: RunStore,
    summary: ScoringSummary,
    also: Sequence[RunStore] = (),
) -> None:
    """Score what the store lacks for ``clips`` with every scorer, then commit the clip rows and the
    results in one transaction (a batch is stored whole or not at all). Results found in ``also``
    (the run store, for a rank writing its shard) count as done too."""
    converted: dict[tuple[int, int | None, int | None], Clip] = {}
    stores = list(dict.fromkeys([store, *also]))
    pending = [(s, _score_missing(s, list(clips), stores, summary, converted)) for s in scorers]
    with store.transaction():
        for rec in records:
            store.put_clip(rec)
        for scorer, scored in pending:
            for (clip_key, prompt_key), result in scored.items():
                store.put_result(clip_key, prompt_key, scorer.id, result)


def _load(item: AudioItem, validation: ValidationConfig) -> Clip | str:
    """The clip, or the reason it cannot be had."""
    if item.error or item.path is None:
        return item.error or f"{item.prompt_id}: no file"
    got = try_load_audio(item.path, prompt=item.prompt, validation=validation)
    return printable(got) if isinstance(got, str) else got


def _score_missing(
    scorer: Scorer,
    clips: list[Clip],
    stores: Sequence[RunStore],
    summary: ScoringSummary,
    converted: dict[tuple[int, int | None, int | None], Clip],
) -> dict[tuple[str, str], ScoreResult]:
    """Score the clips whose (content, prompt) this scorer has no result for, in one call."""
    todo: dict[tuple[str, str], Clip] = {}
    for clip in clips:
        todo.setdefault((clip.key, prompt_key_for(scorer, clip.prompt)), clip)
    done: set[tuple[str, str]] = set()
    for st in stores:
        done |= st.done(scorer.id, todo)
    summary.cached += len(done)
    todo = {k: c for k, c in todo.items() if k not in done}
    if not todo:
        return {}
    prepared = []
    for clip in todo.values():
        conv_key = (id(clip), scorer.sample_rate, scorer.channels)
        if conv_key not in converted:
            converted[conv_key] = prepare(clip, scorer.sample_rate, scorer.channels)
        prepared.append(converted[conv_key])
    results = scorer.score(prepared)
    summary.computed += len(results)
    for clip, result in zip(todo.values(), results):
        if result.failed:
            summary.failed += 1
            summary.errors.append(f"{clip.source}: {scorer.label}: {result.error}")
    return dict(zip(todo, results))
