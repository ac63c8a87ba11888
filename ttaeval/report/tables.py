"""Per-clip exports and leaderboards (mean and bootstrap CI per system and metric)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ttaeval.stats import DEFAULT_RESAMPLES, bootstrap_ci, per_prompt_means
from ttaeval.store import RunStore

KEY_COLUMNS = ["system", "prompt_id", "sample"]


def metric_directions(store: RunStore) -> dict[str, bool | None]:
    """Column name ``label/metric`` -> higher_is_better, for every scorer in the store."""
    out = {}
    for _, row in store.scorers().iterrows():
        for m in row["metrics"]:
            out[f"{row['label']}/{m['name']}"] = m["higher_is_better"]
    return out


def clip_table(store: RunStore) -> pd.DataFrame:
    """One row per clip: system, prompt_id, sample, source, warnings, error, then every metric.

    ``error`` joins the clip's load error and every scorer's reason for a missing value; a metric
    is NaN exactly where its reason is given.
    """
    clips = store.clips()
    base = clips[[*KEY_COLUMNS, "source", "clip_key", "warnings", "error"]].copy()
    scores = store.scores()
    if scores.empty:
        return base
    scores["column"] = scores["scorer"] + "/" + scores["metric"]
    wide = scores.pivot_table(
        index=KEY_COLUMNS, columns="column", values="value", aggfunc="first", dropna=False
    )
    reasons = (
        scores.dropna(subset=["error"])
        .assign(reason=lambda f: f["scorer"] + ": " + f["error"])
        .groupby(KEY_COLUMNS)["reason"]
        .agg(lambda r: "; ".join(dict.fromkeys(r)))
    )
    table = base.merge(wide.reset_index(), on=KEY_COLUMNS, how="left")
    table = table.merge(reasons.rename("score_errors").reset_index(), on=KEY_COLUMNS, how="left")
    errs = table[["error", "score_errors"]].apply(
        lambda r: "; ".join(str(v) for v in r if isinstance(v, str) and v) or None, axis=1
    )
    table["error"] = errs
    return table.drop(columns=["score_errors"])


def leaderboard(
    store: RunStore, *, level: float = 0.95, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> pd.DataFrame:
    """Long table: one row per system and metric with mean, CI over prompts, N and failures.

    Samples of one prompt are averaged first; the CI is a seeded percentile bootstrap over prompts.
    ``n_failed`` counts clips with no value for the metric (unreadable files included): they are
    left out of the mean, never counted as 0.
    """
    table = clip_table(store)
    directions = metric_directions(store)
    rows = []
    for system, group in table.groupby("system", sort=True):
        for column in [c for c in directions if c in table.columns]:
            per_prompt = per_prompt_means(group[column], group["prompt_id"])
            est = bootstrap_ci(per_prompt.to_numpy(), level=level, n_resamples=n_resamples, seed=seed)
            rows.append(
                {
                    "system": system,
                    "metric": column,
                    "higher_is_better": directions[column],
                    **est.to_dict(),
                    "n_clips": len(group),
                    "n_failed": int(group[column].isna().sum()),
                }
            )
    return pd.DataFrame(
        rows,
        columns=[
            "system",
            "metric",
            "higher_is_better",
            "mean",
            "ci_low",
            "ci_high",
            "n",
            "n_clips",
            "n_failed",
        ],
    )


def _fmt(x: float) -> str:
    if not math.isfinite(x):
        return "–"
    mag = abs(x)
    return f"{x:.3g}" if mag >= 1000 or (0 < mag < 0.001) else f"{x:.3f}"


def leaderboard_markdown(board: pd.DataFrame, level: float = 0.95) -> str:
    """Systems as rows, metrics as columns: ``mean [low, high]`` with ↑/↓ in the header."""
    if board.empty:
        return "_no scores_\n"
    arrows = {True: " ↑", False: " ↓"}
    metrics = list(dict.fromkeys(board["metric"]))
    header = ["system", "clips", "failed"] + [
        m + arrows.get(board.loc[board["metric"] == m, "higher_is_better"].iloc[0], "") for m in metrics
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for system, group in board.groupby("system", sort=True):
        cells = {r["metric"]: r for _, r in group.iterrows()}
        failed = int(np.max([r["n_failed"] for r in cells.values()]))
        row = [str(system), str(int(group["n_clips"].iloc[0])), str(failed)]
        for m in metrics:
            r = cells.get(m)
            row.append("–" if r is None else f"{_fmt(r['mean'])} [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]")
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append(
        f"Mean over prompts with a {int(level * 100)}% percentile-bootstrap CI; "
        "'failed' is the most clips any metric could not score (left out, never counted as 0)."
    )
    return "\n".join(lines) + "\n"


def tta_bench_table(store: RunStore) -> pd.DataFrame:
    """TTA-Bench's per-dimension, per-attribute, robustness and fairness tables for every scorer
    metric in the store (``ttaeval.protocols.tta_bench_summary``)."""
    import json

    from ttaeval.prompts import Prompt
    from ttaeval.protocols import tta_bench_summary

    table = clip_table(store)
    metrics = [c for c in table.columns if "/" in c]
    prompts = [
        Prompt(r["prompt_id"], r["text"], r["dimension"], json.loads(r["attributes"]))
        for _, r in store.prompts().iterrows()
    ]
    return tta_bench_summary(table, prompts, metrics)


def tta_bench_markdown(summary: pd.DataFrame) -> str:
    """One Markdown table per metric: sections and groups as rows, systems as columns."""
    if summary.empty:
        return "_no scores_\n"
    out = []
    for metric, part in summary.groupby("metric", sort=False):
        systems = sorted(part["system"].unique())
        out += [f"### {metric}", "", "| section | group | " + " | ".join(systems) + " |"]
        out.append("|" + "---|" * (2 + len(systems)))
        for (section, group), rows in part.groupby(["section", "group"], sort=False):
            cells = {r["system"]: f"{_fmt(r['value'])} (n={r['n']})" for _, r in rows.iterrows()}
            out.append(f"| {section} | {group} | " + " | ".join(cells.get(s, "–") for s in systems) + " |")
        out.append("")
    out.append(
        "dimension/attribute rows: mean over prompts; robustness: mean ratio perturbed/source "
        "(1 = unaffected); fairness: FS = mean over group pairs of 100·|a−b|/max(a,b) (lower = fairer)."
    )
    return "\n".join(out) + "\n"


def human_correlations(
    store: RunStore, ratings: pd.DataFrame, metrics: list[str] | None = None, *, seed: int = 0
) -> pd.DataFrame:
    """LCC, SRCC and KTAU (with bootstrap CIs) of per-clip metrics against human ratings.

    ``ratings`` has ``prompt_id``, optionally ``system`` and ``sample``, and one numeric column per
    rating (e.g. RELATE's REL and OVL). Clips are matched on the key columns the ratings have; without
    ``sample`` a prompt's samples are averaged first; without ``system`` the run must hold one system.
    One row per metric and rating: ``n`` pairs, each coefficient with ``_low``/``_high``.
    """
    from ttaeval.stats import CORRELATIONS, correlation

    if "prompt_id" not in ratings.columns:
        raise ValueError(
            f"the ratings need a prompt_id column; they have {', '.join(map(str, ratings.columns))}"
        )
    keys = [k for k in KEY_COLUMNS if k in ratings.columns]
    rating_cols = [c for c in ratings.columns if c not in keys and pd.api.types.is_numeric_dtype(ratings[c])]
    if not rating_cols:
        raise ValueError("the ratings have no numeric rating column besides the keys")
    table = clip_table(store)
    metric_cols = metrics or [c for c in table.columns if "/" in c]
    missing = [m for m in metric_cols if m not in table.columns]
    if missing:
        raise ValueError(
            f"no metric {missing[0]!r} in the run; it has {', '.join(c for c in table.columns if '/' in c)}"
        )
    if "system" not in keys and table["system"].nunique() > 1:
        systems = ", ".join(sorted(table["system"].unique()))
        raise ValueError(f"the run holds systems {systems}: add a system column to the ratings")
    scores = table.groupby(keys, as_index=False)[metric_cols].mean()
    joined = scores.merge(ratings[[*keys, *rating_cols]], on=keys, how="inner")
    rows = []
    for metric in metric_cols:
        for rating in rating_cols:
            row: dict[str, object] = {"metric": metric, "rating": rating}
            for kind in CORRELATIONS:
                est = correlation(joined[metric].to_numpy(), joined[rating].to_numpy(), kind, seed=seed)
                row.update({"n": est.n, kind: est.mean, f"{kind}_low": est.low, f"{kind}_high": est.high})
            rows.append(row)
    return pd.DataFrame(rows)


def correlations_markdown(table: pd.DataFrame) -> str:
    """``value [low, high]`` per coefficient, one row per metric and rating."""
    lines = ["| metric | rating | n | LCC | SRCC | KTAU |", "|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        cells = [
            f"{_fmt(r[k])} [{_fmt(r[k + '_low'])}, {_fmt(r[k + '_high'])}]" for k in ("LCC", "SRCC", "KTAU")
        ]
        lines.append(f"| {r['metric']} | {r['rating']} | {r['n']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Pearson (LCC), Spearman (SRCC), Kendall tau-b (KTAU); 95% percentile bootstrap over pairs.",
    ]
    return "\n".join(lines) + "\n"
