"""A study of fine-tunes, end to end: evaluate the systems with ``ttaeval run``, then write the
ttaeval report with two sections on top — the claims under test, each with its paired difference,
CI and verdict, and the training curves — so no sentence in the report lacks its number.

    resonate-train compare --config resonate_train/configs/compare_mini.toml

The run folder is resumable (``ttaeval run``'s store): re-running the command re-scores nothing
and rewrites the report from the stored numbers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.stats
from matplotlib.figure import Figure

from resonate_train.config_file import config_from_toml
from resonate_train.training_state import EVAL_LOG_NAME, LOG_NAME
from ttaeval.metrics.stats import holm, paired_difference, per_prompt_means
from ttaeval.report import html
from ttaeval.report.markdown import md_code, md_text
from ttaeval.report.report import Section, frame_markdown, write_report
from ttaeval.report.tables import clip_table, metric_directions, paired_table
from ttaeval.runner import RunConfig, run
from ttaeval.store import RunStore

ALPHA = 0.05
"""The claims' family-wise error rate (Holm over the claims table)."""


@dataclass(frozen=True)
class Claim:
    """A sentence the study tests: ``system`` beats ``baseline`` on ``metric`` (a leaderboard
    column such as ``clap:mini-heldout/clap``), read from the paired difference over prompts."""

    text: str
    system: str
    baseline: str
    metric: str


@dataclass
class CompareConfig:
    """What to evaluate and which claims to test; every path is relative to the working directory."""

    out: str = "reports/resonate_mini"
    """Report folder (report.md, report.html, figures/)."""
    run_dir: str = "runs/compare_mini"
    """The ttaeval run folder (resumable)."""
    title: str = "Fine-tuning resonate-mini: offline DPO vs online GRPO, CLAP vs judge rewards"
    """The report's title."""
    suite: str = "synth:all"
    """Evaluation prompts."""
    systems: dict[str, str] = field(default_factory=dict)
    """System name -> generator spec (``resonate:CKPT``, ``synth``, ...)."""
    baseline: str = "base"
    """The system every other is compared with (paired over prompts)."""
    reference: str | None = "reference"
    """The system whose clips FAD/KAD are computed against."""
    scorers: list[str] = field(default_factory=list)
    """Scorer specs."""
    samples_per_prompt: int = 1
    """Clips per prompt and system."""
    seed: int = 0
    """Run seed (each clip's noise)."""
    batch_size: int = 32
    """Clips per generation/scoring batch."""
    limit: int | None = None
    """Only the suite's first N prompts (quick looks and tests)."""
    training: dict[str, str] = field(default_factory=dict)
    """System name -> its training run folder (``train_log.jsonl``), for the training curves."""
    trained_on: dict[str, list[str]] = field(default_factory=dict)
    """System name -> the leaderboard columns it was trained on (marked as training rewards)."""
    claims: list[Claim] = field(default_factory=list)
    """The claims under test."""
    recipes: dict[str, list[str]] = field(default_factory=dict)
    """Recipe name -> the systems that are its seeds (one training run each). A claim may name a
    recipe as its system or baseline: it is then read pooled (each prompt's mean over the seeds) with
    the spread of the seeds' own differences beside the prompts' CI, and seed by seed (seed i against
    the baseline recipe's seed i, or against the baseline system). ``trained_on`` may name recipes."""
    dependent_dimensions: list[str] = field(default_factory=lambda: ["robustness"])
    """Prompt dimensions left out of the claims' pooled test: robustness prompts are perturbations
    of other prompts of the suite, not independent draws, so they would count a prompt several
    times. Every dimension, these included, is still shown apart (the claims per dimension)."""
    discussion: str = ""
    """The study author's reading of the results (plain paragraphs, blank-line separated), shown
    after the claims. It should cite the tables rather than repeat numbers, so a re-run that moves a
    number cannot leave the text stale."""

    def __post_init__(self) -> None:
        self.claims = [c if isinstance(c, Claim) else Claim(**c) for c in self.claims]
        for recipe, seeds in self.recipes.items():
            if recipe in self.systems or not seeds or set(seeds) - set(self.systems):
                raise ValueError(
                    f"recipe {recipe!r}: its name must not be a system's, and its seeds "
                    f"({', '.join(seeds) or 'none'}) must be systems of the study"
                )
            if recipe in self.trained_on:
                for seed in seeds:
                    self.trained_on.setdefault(seed, self.trained_on[recipe])

    def members(self, name: str) -> list[str]:
        """The systems behind a claim's side: a recipe's seeds, or the system itself."""
        return list(self.recipes.get(name, [name]))

    def seed_pairs(self, claim: Claim) -> list[tuple[str, str]]:
        """(system, baseline) of each seed of a claim: seed i against seed i when both sides are
        recipes, else each seed against the single side."""
        a, b = self.members(claim.system), self.members(claim.baseline)
        if len(a) > 1 and len(b) > 1 and len(a) != len(b):
            raise ValueError(
                f"claim {claim.text!r}: {claim.system} has {len(a)} seeds, {claim.baseline} {len(b)}"
            )
        n = max(len(a), len(b))
        return [(a[i if len(a) > 1 else 0], b[i if len(b) > 1 else 0]) for i in range(n)]

    @classmethod
    def from_toml(cls, path: str | Path, **overrides: object) -> CompareConfig:
        return config_from_toml(cls, path, **overrides)


