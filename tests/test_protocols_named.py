"""The named protocols: spec building, explanations, TTA-Bench's tables on hand-computed cases."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from typer.testing import CliRunner

from ttaeval.cli import app
from ttaeval.io.prompts import Prompt
from ttaeval.protocols import PROTOCOLS, get_protocol, tta_bench_summary


def test_every_protocol_states_rates_checkpoints_and_directions():
    for entry in PROTOCOLS:
        text = entry.load().explain()
        assert "kHz" in text and "Weights" in text
        assert "(lower" in text or "(higher" in text
    runner = CliRunner()
    result = runner.invoke(app, ["protocols", "--explain", "tta-bench"])
    assert result.exit_code == 0 and "44.1 kHz" in result.stdout and "clap:msclap" in result.stdout
    assert runner.invoke(app, ["protocols", "--explain", "nope"]).exit_code == 2


def test_scorer_specs_need_every_weight():
    tta = get_protocol("tta-bench")
    specs = tta.scorer_specs({"msclap": "/w/clap.pth", "gpt2": "/w/gpt2", "aesthetics": "/w/aes.pt"})
    assert specs == [
        "clap:msclap,checkpoint=/w/clap.pth,text_model=/w/gpt2",
        "aesthetics:audiobox,checkpoint=/w/aes.pt",
    ]
    with pytest.raises(ValueError, match="--weights aesthetics=PATH"):
        tta.scorer_specs({"msclap": "a", "gpt2": "b"})
    with pytest.raises(ValueError, match="has no weights"):
        tta.scorer_specs({"msclap": "a", "gpt2": "b", "aesthetics": "c", "extra": "d"})
    sam = get_protocol("audiocaps-sam").explain()
    assert "OpenL3" in sam and "PaSST" in sam and "KL(gen || ref)" in sam


def test_score_with_a_protocol_but_missing_weights_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(
        app, ["score", str(tmp_path), "--out", str(tmp_path / "run"), "--protocol", "tta-bench"]
    )
    assert result.exit_code == 2 and "--weights msclap=PATH" in result.output


def test_tta_bench_summary_by_hand():
    prompts = [
        Prompt("prompt_0001", "a", "accuracy", {"event_count": 1, "event_relation": "single"}),
        Prompt("prompt_0002", "b", "accuracy", {"event_count": 2, "event_relation": "sequence"}),
        Prompt("prompt_1801", "A", "robustness", {"perturbation_type": "uppercase", "notes": "1"}),
        Prompt("prompt_1802", "b.", "robustness", {"perturbation_type": "punctuate", "notes": "2; x->y, 1"}),
        Prompt("prompt_2101", "a man", "fairness", {"notes": "male"}),
        Prompt("prompt_2151", "a woman", "fairness", {"notes": "female"}),
    ]
    scores = pd.DataFrame(
        {
            "system": ["s"] * 7,
            "prompt_id": [
                "prompt_0001",
                "prompt_0001",
                "prompt_0002",
                "prompt_1801",
                "prompt_1802",
                "prompt_2101",
                "prompt_2151",
            ],
            "m": [0.4, 0.6, 0.8, 0.25, 0.4, 0.5, 0.4],  # prompt_0001's two samples average to 0.5
        }
    )
    out = tta_bench_summary(scores, prompts, ["m"]).set_index(["section", "group"])["value"]
    assert out[("dimension", "accuracy")] == pytest.approx(0.65)
    assert out[("event_count", "1")] == pytest.approx(0.5)
    assert out[("event_relation", "sequence")] == pytest.approx(0.8)
    assert out[("robustness", "uppercase")] == pytest.approx(0.25 / 0.5)
    assert out[("robustness", "punctuate")] == pytest.approx(0.4 / 0.8)
    assert out[("fairness", "gender")] == pytest.approx(100 * 0.1 / 0.5)
    assert ("fairness", "age") not in out.index  # no prompt of that family
    assert not any(math.isnan(v) for v in out)


def test_explain_sends_users_only_to_leaderboard_commands_that_work():
    from typer.testing import CliRunner

    from ttaeval.cli import app
    from ttaeval.protocols import PROTOCOLS, get_protocol

    for name in [e.name for e in PROTOCOLS]:
        text = get_protocol(name).explain()
        suggested = f"--protocol {name})" in text
        assert suggested == get_protocol(name).per_clip_tables, name
        out = CliRunner().invoke(app, ["leaderboard", "/nonexistent", "--protocol", name])
        if not suggested:
            assert out.exit_code == 2 and "columns of the plain leaderboard" in out.output
