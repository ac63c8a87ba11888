"""The scorer contract, the registry and spec strings, and the signal scorer's numbers."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pytest

from helpers import tone
from ttaeval import Clip, Prompt, get_scorer
from ttaeval.registry import Registry
from ttaeval.scorers import SCORERS, MetricSpec, Scorer, ScoreResult, parse_spec, register_scorer


def test_spec_strings_parse_name_backend_and_options():
    spec = parse_spec("signal:builtin,silence_dbfs=-50,frame_ms=20")
    assert (spec.name, spec.backend) == ("signal", "builtin")
    assert spec.options == (("silence_dbfs", "-50"), ("frame_ms", "20"))
    assert parse_spec("signal").backend == "builtin"
    assert str(parse_spec("signal:builtin,frame_ms=20")) == "signal,frame_ms=20"


def test_spec_values_may_hold_colons_and_equals():
    spec = parse_spec("signal:builtin,path=/w/a=b:c.pt,url=http://127.0.0.1:8000/v1")
    assert dict(spec.options) == {"path": "/w/a=b:c.pt", "url": "http://127.0.0.1:8000/v1"}


@pytest.mark.parametrize(
    "spec, message",
    [
        ("nosuch", "unknown scorer 'nosuch'; available: .*signal"),
        ("signal:nosuch", "unknown scorer 'signal:nosuch'; available: .*signal:builtin"),
        ("signal,frame_ms", "bad option 'frame_ms'"),
        ("signal,frame_ms=1,frame_ms=2", "repeated option"),
    ],
)
def test_bad_specs_fail_with_a_clear_message(spec, message):
    with pytest.raises((KeyError, ValueError), match=message):
        get_scorer(spec)


def test_options_are_typed_and_unknown_options_listed():
    scorer = get_scorer("signal,silence_dbfs=-50,batch_size=8")
    assert scorer.silence_dbfs == -50.0 and isinstance(scorer.silence_dbfs, float)
    assert scorer.batch_size == 8 and isinstance(scorer.batch_size, int)
    with pytest.raises(ValueError, match="has no option 'colour'; options: batch_size, frame_ms, min_run"):
        get_scorer("signal,colour=red")
    with pytest.raises(ValueError, match="cannot read 'loud' as float"):
        get_scorer("signal,silence_dbfs=loud")


def test_scorer_id_carries_every_option_that_changes_numbers():
    base = get_scorer("signal")
    assert base.id.startswith("signal:builtin@2,")
    assert get_scorer("signal,silence_dbfs=-50").id != base.id
    assert get_scorer("signal,batch_size=3").id == base.id  # batch size does not change numbers
    assert get_scorer("signal").id == base.id


def test_registry_refuses_collisions_and_loads_lazily():
    reg: Registry[object] = Registry("thing")
    reg.register("a", "json:dumps")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a", "json:loads")
    import json

    assert reg.get("a") is json.dumps
    reg.register("b", "no_such_module_xyz:thing", extra="laion", requires=("no_such_module_xyz",))
    assert not reg.entry("b").installed()
    with pytest.raises(ImportError, match=r"install the \[laion\] extra"):
        reg.get("b")


def test_signal_metrics_on_known_signals():
    scorer = get_scorer("signal")
    rate = 48_000
    full_sine = tone(1000, 3.0, rate, amp=1.0)
    half_clipped = np.clip(tone(100, 1.0, rate, amp=2.0), -1, 1)
    silence_then_tone = np.concatenate([np.zeros((1, rate)), tone(440, 1.0, rate)], axis=1)
    offset = tone(440, 1.0, rate, amp=0.1) + 0.2
    results = scorer.score([Clip(x, rate) for x in (full_sine, half_clipped, silence_then_tone, offset)])
    sine, clipped, gap, dc = (r.values for r in results)
    assert sine["loudness_lufs"] == pytest.approx(-3.01, abs=0.05)  # BS.1770: full-scale 1 kHz sine
    assert sine["peak"] == pytest.approx(1.0, abs=1e-4)
    assert sine["duration_s"] == pytest.approx(3.0)
    assert 0.6 < clipped["clipping_ratio"] < 0.7  # |2 sin| >= 1 for 2/3 of a period
    assert sine["clipping_ratio"] == 0.0  # a clean sine touching full scale is not clipped
    assert gap["silence_ratio"] == pytest.approx(0.5, abs=0.03)
    assert dc["dc_offset"] == pytest.approx(0.2, abs=1e-3)
    assert dc["clipping_ratio"] == 0.0
    assert all(r.ok for r in results)


@pytest.mark.parametrize("level", [0.5, 0.99, 1.0])
def test_clipping_is_found_at_the_clip_s_own_peak_whatever_the_level(level):
    """A 2x-overdriven 100 Hz sine clipped at ``level``: |2 sin| >= level for 1 - (2/pi) asin(level/2)
    of the time; the same sine scaled to peak at ``level`` without clipping: 0."""
    scorer = get_scorer("signal")
    rate = 48_000
    clipped = np.clip(tone(100, 1.0, rate, amp=2.0), -level, level)
    clean = tone(100, 1.0, rate, amp=level)
    stereo = np.stack([clipped[0], clean[0]])  # one clipped channel of two
    a, b, c = (
        r.values["clipping_ratio"] for r in scorer.score([Clip(x, rate) for x in (clipped, clean, stereo)])
    )
    expected = 1 - 2 / np.pi * np.arcsin(level / 2)
    assert a == pytest.approx(expected, abs=0.01) and b == 0.0 and c == pytest.approx(expected / 2, abs=0.01)
    with pytest.raises(ValueError, match="min_run must be at least 2"):
        get_scorer("signal,min_run=1")


def test_undefined_loudness_is_nan_with_a_reason_not_zero():
    scorer = get_scorer("signal")
    short, silent, eight = scorer.score(
        [
            Clip(tone(seconds=0.1), 16_000),
            Clip(np.zeros((1, 16_000), np.float32), 16_000),
            Clip(tone(channels=8), 16_000),
        ]
    )
    cases = ((short, "shorter than one 400 ms"), (silent, "-70 LUFS absolute gate"), (eight, "up to 5 chan"))
    for result, reason in cases:
        assert math.isnan(result.values["loudness_lufs"])
        assert reason in result.errors["loudness_lufs"]
        assert not result.failed  # the other metrics have values
    assert silent.values["silence_ratio"] == 1.0


@dataclass
class FlakyScorer(Scorer):
    """Fails on clips whose first sample is negative; counts its batch calls."""

    name = "flaky"
    backend = "test"
    metrics = (MetricSpec("level", True, (0, 1)),)
    sample_rate = 16_000
    uses_prompt = True
    batch_size: int = 8
    calls: int = 0

    def score_batch(self, clips: Sequence[Clip]) -> list[ScoreResult]:
        self.calls += 1
        if any(c.audio[0, 0] < 0 for c in clips):
            raise RuntimeError("backend exploded")
        return [ScoreResult({"level": float(np.abs(c.audio).mean())}) for c in clips]


def test_one_bad_clip_cannot_sink_its_batch():
    prompt = Prompt("p", "a tone")
    good = [Clip(tone(seconds=0.1), 16_000, prompt) for _ in range(5)]
    bad = Clip(-np.abs(tone(seconds=0.1)) - 0.01, 16_000, prompt)
    nan = Clip(np.full((1, 100), np.nan, np.float32), 16_000, prompt)
    wrong_rate = Clip(tone(seconds=0.1, rate=8_000), 8_000, prompt)
    no_prompt = Clip(tone(seconds=0.1), 16_000)
    scorer = FlakyScorer()
    results = scorer.score([*good[:2], bad, nan, wrong_rate, no_prompt, *good[2:]])
    assert len(results) == 9
    oks = [r.ok for r in results]
    assert oks == [True, True, False, False, False, False, True, True, True]
    assert "backend exploded" in results[2].error
    assert "NaN/Inf" in results[3].error
    assert "expects 16000 Hz" in results[4].error
    assert "has none" in results[5].error
    assert all(math.isnan(r.values["level"]) for r in results[2:6])
    assert results[0].values["level"] == pytest.approx(2 * 0.5 / np.pi, rel=0.02)


def test_registered_test_scorer_builds_from_a_spec():
    if "flaky:test" not in SCORERS:
        register_scorer("flaky", "test", FlakyScorer)
    scorer = get_scorer("flaky,batch_size=2")
    assert isinstance(scorer, FlakyScorer) and scorer.label == "flaky,batch_size=2"


def test_missing_values_are_completed_with_reasons():
    @dataclass
    class Forgetful(FlakyScorer):
        def score_batch(self, clips):
            return [ScoreResult({}) for _ in clips]

    (result,) = Forgetful().score([Clip(tone(seconds=0.1), 16_000, Prompt("p", "x"))])
    assert math.isnan(result.values["level"])
    assert "returned no value" in result.errors["level"]


def test_a_missing_reference_package_is_one_line_naming_the_install(monkeypatch):
    import sys

    from ttaeval.optional import import_reference

    monkeypatch.setitem(sys.modules, "laion_clap", None)  # import fails as when not installed
    with pytest.raises(ImportError) as err:
        import_reference("laion_clap", "clap:laion")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("clap:laion needs laion_clap: ")
    assert "pip install 'ttaeval[laion]' && pip install --no-deps laion_clap==1.1.7" in message


def test_a_result_whose_metrics_do_not_apply_is_not_a_failure():
    import math

    from ttaeval.records import ScoreResult

    na = ScoreResult({"a": math.nan}, not_applicable={"a": "one event: no order to judge"})
    broken = ScoreResult({"a": math.nan, "b": math.nan}, {"b": "model failed"}, not_applicable={"a": "x"})
    assert not na.failed and broken.failed
    assert (na.status("a"), broken.status("a"), broken.status("b")) == ("n/a", "n/a", "failed")
    assert na.error is None and broken.error == "model failed"
    artefacts_only = ScoreResult({}, artefacts={"audio_embedding": np.zeros(3)})
    assert not artefacts_only.failed and artefacts_only.ok
    assert ScoreResult.failed_with((), "unreadable").failed
