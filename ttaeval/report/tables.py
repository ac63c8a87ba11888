"""Per-clip exports and leaderboards (mean and bootstrap CI per system and metric)."""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Sequence

import numpy as np
import pandas as pd

from ttaeval.metrics.efficiency import EFFICIENCY_NOTE, efficiency_cells, efficiency_table
from ttaeval.metrics.set_metrics import COLUMNS as SET_METRIC_COLUMNS
from ttaeval.metrics.set_metrics import evaluate_set_metrics
from ttaeval.metrics.stats import DEFAULT_RESAMPLES, bootstrap_ci, paired_difference, per_prompt_means
from ttaeval.report.markdown import md_code, md_text
from ttaeval.store import RunStore

KEY_COLUMNS = ["system", "prompt_id", "sample"]


def metric_directions(store: RunStore) -> dict[str, bool | None]:
    """Column name ``label/metric`` -> higher_is_better, for every scorer in the store."""
    out = {}
    for _, row in store.scorers().iterrows():
        for m in row["metrics"]:
            out[f"{row['label']}/{m['name']}"] = m["higher_is_better"]
    return out


def not_applicable(store: RunStore) -> set[tuple[str, str, int, str]]:
    """(system, prompt_id, sample, column) of every value that is NaN because its metric does not
    apply to the clip (status ``n/a``): left out of means, but not counted as failures."""
    scores = store.scores()
    na = scores[scores["status"] == "n/a"]
    return {
        (r.system, r.prompt_id, int(r.sample), f"{r.scorer}/{r.metric}")
        for r in na[["system", "prompt_id", "sample", "scorer", "metric"]].itertuples(index=False)
    }


