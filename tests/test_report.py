"""Leaderboards (CIs, best marks, paired tests, set metrics) and reports (Markdown, HTML, PNG)."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from ttaeval.io.prompts import Prompt
from ttaeval.report.tables import leaderboard, leaderboard_markdown, paired_table
from ttaeval.runner import RunConfig, run
from ttaeval.scorers.base import MetricSpec, ScoreResult
from ttaeval.store import ClipRecord, RunStore


class _Fixed:
    """A stand-in scorer record: what the store needs to name and orient a metric."""

    id = "fixed@1"
    label = "fixed"
    uses_prompt = False
    metrics = (MetricSpec("score", True, (0.0, 1.0)),)


def _store_with(tmp_path, values: dict[str, np.ndarray]) -> RunStore:
    """A run whose systems have the given per-prompt scores (one clip a prompt)."""
    store = RunStore(tmp_path / "run")
    n = len(next(iter(values.values())))
    prompts = [Prompt(f"p{i:03d}", f"prompt {i}", "accuracy", {"event_count": 1 + i % 3}) for i in range(n)]
    store.add_prompts(prompts)
    store.register_scorers([_Fixed()])
    with store.transaction():
        for system, xs in values.items():
            for p, x in zip(prompts, xs):
                key = f"{system}-{p.id}"
                store.put_clip(ClipRecord(system, p.id, 0, key, p.content_key, None))
                store.put_result(key, "", _Fixed.id, ScoreResult({"score": float(x)}))
    return store


def test_leaderboard_ci_is_the_hand_computed_percentile_bootstrap(tmp_path):
    x = np.random.default_rng(3).normal(0.5, 0.2, 40)
    with _store_with(tmp_path, {"a": x}) as store:
        row = leaderboard(store, n_resamples=3000, seed=7).iloc[0]
    rng = np.random.default_rng(7)
    means = x[rng.integers(0, x.size, (3000, x.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    assert row["mean"] == pytest.approx(x.mean(), abs=1e-12)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((low, high), abs=1e-12)
    assert row["n"] == 40


def test_paired_test_finds_a_planted_difference_and_not_one_in_identical_systems(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.8, 60)
    values = {"base": base, "same": base.copy(), "better": base + 0.05 + rng.normal(0, 0.05, 60)}
    with _store_with(tmp_path, values) as store:
        paired = paired_table(store, "base").set_index("system")
        board = leaderboard(store)
    assert paired.loc["better", "verdict"] == "better" and paired.loc["better", "p_value"] < 0.01
    assert paired.loc["better", "ci_low"] > 0
    assert paired.loc["same", "verdict"] == "no difference" and paired.loc["same", "p_value"] == 1.0
    assert not board["best"].any()  # 'better' leads, but its CI overlaps the others'


def test_best_is_marked_only_when_its_ci_clears_the_rest(tmp_path):
    rng = np.random.default_rng(1)
    values = {
        "low": rng.uniform(0, 0.3, 50),
        "high": rng.uniform(0.7, 1.0, 50),
        "mid": rng.uniform(0.3, 0.6, 50),
    }
    with _store_with(tmp_path, values) as store:
        board = leaderboard(store).set_index("system")
        by = leaderboard(store, by="event_count")
    assert board["best"].to_dict() == {"high": True, "low": False, "mid": False}
    assert "**0.8" in leaderboard_markdown(board.reset_index())
    values["high"][::2] = np.nan  # 'high' failed on half the prompts: its mean is over other prompts
    with _store_with(tmp_path / "partial", values) as store:
        board = leaderboard(store).set_index("system")
    assert board.loc["high", "n"] == 25 and board.loc["high", "n_failed"] == 25
    assert not board["best"].any()
    assert set(by["group"]) == {"1", "2", "3"} and by.groupby("group")["n"].sum().sum() == 150


def test_null_paired_test_rejects_at_about_the_stated_rate(tmp_path):
    """Two systems drawn from the same distribution: 'no difference' in at least 90% of 40 draws."""
    rejections = 0
    for i in range(40):
        rng = np.random.default_rng(100 + i)
        with _store_with(tmp_path / str(i), {"a": rng.normal(0, 1, 30), "b": rng.normal(0, 1, 30)}) as store:
            rejections += paired_table(store, "a", n_resamples=500).iloc[0]["verdict"] != "no difference"
    assert rejections <= 4


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "run"
    systems = {
        "clean": "synth",
        "reference": "synth,seed_offset=1",
        "noise": "synth,degrade=noise,strength=3",
    }
    run(
        RunConfig(
            out=out,
            systems=systems,
            suite="synth:demo",
            scorers=["clap:mini", "signal"],
            reference="reference",
        )
    )
    return out


def test_set_metrics_rank_the_degraded_system_behind(demo_run):
    with RunStore(demo_run) as store:
        board = leaderboard(store, reference="reference").set_index(["system", "metric"])
    fad = board.xs("clap/FAD", level="metric")["mean"]
    assert fad["clean"] < fad["noise"] and "reference" not in fad.index
    assert board.loc[("clean", "clap/FAD-inf"), "n"] == 136


def test_report_writes_markdown_html_and_figures(demo_run, tmp_path):
    from ttaeval.report.report import write_report

    files = write_report(demo_run, tmp_path / "rep", baseline="noise")
    md = files.markdown.read_text()
    for heading in (
        "## Manifest",
        "## Leaderboard",
        "## By dimension",
        "## By event count",
        "## Robustness and fairness (TTA-Bench)",
        "## Figures",
    ):
        assert heading in md
    assert "Against the baseline `noise`" in md and "synth,degrade=noise,strength=3" in md
    assert {f.name for f in files.figures} == {"bars.png", "event_count.png", "distributions.png"}
    assert all(f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for f in files.figures)
    page = files.html.read_text()
    assert page.count("data:image/png;base64,") == 3 and "<script" not in page


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium missing under CI; `make test` installs Debian's chromium")
        pytest.skip("no chromium on this machine")
    return path


def _open_in_chromium(html_path) -> dict:
    """Load the page in headless Chromium: errors, tables, rendered images, visible text."""
    playwright = pytest.importorskip("playwright.sync_api")
    flags = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ]
    errors: list[str] = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=flags)
        page = browser.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("dialog", lambda d: (errors.append("dialog: " + d.message), d.dismiss()))
        page.goto(html_path.as_uri(), wait_until="load")
        info = {
            "errors": errors,
            "tables": page.locator("table").count(),
            "images": page.eval_on_selector_all("img", "els => els.map(e => e.complete && e.naturalWidth)"),
            "text": page.inner_text("body"),
            "scripts": page.locator("script").count(),
        }
        browser.close()
    return info


@pytest.mark.slow
def test_html_report_opens_in_headless_chromium(demo_run, tmp_path):
    from ttaeval.report.report import write_report

    files = write_report(demo_run, tmp_path / "rep", baseline="noise")
    info = _open_in_chromium(files.html)
    assert info["errors"] == []
    assert info["tables"] >= 6
    assert len(info["images"]) == 3 and all(w and w > 100 for w in info["images"])
    assert "Leaderboard" in info["text"] and "clap/FAD" in info["text"]


@pytest.mark.slow
def test_a_prompt_holding_markup_renders_as_text(tmp_path):
    from ttaeval.report.report import write_report

    suite = tmp_path / "suite.jsonl"
    texts = ["<script>alert('x')</script> a dog barks", "<img src=x onerror=alert(1)> rain", "a bell | rings"]
    suite.write_text("\n".join(json.dumps({"audio_id": f"a{i}", "prompt": t}) for i, t in enumerate(texts)))
    out = tmp_path / "run"
    run(RunConfig(out=out, systems={"s": "synth,answer=random"}, suite=str(suite), scorers=["signal"]))
    files = write_report(out, tmp_path / "rep")
    assert "<script>alert" not in files.html.read_text()
    markdown = files.markdown.read_text()
    assert "<script>" not in markdown and "<img" not in markdown  # Markdown viewers render raw HTML
    assert (
        "&lt;script&gt;alert('x')&lt;/script&gt; a dog barks" in markdown and "a bell \\| rings" in markdown
    )
    info = _open_in_chromium(files.html)
    assert info["errors"] == [] and info["scripts"] == 0
    assert "<script>alert('x')</script> a dog barks" in info["text"]
    assert "<img src=x onerror=alert(1)> rain" in info["text"]


def test_a_report_shows_run_commands_without_the_machines_paths(tmp_path):
    """Paths under the working folder become relative, others are shown by name; URLs are kept."""
    from ttaeval.report.report import portable_command

    command = (
        f"ttaeval run --config /home/someone/partial7.toml --out={tmp_path}/runs/x "
        "--system a=resonate:/data/ckpt/final --scorer judge:http,url=http://127.0.0.1:8000/v1"
    )
    assert portable_command(command, cwd=tmp_path) == (
        "ttaeval run --config …/partial7.toml --out=runs/x "
        "--system a=resonate:…/final --scorer judge:http,url=http://127.0.0.1:8000/v1"
    )
    assert portable_command("ttaeval run --config benchmarks/configs/demo.toml") == (
        "ttaeval run --config benchmarks/configs/demo.toml"
    )
