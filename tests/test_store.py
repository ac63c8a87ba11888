"""The run store and the scoring pipeline: content-keyed cache, manifest, artefacts, retries."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from helpers import tone
from ttaeval import Clip, Prompt, get_scorer
from ttaeval.io.folder import collect_folder
from ttaeval.scorers import MetricSpec, Scorer, ScoreResult
from ttaeval.scoring import score_items
from ttaeval.store import RunStore, StoreError


@dataclass
class PromptLength(Scorer):
    """Reads the prompt: level times the prompt's length. Keeps an embedding artefact."""

    name = "promptlen"
    backend = "test"
    metrics = (MetricSpec("value", True),)
    uses_prompt = True
    id_exclude = ("batch_size", "calls", "fail_on")  # test knobs that must not split the cache
    batch_size: int = 16
    fail_on: str = ""
    calls: int = 0

    def score_batch(self, clips: Sequence[Clip]) -> list[ScoreResult]:
        self.calls += len(clips)
        out = []
        for c in clips:
            if self.fail_on and self.fail_on in c.prompt.text:
                raise RuntimeError("planted failure")
            level = float(np.abs(c.audio).mean())
            out.append(ScoreResult({"value": level * len(c.prompt.text)}, artefacts={"emb": c.audio[0, :4]}))
        return out


def write_folder(folder, n=6, same_audio=False, rate=16_000):
    folder.mkdir(parents=True, exist_ok=True)
    prompts = [Prompt(f"prompt_{i:04d}", f"tone number {i}" + "!" * i) for i in range(1, n + 1)]
    for i, p in enumerate(prompts):
        x = tone(440 if same_audio else 300 + 50 * i, 0.5, rate)
        sf.write(folder / f"{p.id}.wav", x.T, rate)
    return prompts


def run(folder, prompts, run_dir, scorers, system=None):
    items = collect_folder(folder, prompts, system)
    with RunStore(run_dir) as store:
        store.add_prompts(prompts)
        store.record_run("test", {}, scorers)
        return score_items(items, scorers, store, batch_size=4)


def test_second_run_computes_nothing(tmp_path):
    prompts = write_folder(tmp_path / "sys")
    scorers = [get_scorer("signal"), PromptLength()]
    first = run(tmp_path / "sys", prompts, tmp_path / "run", scorers)
    assert (first.computed, first.cached) == (12, 0)
    second = run(tmp_path / "sys", prompts, tmp_path / "run", scorers)
    assert (second.computed, second.cached) == (0, 12)
    assert scorers[1].calls == 6


def test_cache_follows_content_not_paths(tmp_path):
    prompts = write_folder(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "moved")
    scorer = get_scorer("signal")
    run(tmp_path / "a", prompts, tmp_path / "run", [scorer], system="x")
    moved = run(tmp_path / "moved", prompts, tmp_path / "run", [scorer], system="y")
    assert moved.computed == 0 and moved.cached == 6
    # new content at an old path is scored anew
    sf.write(tmp_path / "a" / "prompt_0001.wav", tone(1234, 0.5).T, 16_000)
    again = run(tmp_path / "a", prompts, tmp_path / "run", [scorer], system="x")
    assert again.computed == 1


def test_identical_audio_for_two_prompts_gets_two_prompt_scores(tmp_path):
    prompts = write_folder(tmp_path / "sys", n=3, same_audio=True)
    signal, reader = get_scorer("signal"), PromptLength()
    summary = run(tmp_path / "sys", prompts, tmp_path / "run", [signal, reader])
    assert summary.computed == 1 + 3  # signal reads no prompt: one computation for one content
    with RunStore(tmp_path / "run") as store:
        scores = store.scores()
    values = scores[scores["metric"] == "value"].set_index("prompt_id")["value"]
    assert values.nunique() == 3
    level = scores[scores["metric"] == "peak"]["value"]
    assert len(level) == 3 and level.nunique() == 1


