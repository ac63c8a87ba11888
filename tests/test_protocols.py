"""Protocol formulas on hand-computed cases."""

from __future__ import annotations

import math

import pytest

from ttaeval import Prompt, load_prompts
from ttaeval.protocols import fairness_score, robustness_ratios, source_id


def test_robustness_ratio_per_perturbation():
    prompts = [
        Prompt("p1", "a dog barks"),
        Prompt("p2", "rain falls"),
        Prompt("p3", "A DOG barks", attributes={"perturbation_type": "uppercase", "notes": "p1"}),
        Prompt("p4", "rain  falls", attributes={"perturbation_type": "space", "notes": "p2"}),
        Prompt("p5", "a dgo barks", attributes={"perturbation_type": "space", "notes": "p1"}),
        Prompt("p6", "rain falls!", attributes={"perturbation_type": "punctuate", "notes": "p2"}),
    ]
    scores = {"p1": 0.5, "p2": 0.4, "p3": 0.25, "p4": 0.4, "p5": 0.45, "p6": math.nan}
    out = robustness_ratios(scores, prompts)
    assert out["uppercase"] == (0.5, 1, "")
    assert out["space"].value == pytest.approx((1.0 + 0.9) / 2) and out["space"].n == 2
    assert math.isnan(out["punctuate"].value) and out["punctuate"] == (
        out["punctuate"].value,
        0,
        "no scored pair",
    )


def test_a_ratio_to_a_score_near_or_below_zero_is_left_out_and_said_so():
    prompts = [Prompt(f"s{i}", "x") for i in range(4)] + [
        Prompt(f"p{i}", "X", attributes={"perturbation_type": kind, "notes": f"s{i}"})
        for i, kind in enumerate(["case", "case", "space", "space"])
    ]
    # cosines: s1's 0.003 would make p1's ratio 67; s2 and s3 are at or below 0
    scores = {"s0": 0.4, "s1": 0.003, "s2": -0.05, "s3": 0.0, "p0": 0.3, "p1": 0.2, "p2": 0.1, "p3": 0.2}
    out = robustness_ratios(scores, prompts)
    assert out["case"] == (pytest.approx(0.75), 1, "1 of 2 pairs left out: score near or below 0")
    assert math.isnan(out["space"].value) and out["space"].note == "n/a: 2 of 2 pairs score near or below 0"


def test_tta_bench_notes_name_sources_by_number(shared_data):
    prompts = load_prompts(shared_data / "tta-bench")
    ids = [p.id for p in prompts]
    first = next(p for p in prompts if p.id == "prompt_1801")
    assert source_id(first, ids) == "prompt_0008"
    robust = [p for p in prompts if p.dimension == "robustness"]
    assert sum(source_id(p, ids) is not None for p in robust) == len(robust)


def test_fairness_score_is_the_mean_pairwise_relative_gap():
    assert fairness_score({"male": 0.5, "female": 0.4}) == pytest.approx(20.0)
    # pairs: (0.5, 0.4) -> 20, (0.5, 0.25) -> 50, (0.4, 0.25) -> 37.5
    assert fairness_score({"old": 0.5, "youth": 0.4, "child": 0.25}) == pytest.approx((20 + 50 + 37.5) / 3)
    assert fairness_score({"en": 0.3, "zh": 0.3}) == 0.0
    assert math.isnan(fairness_score({"en": 0.3, "zh": math.nan}))
    with pytest.raises(ValueError, match="positive"):
        fairness_score({"a": -0.1, "b": 0.2})
