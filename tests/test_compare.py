"""resonate-train compare: a study's evaluation, its claims with their paired numbers, training curves."""

from __future__ import annotations

import json

import pytest

from resonate_train.compare import CompareConfig, compare
from ttaeval.report.tables import paired_table
from ttaeval.store import RunStore


def _config(tmp_path, **kw) -> CompareConfig:
    logs = tmp_path / "tuned_run"
    logs.mkdir(exist_ok=True)
    (logs / "train_log.jsonl").write_text(
        "".join(
            json.dumps({"step": s, "reward_mean": 0.4 + 0.01 * s, "kl": 1e-3 * s}) + "\n" for s in range(8)
        )
    )
    (logs / "eval_log.jsonl").write_text(
        "".join(json.dumps({"step": s, "reward_mean": 0.5 + 0.01 * s}) + "\n" for s in (0, 4, 8))
    )
    base = {
        "out": str(tmp_path / "report"),
        "run_dir": str(tmp_path / "run"),
        "suite": "synth:accuracy",
        "limit": 16,
        "systems": {
            "base": "synth,degrade=noise,strength=3",
            "tuned": "synth",
            "reference": "synth,seed_offset=1",
        },
        "scorers": ["clap:mini", "signal"],
        "training": {"tuned": str(logs)},
        "trained_on": {"tuned": ["clap/clap"]},
        "claims": [
            {
                "text": "tuning raises the CLAP score",
                "system": "tuned",
                "baseline": "base",
                "metric": "clap/clap",
            },
            {
                "text": "the base is louder",
                "system": "base",
                "baseline": "tuned",
                "metric": "signal/silence_ratio",
            },
        ],
    }
    return CompareConfig(**{**base, **kw})


def test_compare_reports_each_claim_with_its_paired_difference(tmp_path):
    cfg = _config(tmp_path, discussion="First  reading\nwraps.\n\nSecond <b>paragraph</b>.")
    out = compare(cfg)
    md = (out / "report.md").read_text()
    assert md.index("## Claims under test") < md.index("## Discussion") < md.index("## Manifest")
    assert "First reading wraps.\n\nSecond <b>paragraph</b>." in md
    with RunStore(cfg.run_dir) as store:
        row = paired_table(store, "base").set_index(["system", "metric"]).loc[("tuned", "clap/clap")]
    assert row["verdict"] == "better"  # clean audio beats 10 dB-SNR noise on CLAP
    line = next(x for x in md.splitlines() if "tuning raises the CLAP score" in x)
    assert f"{row['diff']:+.4f} [{row['ci_low']:+.4f}, {row['ci_high']:+.4f}]" in line
    assert "clap/clap (training reward)" in line and "supported" in line
    assert "| tuned | clap/clap |" in md  # the reward-hacking check lists what it was trained on
    assert (out / "figures" / "training.png").stat().st_size > 1000
    page = (out / "report.html").read_text()
    assert "<p>Second &lt;b&gt;paragraph&lt;/b&gt;.</p>" in page
    assert (
        "Training curves" in page and page.count("data:image/png") == 4
    )  # training + the run's 3, once each


def test_a_claim_without_a_result_is_an_error_naming_it(tmp_path):
    cfg = _config(
        tmp_path, claims=[{"text": "x", "system": "tuned", "baseline": "base", "metric": "nope/nope"}]
    )
    with pytest.raises(ValueError, match="claim 'x': no paired result for tuned on nope/nope"):
        compare(cfg)


def test_claims_need_the_holm_corrected_p_and_the_ci_to_agree():
    from resonate_train.compare import claim_verdict

    assert claim_verdict(0.02, 0.01, 0.03, 0.01, True) == "supported"
    assert claim_verdict(0.02, 0.01, 0.03, 0.01, False) == "contradicted"  # lower is better: worse
    assert claim_verdict(-0.02, -0.03, -0.01, 0.01, False) == "supported"
    assert claim_verdict(0.02, -0.001, 0.03, 0.01, True) == "not shown (CI and corrected p disagree)"
    assert claim_verdict(0.02, 0.01, 0.03, 0.08, True) == "not shown (CI and corrected p disagree)"
    assert claim_verdict(0.001, -0.01, 0.01, 0.6, True) == "not shown"
    assert claim_verdict(0.02, 0.01, 0.03, 0.001, None).startswith("not shown (the metric has no")


