"""TTA-Bench's efficiency dimension: every generated clip's time, real-time factor, peak memory,
batch size and device, summarised per system in the leaderboard and the report; n/a for folders."""

from __future__ import annotations

import gc
import json
import math
import mmap
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from ttaeval.generators import GENERATORS, Generator
from ttaeval.io.audio import Clip
from ttaeval.metrics.efficiency import CUDA_PEAK, RSS_GROWTH, efficiency_table, measure
from ttaeval.report.tables import efficiency, leaderboard, leaderboard_markdown
from ttaeval.runner import RunConfig, run
from ttaeval.store import RunStore

SLOW_LOAD = 0.6


@dataclass
class _Timed(Generator):
    """Loads slowly, then takes ``per_clip`` seconds a clip: what the runner times is generation."""

    per_clip: float = 0.05
    seconds: float = 2.0
    kind = "timed-test"

    def __post_init__(self) -> None:
        self.loaded = False

    def load(self) -> None:
        if not self.loaded:
            time.sleep(SLOW_LOAD)
            self.loaded = True

    def generate(self, prompts, seeds, settings, samples=None):
        assert self.loaded, "the runner loads the model before it times generation"
        time.sleep(self.per_clip * len(prompts))
        n = int(self.seconds * 16000)
        return [Clip(np.full((1, n), 0.1, np.float32), 16000, prompt=p) for p in prompts]


@pytest.fixture(scope="module")
def timed_run(tmp_path_factory):
    GENERATORS.register("timed-test", f"{__name__}:_Timed")
    out = tmp_path_factory.mktemp("eff") / "run"
    config = RunConfig(
        out=out,
        systems={"timed": "timed-test"},
        suite="synth:demo",
        scorers=["signal"],
        limit=6,
        batch_size=3,
    )
    run(config)
    files = RunConfig(
        out=out, systems={"files": f"folder:{out / 'audio' / 'timed'}"}, suite="synth:demo",
        scorers=["signal"], limit=6, batch_size=3,
    )  # fmt: skip
    run(files)
    return out


def test_each_generated_clip_records_time_rtf_memory_batch_and_device_and_loading_is_not_counted(timed_run):
    with RunStore(timed_run) as store:
        clips = store.clips().set_index("system")
    records = [json.loads(e) for e in clips.loc["timed", "efficiency"]]
    assert len(records) == 6
    for rec in records:
        assert rec["batch_size"] == 3 and rec["device"] == "cpu"
        assert 0.05 <= rec["seconds"] < 0.05 + SLOW_LOAD / 3  # the call's time shared by its 3 clips
        assert rec["rtf"] == pytest.approx(rec["seconds"] / 2.0)
        assert rec["memory_kind"] == RSS_GROWTH and rec["peak_memory"] >= 0
    assert clips.loc["files", "efficiency"].isna().all()  # read, not generated: no numbers


def test_the_leaderboard_shows_median_rtf_with_a_ci_clips_per_second_memory_and_n_a_for_a_folder(timed_run):
    with RunStore(timed_run) as store:
        table = efficiency(store).set_index("system")
        text = leaderboard_markdown(leaderboard(store), efficiency=efficiency(store))
    timed = table.loc["timed"]
    assert timed["n_clips"] == 6 and timed["device"] == "cpu" and timed["batch_size"] == 3
    assert timed["rtf_low"] <= timed["rtf_median"] <= timed["rtf_high"]
    assert 0.025 <= timed["rtf_median"] < 0.2
    assert 3 < timed["clips_per_second"] <= 20  # 0.05 s a clip and a little overhead
    assert table.loc["files", "n_clips"] == 0 and math.isnan(table.loc["files", "rtf_median"])
    section = text[text.index("#### Efficiency (machine-dependent)") :]
    assert "| system | RTF median [95% CI] | clips/s | peak memory | device | batch |" in section
    assert "| files | n/a | n/a | n/a | n/a | n/a |" in section
    timed_row = next(line for line in section.splitlines() if line.startswith("| timed |"))
    assert "MiB (peak RSS growth)" in timed_row and "| cpu | 3 |" in timed_row
    assert "Machine-dependent" in section


def test_the_cli_leaderboard_and_report_carry_the_efficiency_table(timed_run, tmp_path):
    from typer.testing import CliRunner

    from ttaeval.cli import app

    got = CliRunner().invoke(app, ["leaderboard", str(timed_run), "--format", "json"])
    assert got.exit_code == 0, got.output
    frames = json.loads(got.output)
    rows = {r["system"]: r for r in frames["efficiency"]}
    assert rows["timed"]["n_clips"] == 6 and rows["files"]["rtf_median"] is None
    got = CliRunner().invoke(app, ["report", str(timed_run), "--out", str(tmp_path / "rep")])
    assert got.exit_code == 0, got.output
    md = (tmp_path / "rep" / "report.md").read_text()
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "#### Efficiency (machine-dependent)" in md and "| files | n/a |" in md
    assert "<h4>Efficiency (machine-dependent)</h4>" in html and "peak RSS growth" in html


def test_the_median_rtf_and_its_ci_are_computed_from_the_clips():
    rtf = [0.1, 0.2, 0.3, 0.4, 10.0]  # one slow outlier: the median shrugs it off
    clips = pd.DataFrame(
        {
            "system": ["a"] * 5 + ["b"],
            "efficiency": [
                json.dumps(
                    {"seconds": r * 4, "rtf": r, "peak_memory": 2**20 * (i + 1), "memory_kind": CUDA_PEAK,
                     "batch_size": 5, "device": "cuda:0"}
                )
                for i, r in enumerate(rtf)
            ] + [None],
        }
    )  # fmt: skip
    table = efficiency_table(clips, n_resamples=2000).set_index("system")
    a = table.loc["a"]
    assert a["rtf_median"] == pytest.approx(0.3)
    assert a["rtf_low"] <= 0.3 <= a["rtf_high"] and a["rtf_high"] <= 10.0
    assert a["clips_per_second"] == pytest.approx(5 / (4 * sum(rtf)))
    assert a["peak_memory_mib"] == pytest.approx(5.0) and a["memory_kind"] == CUDA_PEAK
    assert table.loc["b", "n_clips"] == 0 and math.isnan(table.loc["b", "peak_memory_mib"])


def test_cpu_peak_memory_is_the_growth_during_the_call():
    gc.collect()  # garbage of earlier tests freed inside the block would hide the growth
    gc.disable()
    try:
        with measure("cpu") as m:  # 64 MiB of new pages, touched, held for 50 ms
            block = mmap.mmap(-1, 64 * 2**20)
            for offset in range(0, len(block), 4096):
                block[offset] = 1
            time.sleep(0.05)
            block.close()
    finally:
        gc.enable()
    assert m.memory_kind == RSS_GROWTH and m.seconds > 0
    assert m.peak_memory is not None and m.peak_memory >= 48 * 2**20
    with measure("cpu") as m2:
        pass
    assert m2.peak_memory < 16 * 2**20  # the previous call's peak is not this one's


def test_measuring_leaves_the_process_lifetime_peak_alone():
    """Tools that read ru_maxrss (benchmarks/bench_runner.py) must still see the run's true peak."""
    import resource

    block = mmap.mmap(-1, 96 * 2**20)
    for offset in range(0, len(block), 4096):
        block[offset] = 1
    block.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with measure("cpu"):
        time.sleep(0.02)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >= peak
