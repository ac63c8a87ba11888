"""``ttaeval report RUN_DIR --out DIR``: a run as Markdown + one self-contained HTML page + PNGs.

Sections: the manifest (systems and their generators, suite, protocol, scorer ids, versions, seeds,
commands), the leaderboard with CIs (and paired tests against a baseline), breakdowns per dimension
and per prompt attribute (event count, relation), TTA-Bench's robustness ratios and fairness scores
where the suite has them, and figures: bars with CI whiskers, score against event count, and score
distributions over prompts.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from html import escape
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ttaeval.metrics.stats import per_prompt_means
from ttaeval.protocols import get_protocol, run_set_metrics
from ttaeval.report import html
from ttaeval.report.markdown import md_text
from ttaeval.report.tables import (
    clip_table,
    efficiency,
    fmt,
    leaderboard,
    leaderboard_markdown,
    metric_directions,
    paired_table,
    tta_bench_table,
    tta_cell,
)
from ttaeval.store import RunStore

BREAKDOWNS = ("dimension", "event_count", "event_relation")
PLAIN = {"parse_math": False, "usetex": False}
"""Text properties of every label a figure shows: names as written (matplotlib would read ``$...$``
as math text, and fail on a name like ``a$\\foo{$b``)."""


@dataclass(frozen=True)
class Section:
    """A section a caller puts at the top of a report (a study's findings, say): Markdown and the
    same content as HTML; ``figures`` are the PNGs it shows, listed with the report's files."""

    title: str
    markdown: str
    html: str
    figures: tuple[Path, ...] = ()


@dataclass(frozen=True)
class ReportFiles:
    markdown: Path
    html: Path
    figures: tuple[Path, ...]


class _Doc:
    """Markdown and HTML written side by side."""

    def __init__(self) -> None:
        self.md: list[str] = []
        self.html: list[str] = []

    def heading(self, text: str, level: int = 2) -> None:
        self.md += ["#" * level + " " + md_text(text), ""]
        self.html.append(f"<h{level}>{escape(text)}</h{level}>")

    def para(self, text: str) -> None:
        self.md += [md_text(text), ""]
        self.html.append(f"<p>{escape(text)}</p>")

    def block(self, md: str, html_text: str) -> None:
        self.md += [md.rstrip("\n"), ""]
        self.html.append(html_text)


def write_report(
    run_dir: str | Path,
    out: str | Path,
    *,
    baseline: str | None = None,
    reference: str | None = None,
    seed: int = 0,
    title: str | None = None,
    sections: tuple[Section, ...] = (),
) -> ReportFiles:
    """Write ``report.md``, ``report.html`` and ``figures/*.png`` for a run into ``out``.

    ``sections`` come first, before the manifest (their figures should live in ``out/figures``).

    ``reference`` defaults to the reference system named in the run's config; ``baseline`` to none
    (no paired tests).
    """
    out = Path(out)
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    with RunStore(run_dir, read_only=True) as store:
        runs = store.runs()
        config = runs[-1]["config"] if runs else {}
        reference = reference or config.get("reference")
        table = clip_table(store)
        systems = sorted(set(table["system"]))
        if baseline is not None and baseline not in systems:
            raise ValueError(f"baseline {baseline!r} is not a system of the run: {', '.join(systems)}")
        set_metrics = run_set_metrics(config)
        board = leaderboard(store, reference=reference, set_metrics=set_metrics, seed=seed)
        paired = paired_table(store, baseline, seed=seed) if baseline else None
        speed = efficiency(store, seed=seed)
        directions = metric_directions(store)
        groups = {by: _groups_or_none(store, by) for by in BREAKDOWNS}
        breakdowns = {
            by: leaderboard(store, by=by, seed=seed)
            for by, g in groups.items()
            if g is not None and g.nunique() > 1
        }
        tta = tta_bench_table(store)
        doc = _Doc()
        for section in sections:
            doc.heading(section.title)
            doc.block(section.markdown, section.html)
        _manifest(doc, store, runs, config)
        doc.heading("Leaderboard")
        doc.block(
            leaderboard_markdown(board, paired, efficiency=speed),
            html.leaderboard_html(board, paired, efficiency=speed),
        )
        figures = []
        scored = [m for m, d in directions.items() if d is not None and m in table.columns]
        if scored:
            figures.append(_bars(board, scored, fig_dir / "bars.png"))
        for by, part in breakdowns.items():
            doc.heading(f"By {by.replace('_', ' ')}")
            doc.block(leaderboard_markdown(part), html.leaderboard_html(part))
        if "event_count" in breakdowns and scored:
            figures.append(_by_event_count(breakdowns["event_count"], scored, fig_dir / "event_count.png"))
        special = tta[tta["section"].isin(["robustness", "fairness"])] if not tta.empty else tta
        if not special.empty:
            doc.heading("Robustness and fairness (TTA-Bench)")
            cells = special.assign(cell=special.apply(tta_cell, axis=1))
            wide = cells.pivot_table(
                index=["section", "group", "metric"], columns="system", values="cell", aggfunc="first"
            ).reset_index()
            doc.block(frame_markdown(wide), html.frame_table(wide))
            doc.para(
                "robustness: mean ratio of a perturbed prompt's score to its source prompt's "
                "(1 = unaffected), for scores where higher is better; pairs whose source scores near or "
                "below 0 are left out (n/a when most do); fairness: FS = mean over group pairs of "
                "100·|a−b|/max(a,b) (lower = fairer)."
            )
        if scored:
            figures.append(_distributions(table, scored, fig_dir / "distributions.png"))
            _hardest(doc, store, table, scored[0], directions[scored[0]])
        doc.heading("Figures")
        doc.block(
            "\n".join(f"![{f.stem}](figures/{f.name})" for f in figures),
            "\n".join(html.image(f, f.stem.replace("_", " ")) for f in figures),
        )
    title = title or f"ttaeval report: {Path(run_dir).name}"
    md_path, html_path = out / "report.md", out / "report.html"
    md_path.write_text(f"# {md_text(title)}\n\n" + "\n".join(doc.md), encoding="utf-8")
    html_path.write_text(html.page(title, "\n".join(doc.html)), encoding="utf-8")
    shown_above = [f for section in sections for f in section.figures]
    return ReportFiles(md_path, html_path, (*shown_above, *figures))


def _hardest(doc: _Doc, store: RunStore, table: pd.DataFrame, metric: str, higher: bool, k: int = 10) -> None:
    """The k prompts every system found hardest on ``metric`` (worst mean over systems), with their text."""
    per = table.groupby(["prompt_id", "system"])[metric].mean().unstack("system")
    worst = per.mean(axis=1).sort_values(ascending=higher).head(k)
    text = store.prompts().set_index("prompt_id")["text"]
    rows = [[pid, text.get(pid, ""), *(fmt(per.at[pid, s]) for s in per.columns)] for pid in worst.index]
    header = ["prompt", "text", *per.columns]
    doc.heading(f"Hardest prompts by {metric}")
    doc.block(_md_table(header, rows), html.table(header, rows))


def _groups_or_none(store: RunStore, by: str) -> pd.Series | None:
    try:
        return store.prompt_groups(by)
    except ValueError:
        return None


def _manifest(doc: _Doc, store: RunStore, runs: list[dict], config: dict) -> None:
    doc.heading("Manifest")
    systems = store.systems()
    spec = dict(zip(systems["system"], systems["spec"]))
    weights = {s: weights_cited(json.loads(i)) for s, i in zip(systems["system"], systems["identity"])}
    cfg_systems = config.get("systems") or {}
    names = sorted(set(store.clips()["system"]))
    rows = [[s, spec.get(s) or cfg_systems.get(s, "(scored folder)"), weights.get(s) or "–"] for s in names]
    header = ["system", "generator", "weights (digest)"]
    doc.block(_md_table(header, rows), html.table(header, rows))
    facts = [
        ["suite", str(config.get("suite", "–"))],
        ["prompts", str(len(store.prompts()))],
        ["protocol", _protocol_id(config.get("protocol"))],
        ["set metrics", ", ".join(run_set_metrics(config) or []) or "–"],
        ["samples per prompt", str(config.get("samples_per_prompt", 1))],
        ["run seed", str(config.get("seed", "–"))],
        [
            "generation",
            ", ".join(f"{k}={config[k]}" for k in ("duration", "steps", "guidance") if config.get(k))
            or "generators' defaults",
        ],
        ["reference system", str(config.get("reference") or "–")],
        ["ttaeval revision", str(runs[-1].get("git_revision") if runs else "–")],
        ["versions", ", ".join(f"{k} {v}" for k, v in (runs[-1]["versions"] if runs else {}).items())],
    ]
    doc.block(_md_table(["", ""], facts), html.table(["", ""], facts))
    scorers = [[r["label"], r["scorer_id"]] for _, r in store.scorers().iterrows()]
    doc.block(_md_table(["scorer", "id"], scorers), html.table(["scorer", "id"], scorers))
    commands = [[str(r["id"]), r["started"], portable_command(r["command"])] for r in runs]
    doc.block(
        _md_table(["run", "started", "command"], commands),
        html.table(["run", "started", "command"], commands),
    )


def portable_command(command: str, cwd: Path | None = None) -> str:
    """A run's command as a shared report shows it: absolute paths under ``cwd`` (the working
    folder) relative to it, others by their name only, so no report carries a machine's paths."""
    root = (cwd or Path.cwd()).resolve()

    def shown(match: re.Match) -> str:
        path = Path(match.group(0))
        return path.relative_to(root).as_posix() if path.is_relative_to(root) else f"…/{path.name}"

    return re.sub(r"(?<![\w.~/])/(?!/)[^\s=,'\"]+", shown, command)


DIGEST_KEYS = ("checkpoint", "pipeline")
"""Where a generator's identity holds the digest of its weights (``resonate``/``tangoflux``,
``diffusers``): what a report cites, so a test can tell when shipped weights no longer match."""


def weights_cited(identity: dict) -> str:
    """The weights digest(s) in a system's identity, as the manifest prints them (``KEY=DIGEST``)."""
    return ", ".join(f"{k}={identity[k]}" for k in DIGEST_KEYS if identity.get(k))


def _protocol_id(name: object) -> str:
    """The protocol with its version (``audioldm-eval@2``), as the run named it."""
    if not name:
        return "–"
    try:
        return get_protocol(str(name).split("@", 1)[0]).id
    except KeyError:
        return str(name)


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table whose cells are text (``md_text``): markup in a prompt is escaped (Markdown
    renders raw HTML), ``|`` cannot split a cell, a newline cannot end a row."""
    lines = ["| " + " | ".join(map(md_text, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(md_text, r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def frame_markdown(frame: pd.DataFrame) -> str:
    """A DataFrame as a Markdown table (floats formatted like the leaderboard's, markup escaped)."""
    rows = [[fmt(v) if isinstance(v, float) else str(v) for v in r] for r in frame.itertuples(index=False)]
    return _md_table([str(c) for c in frame.columns], rows)


def _grid(n: int) -> tuple[Figure, np.ndarray]:
    """A figure of n panels, three a row (matplotlib's object API: no global pyplot state)."""
    cols = min(3, n)
    rows = -(-n // cols)
    fig = Figure(figsize=(4.2 * cols, 3.2 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes.flat


def _bars(board: pd.DataFrame, metrics: list[str], path: Path) -> Path:
    """One panel per metric: a bar per system, whiskers at the CI."""
    fig, axes = _grid(len(metrics))
    for ax, m in zip(axes, metrics):
        part = board[board["metric"] == m].sort_values("system")
        mean = part["mean"].to_numpy(float)
        err = np.vstack([mean - part["ci_low"].to_numpy(float), part["ci_high"].to_numpy(float) - mean])
        ax.bar(range(len(part)), mean, yerr=np.nan_to_num(err), capsize=3, color="#5b8db8")
        ax.set_xticks(range(len(part)), part["system"], rotation=30, ha="right", fontsize=8, **PLAIN)
        arrow = {True: " ↑", False: " ↓"}.get(part["higher_is_better"].iloc[0], "")
        ax.set_title(m + arrow, fontsize=9, **PLAIN)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path


def _by_event_count(board: pd.DataFrame, metrics: list[str], path: Path) -> Path:
    """One panel per metric: score against the prompt's event count, a line per system, CI bands."""
    fig, axes = _grid(len(metrics))
    for ax, m in zip(axes, metrics):
        part = board[(board["metric"] == m) & (board["group"] != "–")]
        for system, rows in part.groupby("system", sort=True):
            rows = (
                rows.assign(k=pd.to_numeric(rows["group"], errors="coerce"))
                .dropna(subset=["k"])
                .sort_values("k")
            )
            ax.plot(rows["k"], rows["mean"], marker="o", label=system)
            ax.fill_between(
                rows["k"], rows["ci_low"].astype(float), rows["ci_high"].astype(float), alpha=0.15
            )
        ax.set_xlabel("events in the prompt", fontsize=8, **PLAIN)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(m, fontsize=9, **PLAIN)
    for text in axes[0].legend(fontsize=7).get_texts():
        text.update(PLAIN)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path


def _distributions(table: pd.DataFrame, metrics: list[str], path: Path) -> Path:
    """One panel per metric: the distribution over prompts of each system's per-prompt score."""
    fig, axes = _grid(len(metrics))
    systems = sorted(set(table["system"]))
    for ax, m in zip(axes, metrics):
        data = []
        for s in systems:
            part = table[table["system"] == s]
            values = per_prompt_means(part[m], part["prompt_id"]).to_numpy()
            data.append(values if values.size else np.array([np.nan]))
        ax.boxplot(data, showfliers=True)
        ax.set_xticks(range(1, len(systems) + 1), systems, rotation=30, ha="right", fontsize=8, **PLAIN)
        ax.set_title(m, fontsize=9, **PLAIN)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path


__all__ = ["ReportFiles", "write_report"]