def test_the_claims_table_corrects_its_p_values_over_every_claim(tmp_path):
    from resonate_train.compare import Claim, claims_table

    records = [  # three claims each at p = 0.02 alone: after Holm over three, none is below 0.05
        {"higher_is_better": True, "diff": 0.1, "ci_low": 0.01, "ci_high": 0.2, "p_value": 0.02, "n": 30}
        for _ in "abc"
    ]
    cfg = _config(tmp_path, claims=[Claim(f"{s} wins", s, "base", "m") for s in "abc"])
    table = claims_table(records, cfg)
    assert table["p (Holm)"].tolist() == pytest.approx([0.06, 0.06, 0.06])
    assert set(table["verdict"]) == {"not shown (CI and corrected p disagree)"}


def test_a_claim_over_seeds_needs_the_seeds_spread_on_its_side_too(tmp_path):
    from resonate_train.compare import Claim, claims_table, seed_interval

    sure = {
        "higher_is_better": True,
        "diff": 0.02,
        "ci_low": 0.01,
        "ci_high": 0.03,
        "p_value": 1e-4,
        "n": 400,
    }
    cfg = _config(tmp_path, claims=[Claim(f"{s} wins", s, "base", "m") for s in "abc"])
    table = claims_table(
        [{**sure, "seed_diffs": [0.02, 0.021, 0.019]}, {**sure, "seed_diffs": [0.05, -0.02, 0.03]}, sure], cfg
    )
    assert table["verdict"].tolist() == ["supported", "not shown (the seeds' spread includes 0)", "supported"]
    assert table["seeds' differences"].tolist()[1:] == ["+0.0500, -0.0200, +0.0300", "one seed"]
    mean, _, high = seed_interval([0.05, -0.02, 0.03])  # t with 2 degrees of freedom: 4.303
    assert mean == pytest.approx(0.02) and high - mean == pytest.approx(4.3027 * 0.036056 / 3**0.5, rel=1e-3)


def test_a_study_of_recipes_reads_claims_pooled_over_seeds_and_seed_by_seed(tmp_path):
    seeds = {"tuned_s0": "synth", "tuned_s1": "synth,seed_offset=2", "tuned_s2": "synth,seed_offset=3"}
    cfg = _config(
        tmp_path,
        limit=12,
        scorers=["clap:mini"],
        systems={"base": "synth,degrade=noise,strength=3", "reference": "synth,seed_offset=1", **seeds},
        recipes={"tuned": list(seeds)},
        trained_on={"tuned": ["clap/clap"]},
        training={},
        claims=[{"text": "tuning raises the CLAP score", "system": "tuned", "baseline": "base",
                 "metric": "clap/clap"}],
    )  # fmt: skip
    assert cfg.trained_on["tuned_s1"] == ["clap/clap"]
    md = (compare(cfg) / "report.md").read_text()
    with RunStore(cfg.run_dir) as store:
        paired = paired_table(store, "base").set_index(["system", "metric"])
    diffs = [paired.loc[(s, "clap/clap"), "diff"] for s in seeds]
    pooled = next(x for x in md.splitlines() if x.startswith("| tuning raises the CLAP score | tuned − base"))
    assert ", ".join(f"{d:+.4f}" for d in diffs) in pooled and "supported" in pooled
    assert f"{sum(diffs) / 3:+.4f} [" in pooled  # every seed answered every prompt: the pooled mean
    for i, s in enumerate(seeds):
        row = next(
            x for x in md.splitlines() if x.startswith(f"| tuning raises the CLAP score | {i} | {s} − base")
        )
        assert f"{diffs[i]:+.4f} [" in row
    with pytest.raises(ValueError, match="recipe 'tuned'"):
        _config(tmp_path, recipes={"tuned": ["tuned_s0", "nowhere"]})


def test_pooled_claims_leave_out_perturbations_and_every_dimension_is_shown_apart(tmp_path):
    from ttaeval.io.prompts import load_prompts

    prompts = load_prompts("synth:demo")
    dims = {d: sum(p.dimension == d for p in prompts) for d in {p.dimension for p in prompts}}
    assert dims.get("robustness") and len(dims) > 1
    cfg = _config(tmp_path, suite="synth:demo", limit=None, scorers=["clap:mini"], claims=[
        {"text": "tuning raises the CLAP score", "system": "tuned", "baseline": "base", "metric": "clap/clap"}
    ])  # fmt: skip
    md = (compare(cfg) / "report.md").read_text()
    pooled = next(x for x in md.splitlines() if x.startswith("| tuning raises the CLAP score | tuned"))
    assert f"| {len(prompts) - dims['robustness']} |" in pooled  # n: the independent prompts only
    assert "robustness (perturbations: not independent)" in md
    for dim, n in dims.items():
        row = next(x for x in md.splitlines() if x.startswith(f"| tuning raises the CLAP score | {dim}"))
        assert row.endswith(f"| {n} |"), row