def test_failures_are_stored_with_reasons_and_retried(tmp_path):
    prompts = write_folder(tmp_path / "sys", n=4)
    flaky = PromptLength(fail_on="number 2")
    first = run(tmp_path / "sys", prompts, tmp_path / "run", [flaky])
    assert (first.computed, first.failed) == (4, 1)
    with RunStore(tmp_path / "run") as store:
        scores = store.scores().set_index("prompt_id")
    assert np.isnan(scores.loc["prompt_0002", "value"])
    assert "planted failure" in scores.loc["prompt_0002", "error"]
    healed = PromptLength()
    second = run(tmp_path / "sys", prompts, tmp_path / "run", [healed])
    assert (second.computed, second.cached, second.failed) == (1, 3, 0)


def test_unreadable_files_are_recorded_not_scored(tmp_path):
    prompts = write_folder(tmp_path / "sys", n=3)
    (tmp_path / "sys" / "prompt_0002.wav").write_bytes(b"RIFF")
    summary = run(tmp_path / "sys", prompts, tmp_path / "run", [get_scorer("signal")])
    assert (summary.load_failed, summary.computed) == (1, 2)
    with RunStore(tmp_path / "run") as store:
        clips = store.clips().set_index("prompt_id")
    assert pd.isna(clips.loc["prompt_0002", "clip_key"])
    assert "prompt_0002.wav: unreadable" in clips.loc["prompt_0002", "error"]


def test_manifest_and_artefacts(tmp_path):
    prompts = write_folder(tmp_path / "sys", n=2)
    reader = PromptLength()
    run(tmp_path / "sys", prompts, tmp_path / "run", [get_scorer("signal"), reader])
    with RunStore(tmp_path / "run") as store:
        (manifest,) = store.runs()
        assert manifest["scorer_ids"] == [get_scorer("signal").id, reader.id]
        assert {"python", "numpy", "soundfile"} <= set(manifest["versions"])
        clip = store.clips().iloc[0]
        emb = store.artefact(clip["clip_key"], clip["prompt_key"], reader.id, "emb")
    assert emb.dtype == np.float32 and emb.shape == (4,)
    expected = sf.read(tmp_path / "sys" / f"{clip['prompt_id']}.wav", dtype="float32")[0][:4]
    np.testing.assert_array_equal(emb, expected)


def test_a_prompt_id_keeps_its_content_within_a_run_dir(tmp_path):
    with RunStore(tmp_path / "run") as store:
        store.add_prompts([Prompt("p1", "a dog barks")])
        store.add_prompts([Prompt("p1", "a dog barks")])
        with pytest.raises(StoreError, match="already stored with different text"):
            store.add_prompts([Prompt("p1", "a cat meows")])


def test_a_schema_1_store_is_migrated_and_its_n_a_prefixes_become_a_status(tmp_path):
    import sqlite3

    from ttaeval.store import _SCHEMA

    old = _SCHEMA.replace(", status TEXT NOT NULL DEFAULT 'ok',\n", ",\n")  # schema 1's metric_values
    old = old.replace(" efficiency TEXT,", "")  # and schema 2's clips
    assert "status" not in old.split("metric_values")[1].split(";")[0] and "efficiency" not in old
    db = sqlite3.connect(tmp_path / "run.sqlite")
    db.executescript(old)
    db.execute("INSERT INTO meta VALUES ('schema', '1')")
    db.execute("INSERT INTO scorers VALUES ('judge:x@1', 'judge', 0, '[]')")
    db.execute("INSERT INTO clips (system, prompt_id, sample, clip_key) VALUES ('s', 'p', 0, 'k')")
    rows = [("aqa", 0.7, None), ("relation", None, "n/a: one event"), ("events", None, "model failed")]
    for metric, value, error in rows:
        db.execute("INSERT INTO metric_values VALUES ('k', '', 'judge:x@1', ?, ?, ?)", (metric, value, error))
    db.commit()
    db.close()
    with RunStore(tmp_path) as store:
        scores = store.scores().set_index("metric")
        assert dict(scores["status"]) == {"aqa": "ok", "relation": "n/a", "events": "failed"}
        assert (
            scores.loc["relation", "error"] == "one event" and scores.loc["events", "error"] == "model failed"
        )
    with sqlite3.connect(tmp_path / "run.sqlite") as db:
        assert db.execute("SELECT value FROM meta WHERE key='schema'").fetchone() == ("3",)
