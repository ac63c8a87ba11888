"""HTML for leaderboards and reports: one self-contained page, every text escaped.

No script, no external stylesheet or image: figures are embedded as ``data:`` PNGs, so the page
opens anywhere (and a prompt holding ``<script>`` renders as text).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from html import escape
from pathlib import Path

import pandas as pd

from ttaeval.metrics.efficiency import EFFICIENCY_NOTE, efficiency_cells
from ttaeval.report.tables import ARROWS, fmt, leaderboard_cells

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f3f3f3; }
td.best { font-weight: bold; background: #eaf6ea; }
figure { display: inline-block; margin: 0.5em 1em 1em 0; }
figure img { max-width: 34em; }
code, pre { background: #f6f6f6; }
pre { padding: 0.5em; overflow-x: auto; }
p.note { color: #555; font-size: 0.85em; }
"""


def table(
    header: Sequence[str], rows: Sequence[Sequence[str]], marks: Sequence[Sequence[bool]] | None = None
) -> str:
    """An HTML table; ``marks`` flags cells shown as best."""
    out = ["<table>", "<tr>" + "".join(f"<th>{escape(str(h))}</th>" for h in header) + "</tr>"]
    for i, row in enumerate(rows):
        flags = marks[i] if marks else [False] * len(row)
        out.append(
            "<tr>"
            + "".join(
                f'<td class="best">{escape(str(c))}</td>' if m else f"<td>{escape(str(c))}</td>"
                for c, m in zip(row, flags)
            )
            + "</tr>"
        )
    out.append("</table>")
    return "\n".join(out)


def frame_table(frame: pd.DataFrame) -> str:
    """A DataFrame as an HTML table, floats formatted like the Markdown tables."""
    rows = [[fmt(v) if isinstance(v, float) else str(v) for v in r] for r in frame.itertuples(index=False)]
    return table([str(c) for c in frame.columns], rows)


def efficiency_html(table_: pd.DataFrame) -> str:
    """The efficiency table under its heading, with what its numbers mean."""
    return "\n".join(
        [
            "<h4>Efficiency (machine-dependent)</h4>",
            table(*efficiency_cells(table_)),
            f'<p class="note">{escape(EFFICIENCY_NOTE)}</p>',
        ]
    )


def leaderboard_html(
    board: pd.DataFrame, paired: pd.DataFrame | None = None, efficiency: pd.DataFrame | None = None
) -> str:
    """The leaderboard (one table per group when grouped), the systems' efficiency and the paired
    differences, as HTML."""
    parts = []
    grouped = "group" in board.columns
    for group, part in board.groupby("group", sort=True) if grouped else [(None, board)]:
        if grouped:
            parts.append(f"<h4>{escape(str(board.attrs.get('by', 'group')))} = {escape(str(group))}</h4>")
        parts.append(table(*leaderboard_cells(part)))
    parts.append(
        '<p class="note">Mean over prompts with a 95% percentile-bootstrap CI; highlighted: best, with a CI '
        "clear of every other system's. Set metrics (FAD, FD, KAD, KL, IS, ...): against the reference set, "
        "n = clips (pairs for KL), no CI.</p>"
    )
    if efficiency is not None and not efficiency.empty:
        parts.append(efficiency_html(efficiency))
    if paired is not None and not paired.empty:
        parts.append(f"<h4>Against the baseline {escape(str(paired['baseline'].iloc[0]))}</h4>")
        cols = [c for c in ("group", "system") if c in paired.columns]
        rows = [
            [str(r[c]) for c in cols]
            + [
                r["metric"] + ARROWS.get(r["higher_is_better"], ""),
                f"{fmt(r['diff'])} [{fmt(r['ci_low'])}, {fmt(r['ci_high'])}]",
                fmt(r["p_value"]),
                str(int(r["n"])),
                r["verdict"],
            ]
            for _, r in paired.iterrows()
        ]
        parts.append(table([*cols, "metric", "difference [CI]", "p", "n", "verdict"], rows))
    return "\n".join(parts)


def image(path: Path, alt: str) -> str:
    """A PNG embedded as a data URI, so the page needs no other file."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return (
        f'<figure><img alt="{escape(alt)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{escape(alt)}</figcaption></figure>"
    )


def page(title: str, body: str) -> str:
    """A complete, self-contained HTML document."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>\n<body>\n"
        f"<h1>{escape(title)}</h1>\n{body}\n</body></html>\n"
    )