def compare(cfg: CompareConfig, command: str | None = None) -> Path:
    """Run (or resume) the evaluation, then write the report; returns the report folder.
    ``command`` is recorded in the run's manifest."""
    run(
        RunConfig(
            out=Path(cfg.run_dir),
            systems=dict(cfg.systems),
            suite=cfg.suite,
            scorers=list(cfg.scorers),
            reference=cfg.reference,
            samples_per_prompt=cfg.samples_per_prompt,
            seed=cfg.seed,
            batch_size=cfg.batch_size,
            limit=cfg.limit,
        ),
        command=command,
    )
    out = Path(cfg.out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    if cfg.baseline in cfg.recipes:
        raise ValueError(f"baseline {cfg.baseline!r} must be a system, not a recipe")
    seed_baselines = dict.fromkeys([cfg.baseline, *(b for c in cfg.claims for _, b in cfg.seed_pairs(c))])
    with RunStore(cfg.run_dir) as store:
        prompts = store.prompts()
        independent = prompts.loc[~prompts["dimension"].isin(cfg.dependent_dimensions), "prompt_id"]
        values, directions = clip_table(store), metric_directions(store)
        paired = {b: paired_table(store, b, prompt_ids=independent) for b in seed_baselines}
    dimension_of = dict(zip(prompts["prompt_id"], prompts["dimension"]))
    sections = [
        _claims_section(
            claims_table(
                claim_records(values[values["prompt_id"].isin(set(independent))], directions, cfg), cfg
            ),
            reward_hacking_table(paired[cfg.baseline], cfg),
            cfg,
            claims_by_dimension(
                values.assign(dimension=values["prompt_id"].map(dimension_of)), directions, cfg
            ),
            claims_per_seed(paired, cfg),
        )
    ]
    if cfg.discussion.strip():
        paragraphs = [" ".join(p.split()) for p in cfg.discussion.strip().split("\n\n")]
        sections.append(
            Section("Discussion", "\n\n".join(paragraphs), "".join(f"<p>{escape(p)}</p>" for p in paragraphs))
        )
    curves = training_curves(cfg.training, out / "figures" / "training.png")
    if curves is not None:
        sections.append(_training_section(cfg, curves))
    write_report(
        cfg.run_dir,
        out,
        baseline=cfg.baseline,
        reference=cfg.reference,
        title=cfg.title,
        sections=tuple(sections),
    )
    return out


def claim_verdict(diff: float, low: float, high: float, p_holm: float, higher_is_better: bool | None) -> str:
    """What a paired difference says of "system beats baseline" on a metric, read in the metric's
    direction: supported (or contradicted) only when the Holm-corrected p is below ``ALPHA`` *and*
    the CI lies wholly on that side of 0; when one says so and the other does not, not shown, with
    why. A metric without a direction supports nothing."""
    if higher_is_better is None:
        return "not shown (the metric has no better direction)"
    significant = bool(np.isfinite(p_holm) and p_holm < ALPHA)
    side = 1 if low > 0 else -1 if high < 0 else 0  # where the CI lies, if clear of 0
    if not significant and not side:
        return "not shown"
    if not significant or not side:
        return "not shown (CI and corrected p disagree)"
    better = (side > 0) == bool(higher_is_better)
    return "supported" if better else "contradicted"


def claim_records(values: pd.DataFrame, directions: dict[str, bool | None], cfg: CompareConfig) -> list[dict]:
    """Each claim's pooled paired difference over prompts (``values``: ``clip_table`` rows of the
    prompts under test): each side's per-prompt mean (over its samples, then over a recipe's seeds,
    on the prompts every seed answered), their difference's CI and p, and — when a side is a recipe —
    each seed's own mean difference (``seed_diffs``) on those prompts."""
    records = []
    for claim in cfg.claims:
        if claim.metric not in values.columns or claim.metric not in directions:
            raise ValueError(f"claim {claim.text!r}: no paired result for {claim.system} on {claim.metric}")
        per_system = {
            name: per_prompt_means(part[claim.metric], part["prompt_id"])
            for name, part in values.groupby("system")
            if name in {n for pair in cfg.seed_pairs(claim) for n in pair}
        }
        missing = [n for pair in cfg.seed_pairs(claim) for n in pair if n not in per_system]
        if missing:
            raise ValueError(
                f"claim {claim.text!r}: no paired result for {', '.join(missing)} on {claim.metric}"
            )
        frame = pd.concat(per_system, axis=1, join="inner").dropna()
        side_a, side_b = cfg.members(claim.system), cfg.members(claim.baseline)
        d = paired_difference(frame[side_a].mean(axis=1), frame[side_b].mean(axis=1))
        record = {**d.to_dict(), "higher_is_better": directions[claim.metric], "seed_diffs": []}
        if len(cfg.seed_pairs(claim)) > 1:
            record["seed_diffs"] = [float((frame[a] - frame[b]).mean()) for a, b in cfg.seed_pairs(claim)]
        records.append(record)
    return records


def seed_interval(diffs: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean of the seeds' differences and its t interval over seeds (training runs as the sample)."""
    x = np.asarray(diffs, dtype=float)
    half = scipy.stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size)
    return float(x.mean()), float(x.mean() - half), float(x.mean() + half)


def claims_table(records: list[dict], cfg: CompareConfig) -> pd.DataFrame:
    """One row per claim (``records``: ``claim_records``): the paired difference over prompts
    (system − baseline) with its CI, p, the Holm-corrected p over all the claims, n and the verdict
    (``claim_verdict``). A claim over seeds also shows each seed's difference and the t interval
    over seeds, and is supported (or contradicted) only when that interval lies on the same side of
    0 too: training variance is part of the claim."""
    rows = []
    for claim, r in zip(cfg.claims, records):
        row = {
            "claim": claim.text,
            "comparison": f"{claim.system} − {claim.baseline}",
            "metric": _mark(claim.metric, claim.system, cfg),
            "difference [95% CI]": f"{r['diff']:+.4f} [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]",
            "p": float(r["p_value"]),
            "p (Holm)": np.nan,
            "n": int(r["n"]),
        }
        if any(x.get("seed_diffs") for x in records):
            diffs = r.get("seed_diffs") or []
            row["seeds' differences"] = ", ".join(f"{x:+.4f}" for x in diffs) or "one seed"
            row["over seeds [95% t CI]"] = (
                "{:+.4f} [{:+.4f}, {:+.4f}]".format(*seed_interval(r["seed_diffs"]))
                if len(r.get("seed_diffs") or []) > 1
                else "n/a"
            )
        row["verdict"] = ""
        rows.append(row)
    table = pd.DataFrame(rows)
    if rows:
        table["p (Holm)"] = holm(table["p"].to_numpy())
        verdicts = []
        for r, p in zip(records, table["p (Holm)"]):
            verdict = claim_verdict(r["diff"], r["ci_low"], r["ci_high"], p, r["higher_is_better"])
            if verdict in ("supported", "contradicted") and len(r.get("seed_diffs") or []) > 1:
                _, low, high = seed_interval(r["seed_diffs"])
                if not (low > 0 or high < 0) or (low > 0) != (r["diff"] > 0):
                    verdict = "not shown (the seeds' spread includes 0)"
            verdicts.append(verdict)
        table["verdict"] = verdicts
    return table


def claims_per_seed(paired: dict[str, pd.DataFrame], cfg: CompareConfig) -> pd.DataFrame:
    """Each claim over recipes, seed by seed (``paired``: baseline system -> its ``paired_table``
    over the prompts under test), the p-values Holm-corrected within each seed's claims: the study
    as each seed alone would have reported it. Empty when no claim names a recipe."""
    rows = []
    for claim in cfg.claims:
        pairs = cfg.seed_pairs(claim)
        if len(pairs) < 2:
            continue
        for i, (system, baseline) in enumerate(pairs):
            part = paired[baseline]
            r = part[(part["system"] == system) & (part["metric"] == claim.metric)].iloc[0]
            rows.append({
                "claim": claim.text, "seed": i, "comparison": f"{system} − {baseline}",
                "difference [95% CI]": f"{r['diff']:+.4f} [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]",
                "p": float(r["p_value"]), "n": int(r["n"]),
                "_r": r,
            })  # fmt: skip
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table["p (Holm, within the seed)"] = np.nan
    table["verdict"] = ""
    for _, idx in table.groupby("seed").groups.items():
        corrected = holm(table.loc[idx, "p"].to_numpy())
        table.loc[idx, "p (Holm, within the seed)"] = corrected
        table.loc[idx, "verdict"] = [
            claim_verdict(r["diff"], r["ci_low"], r["ci_high"], p, r["higher_is_better"])
            for r, p in zip(table.loc[idx, "_r"], corrected)
        ]
    return table.drop(columns="_r").sort_values(["seed"], kind="stable").reset_index(drop=True)


def claims_by_dimension(
    values: pd.DataFrame, directions: dict[str, bool | None], cfg: CompareConfig
) -> pd.DataFrame:
    """Each claim's paired difference within each prompt dimension (``values``: ``clip_table`` rows
    with their prompt's ``dimension``), read as the pooled claims are (``claim_records``: recipes
    pooled over their seeds), with n; dependent dimensions marked. Descriptive: the verdicts are the
    pooled table's."""
    rows = []
    dimensions = sorted(set(values["dimension"]))
    per_dimension = {d: claim_records(values[values["dimension"] == d], directions, cfg) for d in dimensions}
    for i, claim in enumerate(cfg.claims):
        for dimension in dimensions:
            r = per_dimension[dimension][i]
            if not r["n"]:
                continue
            dependent = dimension in cfg.dependent_dimensions
            rows.append(
                {
                    "claim": claim.text,
                    "dimension": f"{dimension} (perturbations: not independent)" if dependent else dimension,
                    "difference [95% CI]": f"{r['diff']:+.4f} [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]",
                    "n": int(r["n"]),
                }
            )
    return pd.DataFrame(rows)


def reward_hacking_table(paired: pd.DataFrame, cfg: CompareConfig) -> pd.DataFrame:
    """Each fine-tune against the baseline (``paired``: its ``paired_table``) on every metric with a
    direction, the metrics it was trained on marked: training reward up while a held-out metric
    goes down is reward hacking."""
    paired = paired[paired["system"].isin(cfg.trained_on) & paired["higher_is_better"].notna()]
    rows = []
    for system, part in paired.groupby("system", sort=True):
        trained = set(cfg.trained_on[system])
        up = part[part["metric"].isin(trained) & (part["verdict"] == "better")]
        down = part[~part["metric"].isin(trained) & (part["verdict"] == "worse")]
        if len(down):  # every held-out metric is looked at, whether or not the trained one rose
            verdict = "yes" if len(up) else "held-out metrics worse, training reward not better"
        else:
            verdict = "no"
        rows.append(
            {
                "system": system,
                "training reward(s)": ", ".join(sorted(trained)),
                "trained metric better": ", ".join(up["metric"]) or "none",
                "held-out metrics worse": ", ".join(down["metric"]) or "none",
                "reward hacking": verdict,
            }
        )
    return pd.DataFrame(rows)


def training_curves(runs: dict[str, str], path: Path) -> Path | None:
    """Reward (GRPO: the fixed evaluation set's, and the step's mean) and KL over steps; DPO: its
    loss, implicit accuracy and the winners' flow-matching error. One line per system; None when
    there is no log to draw."""
    logs = {}
    for name, folder in runs.items():
        log = Path(folder) / LOG_NAME
        if log.is_file():
            logs[name] = pd.DataFrame([json.loads(x) for x in log.read_text().splitlines()])
            evals = Path(folder) / EVAL_LOG_NAME
            if evals.is_file():  # GRPO's fixed evaluation set: same prompts and noise at every evaluation
                ev = pd.DataFrame([json.loads(x) for x in evals.read_text().splitlines()])
                ev = ev[["step", "reward_mean"]].rename(columns={"reward_mean": "eval_reward"})
                logs[name] = logs[name].merge(ev, on="step", how="outer")
    if not logs:
        return None
    panels = [
        ("eval_reward", "training reward, fixed evaluation set"),
        ("reward_mean", "training reward (step mean)"),
        ("kl", "KL to the base model"),
        ("dpo_loss", "DPO loss"),
        ("implicit_accuracy", "DPO implicit accuracy"),
        ("winner_mse", "DPO winners' flow-matching MSE"),
    ]
    panels = [(k, t) for k, t in panels if any(k in f for f in logs.values())]
    fig = Figure(figsize=(4.2 * len(panels), 3.2))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (key, title) in zip(axes, panels):
        for name, frame in logs.items():
            if key not in frame:
                continue
            points = frame.dropna(subset=[key])
            if key == "eval_reward":  # a few evaluations: drawn as they are
                ax.plot(points["step"], points[key], marker="o", markersize=3, label=name)
            else:
                ax.plot(points["step"], points[key].rolling(5, min_periods=1).mean(), label=name)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def _mark(metric: str, system: str, cfg: CompareConfig) -> str:
    return f"{metric} (training reward)" if metric in cfg.trained_on.get(system, ()) else metric


def _claims_section(
    claims: pd.DataFrame,
    hacking: pd.DataFrame,
    cfg: CompareConfig,
    by_dimension: pd.DataFrame,
    per_seed: pd.DataFrame,
) -> Section:
    note = (
        "Each claim is read from the paired difference over prompts (system − baseline, per-prompt "
        "means, 95% percentile-bootstrap CI, sign-flip permutation p), the p-values Holm-corrected over "
        "the claims: supported when the corrected p < 0.05 and the CI lies wholly on the metric's "
        "better side of 0, contradicted when both say the other way, not shown otherwise (and when "
        "the two disagree). Metrics marked 'training reward' are what that system was optimised for; "
        "the others are held out. The reward hacking check lists every held-out metric that got worse, "
        "whether or not the training reward rose."
    )
    if cfg.dependent_dimensions:
        note += (
            f" The pooled test leaves out the {', '.join(cfg.dependent_dimensions)} prompts (perturbations "
            "of other prompts, not independent); the table after it shows every dimension apart."
        )
    if cfg.recipes:
        note += (
            " A claim that names a recipe (several training seeds) compares each prompt's mean over the"
            " seeds, shows each seed's own difference and their t interval over seeds, and needs that"
            " interval on the same side of 0 as well; the table per seed after it reads each seed alone."
        )
    hacking_title = f"Reward hacking check against {md_code(cfg.baseline)}:"
    dims = "Each claim per prompt dimension (descriptive):"
    seeds = "Each claim seed by seed (p Holm-corrected within each seed's claims):"
    parts = [note, "", frame_markdown(claims)]
    body = f"<p>{escape(note)}</p>{html.frame_table(claims)}"
    if not per_seed.empty:
        parts += [seeds, "", frame_markdown(per_seed)]
        body += f"<p>{escape(seeds)}</p>{html.frame_table(per_seed)}"
    if not by_dimension.empty:
        parts += [dims, "", frame_markdown(by_dimension)]
        body += f"<p>{escape(dims)}</p>{html.frame_table(by_dimension)}"
    md = "\n".join([*parts, hacking_title, "", frame_markdown(hacking)])
    body += (
        f"<p>Reward hacking check against <code>{escape(cfg.baseline)}</code>:</p>{html.frame_table(hacking)}"
    )
    return Section("Claims under test", md, body)


def _training_section(cfg: CompareConfig, curves: Path) -> Section:
    runs = ", ".join(f"{k}: {v}" for k, v in cfg.training.items())
    how = "step-mean lines are 5-step running means; evaluation-set points are the evaluations themselves"
    md_runs = ", ".join(f"{md_text(k)}: {md_code(v)}" for k, v in cfg.training.items())
    md = f"Training logs ({md_runs}); {how}.\n\n![training](figures/{curves.name})"
    body = f"<p>Training logs ({escape(runs)}); {how}.</p>{html.image(curves, 'training curves')}"
    return Section("Training curves", md, body, (curves,))