def clip_table(store: RunStore) -> pd.DataFrame:
    """One row per clip: system, prompt_id, sample, source, clip_key, settings (generation settings and
    seed, JSON, for generated clips), warnings, error, then every metric.

    ``error`` joins the clip's load error and every scorer's reason for a missing value; a metric
    is NaN exactly where its reason is given.
    """
    clips = store.clips()
    base = clips[[*KEY_COLUMNS, "source", "clip_key", "settings", "warnings", "error"]].copy()
    scores = store.scores()
    if scores.empty:
        return base
    scores["column"] = scores["scorer"] + "/" + scores["metric"]
    wide = scores.pivot_table(
        index=KEY_COLUMNS, columns="column", values="value", aggfunc="first", dropna=False
    )
    reasons = (
        scores.dropna(subset=["error"])
        .assign(
            reason=lambda f: (  # every part str: pandas 3.0 cannot add str and object columns
                f["scorer"].astype(str)
                + ": "
                + f["status"].map({"n/a": "n/a: "}).fillna("").astype(str)
                + f["error"].astype(str)
            )
        )
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
    store: RunStore,
    *,
    by: str | None = None,
    reference: str | None = None,
    set_metrics: Sequence[str] | None = None,
    level: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> pd.DataFrame:
    """Long table: one row per (group,) system and metric with mean, CI over prompts, N and failures.

    Samples of one prompt are averaged first; the CI is a seeded percentile bootstrap over prompts.
    ``n_failed`` counts clips with no value for the metric (unreadable files included): they are
    left out of the mean, never counted as 0; values that do not apply (``n/a``) are not failures.
    ``best`` marks, per (group, metric) with a direction, the best system only when its CI lies
    wholly beyond every other system's CI and every system has values on the same number of prompts
    (means over different prompt sets are not comparable: a system that failed on hard prompts
    would look better).

    With ``reference`` (a system of the run), set metrics are added (``evaluate_set_metrics``): the
    ``set_metrics`` specs (a protocol's), or by default ``LABEL/FAD``, ``LABEL/FAD-inf`` and
    ``LABEL/KAD`` for every scorer that stores clip embeddings (``n`` = clips or pairs; no CI).
    With ``by``, every statistic is computed within each group of prompts (``RunStore.prompt_groups``).
    """
    table = clip_table(store)
    directions = metric_directions(store)
    na = not_applicable(store)
    groups = store.prompt_groups(by) if by else None
    table["group"] = table["prompt_id"].map(groups) if groups is not None else ""
    rows = []
    for (group, system), part in table.groupby(["group", "system"], sort=True):
        for column in directions:  # a metric no clip has a value of: every clip counts as failed
            values = part[column] if column in part else pd.Series(np.nan, index=part.index)
            per_prompt = per_prompt_means(values, part["prompt_id"])
            est = bootstrap_ci(per_prompt.to_numpy(), level=level, n_resamples=n_resamples, seed=seed)
            rows.append(
                {
                    "group": group,
                    "system": system,
                    "metric": column,
                    "higher_is_better": directions[column],
                    **est.to_dict(),
                    "n_clips": len(part),
                    "n_failed": sum(
                        (system, pid, sample, column) not in na
                        for pid, sample in part.loc[values.isna(), ["prompt_id", "sample"]].itertuples(
                            index=False
                        )
                    ),
                }
            )
    if reference is not None or set_metrics:
        sets = evaluate_set_metrics(store, reference=reference, specs=set_metrics, by=by)
        rows += sets.to_dict("records")
    board = pd.DataFrame(rows, columns=LEADERBOARD_COLUMNS[:-1])
    board["best"] = _separated_best(board)
    if not by:
        board = board.drop(columns=["group"])
    board.attrs["by"] = by
    return board


LEADERBOARD_COLUMNS = [*SET_METRIC_COLUMNS, "best"]


def _separated_best(board: pd.DataFrame) -> pd.Series:
    """True where a system is best in its (group, metric), its CI clears every other system's, and
    all of them were scored on as many prompts."""
    best = pd.Series(False, index=board.index)
    for _, part in board.groupby(["group", "metric"], sort=False):
        hib = part["higher_is_better"].iloc[0]
        part = part[np.isfinite(part["mean"].astype(float))]
        if hib is None or len(part) < 2 or part[["ci_low", "ci_high"]].isna().any().any():
            continue
        if part["n"].nunique() > 1:
            continue
        top = part["mean"].idxmax() if hib else part["mean"].idxmin()
        others = part.drop(index=top)
        clear = (
            part.at[top, "ci_low"] > others["ci_high"].max()
            if hib
            else part.at[top, "ci_high"] < others["ci_low"].min()
        )
        best[top] = bool(clear)
    return best


def paired_table(
    store: RunStore,
    baseline: str,
    *,
    by: str | None = None,
    level: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    prompt_ids: Collection[str] | None = None,
) -> pd.DataFrame:
    """Every other system against ``baseline``, per (group,) metric, on the prompts both answered
    (of ``prompt_ids`` when given): mean difference (system − baseline) with its bootstrap CI, the
    paired sign-flip permutation p-value, n, and ``verdict``: ``better``/``worse``
    (direction-aware) when p < 1 − level, else ``no difference``."""
    table = clip_table(store)
    if prompt_ids is not None:
        table = table[table["prompt_id"].isin(set(prompt_ids))]
    if baseline not in set(table["system"]):
        raise ValueError(
            f"baseline {baseline!r} is not a system of the run: {', '.join(sorted(set(table['system'])))}"
        )
    directions = metric_directions(store)
    table["group"] = table["prompt_id"].map(store.prompt_groups(by)) if by else ""
    rows = []
    for group, part in table.groupby("group", sort=True):
        base = part[part["system"] == baseline]
        for system in sorted(set(part["system"]) - {baseline}):
            other = part[part["system"] == system]
            for column in [c for c in directions if c in table.columns]:
                d = paired_difference(
                    per_prompt_means(other[column], other["prompt_id"]),
                    per_prompt_means(base[column], base["prompt_id"]),
                    level=level,
                    n_resamples=n_resamples,
                    seed=seed,
                )
                hib = directions[column]
                verdict = "no difference"
                if hib is not None and d.p_value < 1 - level:
                    verdict = "better" if (d.mean > 0) == hib else "worse"
                elif hib is None and d.p_value < 1 - level:
                    verdict = "differs"
                rows.append(
                    {
                        "group": group,
                        "system": system,
                        "baseline": baseline,
                        "metric": column,
                        "higher_is_better": hib,
                        **d.to_dict(),
                        "verdict": verdict,
                    }
                )
    out = pd.DataFrame(
        rows,
        columns=[
            "group",
            "system",
            "baseline",
            "metric",
            "higher_is_better",
            "diff",
            "ci_low",
            "ci_high",
            "p_value",
            "n",
            "verdict",
        ],
    )
    return out if by else out.drop(columns=["group"])


def fmt(x: float) -> str:
    """A number for a table: 3 decimals, or 3 significant digits when very large or small."""
    if x is None or not math.isfinite(x):
        return "–"
    mag = abs(x)
    return f"{x:.3g}" if mag >= 1000 or (0 < mag < 0.001) else f"{x:.3f}"


ARROWS = {True: " ↑", False: " ↓"}


def leaderboard_cells(board: pd.DataFrame) -> tuple[list[str], list[list[str]], list[list[bool]]]:
    """The leaderboard of one group as a grid: header, rows of cell texts, and which cells are best.
    Per-prompt metrics read ``mean [low, high]``; set metrics ``value (n=N)``."""
    metrics = list(dict.fromkeys(board["metric"]))
    direction = {m: board.loc[board["metric"] == m, "higher_is_better"].iloc[0] for m in metrics}
    header = ["system", "clips", "failed"] + [m + ARROWS.get(direction[m], "") for m in metrics]
    rows, marks = [], []
    for system, group in board.groupby("system", sort=True):
        cells = {r["metric"]: r for _, r in group.iterrows()}
        failed = int(np.nanmax([r["n_failed"] for r in cells.values()])) if cells else 0
        row = [str(system), str(int(group["n_clips"].max())), str(failed)]
        mark = [False, False, False]
        for m in metrics:
            r = cells.get(m)
            if r is None:
                row.append("–")
            elif isinstance(r.get("spec"), str):  # a set metric: one value, no CI
                row.append(f"{fmt(r['mean'])} (n={int(r['n'])})")
            else:
                row.append(f"{fmt(r['mean'])} [{fmt(r['ci_low'])}, {fmt(r['ci_high'])}]")
            mark.append(bool(r is not None and r.get("best", False)))
        rows.append(row)
        marks.append(mark)
    return header, rows, marks


def efficiency(store: RunStore, *, level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """The run's efficiency table (``ttaeval.metrics.efficiency.efficiency_table``): one row per system."""
    return efficiency_table(store.clips(), level=level, seed=seed)


def efficiency_markdown(table: pd.DataFrame, level: float = 0.95) -> str:
    """The efficiency table under its heading, with what its numbers mean."""
    header, rows = efficiency_cells(table, level)
    lines = ["#### Efficiency (machine-dependent)", ""]
    lines += ["| " + " | ".join(map(md_text, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(md_text, row)) + " |" for row in rows]
    return "\n".join([*lines, "", EFFICIENCY_NOTE]) + "\n"


def leaderboard_markdown(
    board: pd.DataFrame,
    paired: pd.DataFrame | None = None,
    level: float = 0.95,
    efficiency: pd.DataFrame | None = None,
) -> str:
    """Systems as rows, metrics as columns (one table per group when grouped), best in bold; then
    the systems' efficiency and the paired differences against the baseline, when given."""
    tail = efficiency_markdown(efficiency, level) if efficiency is not None and not efficiency.empty else ""
    if board.empty:
        return "_no scores_\n" + (f"\n{tail}" if tail else "")
    lines: list[str] = []
    grouped = "group" in board.columns
    for group, part in board.groupby("group", sort=True) if grouped else [(None, board)]:
        if grouped:
            lines += [f"### {md_text(board.attrs.get('by', 'group'))} = {md_text(group)}", ""]
        header, rows, marks = leaderboard_cells(part)
        lines += ["| " + " | ".join(map(md_text, header)) + " |", "|" + "---|" * len(header)]
        for row, mark in zip(rows, marks):
            cells = (f"**{md_text(c)}**" if m else md_text(c) for c, m in zip(row, mark))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines.append(
        f"Mean over prompts with a {int(level * 100)}% percentile-bootstrap CI; **bold**: best, with a CI "
        "clear of every other system's, all on as many prompts. 'failed': the most clips any metric could "
        "not score (left out, never counted as 0). Set metrics (FAD, FD, KAD, KL, IS, ...): against the "
        "reference set, n = clips (pairs for KL), no CI."
    )
    if tail:
        lines += ["", tail.rstrip("\n")]
    if paired is not None and not paired.empty:
        lines += ["", paired_markdown(paired, level)]
    return "\n".join(lines) + "\n"


def paired_markdown(paired: pd.DataFrame, level: float = 0.95) -> str:
    """One row per (group,) system and metric: difference to the baseline, CI, p-value, verdict."""
    baseline = paired["baseline"].iloc[0]
    grouped = "group" in paired.columns
    head = ["group"] if grouped else []
    lines = [
        f"#### Against the baseline {md_code(baseline)} (system − baseline, paired over prompts)",
        "",
        "| " + " | ".join([*head, "system", "metric", "difference [CI]", "p", "n", "verdict"]) + " |",
        "|" + "---|" * (len(head) + 6),
    ]
    for _, r in paired.iterrows():
        cells = [str(r["group"])] if grouped else []
        cells += [
            str(r["system"]),
            r["metric"] + ARROWS.get(r["higher_is_better"], ""),
            f"{fmt(r['diff'])} [{fmt(r['ci_low'])}, {fmt(r['ci_high'])}]",
            fmt(r["p_value"]),
            str(int(r["n"])),
            r["verdict"],
        ]
        lines.append("| " + " | ".join(map(md_text, cells)) + " |")
    lines += [
        "",
        f"CI: {int(level * 100)}% percentile bootstrap over prompts; p: two-sided paired sign-flip "
        f"permutation test; a verdict needs p < {1 - level:.2f}.",
    ]
    return "\n".join(lines) + "\n"


def tta_bench_table(store: RunStore) -> pd.DataFrame:
    """TTA-Bench's per-dimension, per-attribute, robustness and fairness tables for every scorer
    metric in the store (``ttaeval.protocols.tta_bench_summary``)."""

    from ttaeval.io.prompts import Prompt
    from ttaeval.protocols import tta_bench_summary

    table = clip_table(store)
    metrics = [c for c in table.columns if "/" in c]
    prompts = [
        Prompt(r["prompt_id"], r["text"], r["dimension"], json.loads(r["attributes"]))
        for _, r in store.prompts().iterrows()
    ]
    directions = metric_directions(store)  # a ratio means something for scores where higher is better
    ratio_metrics = [m for m in metrics if directions.get(m) is True]
    return tta_bench_summary(table, prompts, metrics, ratio_metrics)


def tta_bench_markdown(summary: pd.DataFrame) -> str:
    """One Markdown table per metric: sections and groups as rows, systems as columns."""
    if summary.empty:
        return "_no scores_\n"
    out = []
    for metric, part in summary.groupby("metric", sort=False):
        systems = sorted(part["system"].unique())
        out += [
            f"### {md_text(metric)}",
            "",
            "| section | group | " + " | ".join(map(md_text, systems)) + " |",
        ]
        out.append("|" + "---|" * (2 + len(systems)))
        for (section, group), rows in part.groupby(["section", "group"], sort=False):
            cells = {r["system"]: tta_cell(r) for _, r in rows.iterrows()}
            values = [section, group, *(cells.get(s, "–") for s in systems)]
            out.append("| " + " | ".join(map(md_text, values)) + " |")
        out.append("")
    out.append(
        "dimension/attribute rows: mean over prompts; robustness: mean ratio perturbed/source "
        "(1 = unaffected), for scores where higher is better, pairs whose source scores near or "
        "below 0 left out (n/a when most do); fairness: FS = mean over group pairs of "
        "100·|a−b|/max(a,b) (lower = fairer)."
    )
    return "\n".join(out) + "\n"


def tta_cell(row: pd.Series) -> str:
    """A TTA-Bench value with its n, or n/a with the reason; a note says what was left out."""
    note = row.get("note") or ""
    if not np.isfinite(row["value"]):
        return note if note.startswith("n/a") else f"n/a ({note})" if note else "n/a"
    return f"{fmt(row['value'])} (n={row['n']}" + (f"; {note})" if note else ")")


def human_correlations(
    store: RunStore, ratings: pd.DataFrame, metrics: list[str] | None = None, *, seed: int = 0
) -> pd.DataFrame:
    """LCC, SRCC and KTAU (with bootstrap CIs) of per-clip metrics against human ratings.

    ``ratings`` has ``prompt_id``, optionally ``system`` and ``sample``, and one numeric column per
    rating (e.g. RELATE's REL and OVL). Clips are matched on the key columns the ratings have; without
    ``sample`` a prompt's samples are averaged first; without ``system`` the run must hold one system.
    One row per metric and rating: ``n`` pairs, each coefficient with ``_low``/``_high``.
    """
    from ttaeval.metrics.stats import CORRELATIONS, correlation

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
            f"{fmt(r[k])} [{fmt(r[k + '_low'])}, {fmt(r[k + '_high'])}]" for k in ("LCC", "SRCC", "KTAU")
        ]
        lines.append("| " + " | ".join(map(md_text, [r["metric"], r["rating"], r["n"], *cells])) + " |")
    lines += [
        "",
        "Pearson (LCC), Spearman (SRCC), Kendall tau-b (KTAU); 95% percentile bootstrap over pairs.",
    ]
    return "\n".join(lines) + "\n"
