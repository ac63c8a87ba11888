"""Names a user chose (systems, groups, metrics, titles) reach Markdown and figures as plain text:
markup escaped, ``|`` unable to split a table cell, ``$`` never read as math."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from ttaeval.io.prompts import Prompt
from ttaeval.report.tables import (
    correlations_markdown,
    leaderboard,
    leaderboard_markdown,
    paired_markdown,
    paired_table,
    tta_bench_markdown,
)
from ttaeval.scorers.base import MetricSpec, ScoreResult
from ttaeval.store import ClipRecord, RunStore

SCRIPT = "<script>alert(1)</script>"
PIPE = "a|b"
STARS = "*x* _y_ [l](http://e) `c` ~~s~~ & \\"
SYSTEMS = (SCRIPT, PIPE, STARS)
CELL_SPLIT = re.compile(r"(?<!\\)\|")


class _Odd:
    """A stand-in scorer record whose label and metric hold Markdown specials."""

    id = "odd@1"
    label = "la<b>el"
    uses_prompt = False
    metrics = (MetricSpec("sc|ore", True, (0.0, 1.0)),)


def _store(tmp_path, systems=SYSTEMS, dimensions=("<i>d</i>", "x|y")) -> RunStore:
    store = RunStore(tmp_path / "run")
    prompts = [Prompt(f"p{i:02d}", f"prompt {i}", dimensions[i % len(dimensions)], {}) for i in range(12)]
    store.add_prompts(prompts)
    store.register_scorers([_Odd()])
    rng = np.random.default_rng(0)
    with store.transaction():
        for k, system in enumerate(systems):
            for p in prompts:
                key = f"{k}-{p.id}"
                store.put_clip(ClipRecord(system, p.id, 0, key, p.content_key, None))
                store.put_result(key, "", _Odd.id, ScoreResult({"sc|ore": float(rng.uniform(0, 1))}))
    return store


def _tables(markdown: str) -> list[list[list[str]]]:
    """Every table of a Markdown text as rows of cells (split on unescaped pipes)."""
    tables, current = [], None
    for line in markdown.splitlines():
        if line.startswith("|"):
            if current is None:
                current = []
                tables.append(current)
            current.append([c.strip() for c in CELL_SPLIT.split(line)[1:-1]])
        else:
            current = None
    return tables


def _assert_text_only(markdown: str) -> None:
    assert not re.search(r"<[A-Za-z/!?]", markdown), markdown  # no raw HTML (our own 'p < 0.05' is text)
    for table in _tables(markdown):
        assert len({len(row) for row in table}) == 1, table  # no name added or removed a column


def test_leaderboard_markdown_escapes_names_groups_and_metrics(tmp_path):
    with _store(tmp_path) as store:
        board = leaderboard(store, n_resamples=200)
        by = leaderboard(store, by="dimension", n_resamples=200)
    for md in (leaderboard_markdown(board), leaderboard_markdown(by)):
        _assert_text_only(md)
        systems = [row[0] for table in _tables(md) for row in table[2:]]
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in systems and "a\\|b" in systems
        assert r"\*x\* \_y\_ [l]\(http://e) \`c\` \~\~s\~\~ &amp; \\" in systems
        assert "la&lt;b&gt;el/sc\\|ore ↑" in _tables(md)[0][0]
    grouped = leaderboard_markdown(by)
    assert "### dimension = &lt;i&gt;d&lt;/i&gt;" in grouped and "### dimension = x\\|y" in grouped


def test_paired_markdown_escapes_systems_and_fences_the_baseline(tmp_path):
    with _store(tmp_path, systems=(PIPE, SCRIPT, "a`b``c")) as store:
        md = paired_markdown(paired_table(store, "a`b``c", n_resamples=200))
    _assert_text_only(md)
    assert "#### Against the baseline ```a`b``c``` (system" in md  # a code span no backtick ends early
    assert {row[0] for row in _tables(md)[0][2:]} == {"a\\|b", "&lt;script&gt;alert(1)&lt;/script&gt;"}


def test_code_spans_hold_any_name():
    from ttaeval.report.markdown import md_code

    assert md_code("noise") == "`noise`"
    assert md_code("`x`") == "`` `x` ``" and md_code("a\nb") == "`a b`"


def test_tta_bench_and_correlation_tables_escape_their_names():
    summary = pd.DataFrame(
        {
            "metric": ["m|1", "m|1"],
            "system": [SCRIPT, PIPE],
            "section": ["<dimension>", "<dimension>"],
            "group": ["g|h", "g|h"],
            "value": [0.5, 0.25],
            "n": [3, 3],
        }
    )
    md = tta_bench_markdown(summary)
    _assert_text_only(md)
    assert "### m\\|1" in md
    assert _tables(md)[0][0] == ["section", "group", "&lt;script&gt;alert(1)&lt;/script&gt;", "a\\|b"]
    row = {"metric": "x|y", "rating": "<OVL>", "n": 4}
    for k in ("LCC", "SRCC", "KTAU"):
        row.update({k: 0.5, k + "_low": 0.1, k + "_high": 0.9})
    md = correlations_markdown(pd.DataFrame([row]))
    _assert_text_only(md)
    assert _tables(md)[0][2][:3] == ["x\\|y", "&lt;OVL&gt;", "4"]


def test_report_markdown_escapes_systems_groups_metrics_and_title(tmp_path):
    from ttaeval.report.report import write_report

    with _store(tmp_path):
        pass
    files = write_report(tmp_path / "run", tmp_path / "rep", baseline=PIPE, title="<b>run</b> | *one*")
    md = files.markdown.read_text()
    _assert_text_only(md)
    assert md.startswith("# &lt;b&gt;run&lt;/b&gt; \\| \\*one\\*\n")
    assert "## Hardest prompts by la&lt;b&gt;el/sc\\|ore" in md
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in md


@pytest.mark.parametrize("name", ["a$\\foo{$b", "$x$", "\\$\\frac{1}{2}$"])
def test_report_figures_show_math_like_names_as_plain_text(tmp_path, monkeypatch, name):
    """matplotlib reads ``$...$`` as math text: a system named ``a$\\foo{$b`` failed the report."""
    from matplotlib.figure import Figure
    from matplotlib.text import Text

    from ttaeval.report.report import write_report

    drawn: list[Text] = []
    save = Figure.savefig

    def savefig(fig, *args, **kwargs):
        save(fig, *args, **kwargs)
        drawn.extend(t for t in fig.findobj(Text) if t.get_text() and t.get_visible())

    monkeypatch.setattr(Figure, "savefig", savefig)
    with _store(tmp_path, systems=(name, "plain"), dimensions=("d$1$", "e")):
        pass
    files = write_report(tmp_path / "run", tmp_path / "rep")
    assert {f.name for f in files.figures} == {"bars.png", "distributions.png"}
    shown = [t for t in drawn if name in t.get_text() or "$" in t.get_text()]
    assert shown and all(not t.get_parse_math() and not t.get_usetex() for t in shown)
