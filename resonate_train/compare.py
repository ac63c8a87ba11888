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
from matplotlib.figure import Figure

from resonate_train.config_file import config_from_toml
from resonate_train.training_state import EVAL_LOG_NAME, LOG_NAME
from ttaeval.metrics.stats import holm
from ttaeval.report import html
from ttaeval.report.markdown import md_code, md_text
from ttaeval.report.report import Section, frame_markdown, write_report
from ttaeval.report.tables import paired_table
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
    baselines = dict.fromkeys([cfg.baseline, *(c.baseline for c in cfg.claims)])
    with RunStore(cfg.run_dir) as store:
        prompts = store.prompts()
        independent = prompts.loc[~prompts["dimension"].isin(cfg.dependent_dimensions), "prompt_id"]
        paired = {b: paired_table(store, b, prompt_ids=independent) for b in baselines}
        per_dimension = {b: paired_table(store, b, by="dimension") for b in baselines}
    sections = [
        _claims_section(
            claims_table(paired, cfg),
            reward_hacking_table(paired[cfg.baseline], cfg),
            cfg,
            claims_by_dimension(per_dimension, cfg),
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


def claims_table(paired: dict[str, pd.DataFrame], cfg: CompareConfig) -> pd.DataFrame:
    """One row per claim, read from ``paired`` (baseline -> ``paired_table``): the paired
    difference (system − baseline) with its CI, p, the Holm-corrected p over all the claims, n and
    the verdict (``claim_verdict``: supported / contradicted / not shown)."""
    rows, found = [], []
    for claim in cfg.claims:
        match = paired[claim.baseline]
        match = match[(match["system"] == claim.system) & (match["metric"] == claim.metric)]
        if match.empty:
            raise ValueError(f"claim {claim.text!r}: no paired result for {claim.system} on {claim.metric}")
        r = match.iloc[0]
        found.append(r)
        rows.append(
            {
                "claim": claim.text,
                "comparison": f"{claim.system} − {claim.baseline}",
                "metric": _mark(claim.metric, claim.system, cfg),
                "difference [95% CI]": f"{r['diff']:+.4f} [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]",
                "p": float(r["p_value"]),
                "p (Holm)": np.nan,
                "n": int(r["n"]),
                "verdict": "",
            }
        )
    table = pd.DataFrame(rows)
    if rows:
        table["p (Holm)"] = holm(table["p"].to_numpy())
        table["verdict"] = [
            claim_verdict(r["diff"], r["ci_low"], r["ci_high"], p, r["higher_is_better"])
            for r, p in zip(found, table["p (Holm)"])
        ]
    return table


def claims_by_dimension(paired: dict[str, pd.DataFrame], cfg: CompareConfig) -> pd.DataFrame:
    """Each claim's paired difference within each prompt dimension (``paired``: baseline ->
    ``paired_table(..., by="dimension")``), with n; dependent dimensions marked. Descriptive: the
    verdicts are the pooled table's."""
    rows = []
    for claim in cfg.claims:
        part = paired[claim.baseline]
        part = part[(part["system"] == claim.system) & (part["metric"] == claim.metric)]
        for _, r in part.iterrows():
            dependent = r["group"] in cfg.dependent_dimensions
            rows.append(
                {
                    "claim": claim.text,
                    "dimension": f"{r['group']} (perturbations: not independent)"
                    if dependent
                    else r["group"],
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
    claims: pd.DataFrame, hacking: pd.DataFrame, cfg: CompareConfig, by_dimension: pd.DataFrame
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
    hacking_title = f"Reward hacking check against {md_code(cfg.baseline)}:"
    dims = "Each claim per prompt dimension (descriptive):"
    md = "\n".join(
        [note, "", frame_markdown(claims), dims, "", frame_markdown(by_dimension), hacking_title, "",
         frame_markdown(hacking)]
    )  # fmt: skip
    body = (
        f"<p>{escape(note)}</p>{html.frame_table(claims)}"
        f"<p>{escape(dims)}</p>{html.frame_table(by_dimension)}"
        f"<p>Reward hacking check against <code>{escape(cfg.baseline)}</code>:</p>"
        f"{html.frame_table(hacking)}"
    )
    return Section("Claims under test", md, body)


def _training_section(cfg: CompareConfig, curves: Path) -> Section:
    runs = ", ".join(f"{k}: {v}" for k, v in cfg.training.items())
    how = "step-mean lines are 5-step running means; evaluation-set points are the evaluations themselves"
    md_runs = ", ".join(f"{md_text(k)}: {md_code(v)}" for k, v in cfg.training.items())
    md = f"Training logs ({md_runs}); {how}.\n\n![training](figures/{curves.name})"
    body = f"<p>Training logs ({escape(runs)}); {how}.</p>{html.image(curves, 'training curves')}"
    return Section("Training curves", md, body, (curves,))
