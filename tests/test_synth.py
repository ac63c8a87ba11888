"""The synthetic world: determinism, audible attributes, relations, suites, perturbations, export."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest

from ttaeval import load_prompts
from ttaeval.synth.events import EVENT_TYPES, RATE
from ttaeval.synth.export import export_suites
from ttaeval.synth.scenes import Event, Scene, caption, render
from ttaeval.synth.suites import (
    PERTURBATIONS,
    accuracy_suite,
    generalization_suite,
    is_held_out,
    perturb,
    random_scene,
    robustness_suite,
)


def one(kind, seed=0, relation="None", **attrs) -> np.ndarray:
    return render(Scene((Event(kind, **attrs),), relation, seed))[0].astype(np.float64)


def centroid(x: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(x.size, 1 / RATE)
    return float((spec * freqs).sum() / spec.sum())


def active_seconds(x: np.ndarray, frame: int = 160) -> float:
    env = np.sqrt(np.mean(x[: x.size // frame * frame].reshape(-1, frame) ** 2, axis=1))
    return float(np.sum(env > 0.1 * env.max()) * frame / RATE)


def onsets(x: np.ndarray, frame: int = 160) -> int:
    env = np.sqrt(np.mean(x[: x.size // frame * frame].reshape(-1, frame) ** 2, axis=1))
    on = env > 0.2 * env.max()
    return int(np.sum(on[1:] & ~on[:-1]) + on[0])


def test_at_least_twelve_event_types():
    assert len(EVENT_TYPES) >= 12


def test_rendering_is_deterministic_and_seeded():
    scene = Scene((Event("rain", "high"), Event("bell", "low", count=2)), "parallelism", 7)
    np.testing.assert_array_equal(render(scene), render(scene))
    other = Scene(scene.events, scene.relation, 8)
    assert not np.array_equal(render(scene), render(other))
    assert render(scene).shape == (1, 4 * RATE) and render(scene).dtype == np.float32


@pytest.mark.parametrize("kind", sorted(EVENT_TYPES))
def test_pitch_moves_the_spectrum_up(kind):
    low = np.mean([centroid(one(kind, s, pitch="low", length="long")) for s in range(3)])
    high = np.mean([centroid(one(kind, s, pitch="high", length="long")) for s in range(3)])
    assert high > 1.3 * low, (low, high)


@pytest.mark.parametrize("kind", sorted(EVENT_TYPES))
def test_loudness_changes_the_level_by_about_15_db(kind):
    loud = np.sqrt(np.mean(one(kind, loudness="loud", length="long") ** 2))
    quiet = np.sqrt(np.mean(one(kind, loudness="quiet", length="long") ** 2))
    assert 10 < 20 * np.log10(loud / quiet) < 20


@pytest.mark.parametrize("kind", sorted(EVENT_TYPES))
def test_length_changes_how_long_the_event_sounds(kind):
    short = active_seconds(one(kind, length="short"))
    long = active_seconds(one(kind, length="long"))
    assert long > 1.5 * short, (short, long)


@pytest.mark.parametrize("kind", sorted(k for k, e in EVENT_TYPES.items() if e.countable and k != "knock"))
def test_count_is_the_number_of_occurrences(kind):
    for count in (1, 2, 3):
        assert onsets(one(kind, count=count, length="short")) == count


def test_knocks_come_in_their_counted_groups():
    single, triple = one("knock", count=1), one("knock", count=3)
    assert onsets(triple) == 3 * onsets(single)


def test_event_types_are_told_apart_by_a_nearest_centroid_listener():
    """A crude listener (mean log-spectrum + envelope statistics) separates the types."""

    def features(x):
        frames = x[: x.size // 512 * 512].reshape(-1, 512)
        spec = np.log(np.abs(np.fft.rfft(frames * np.hanning(512), axis=1)) ** 2 + 1e-9)
        bands = spec[:, :256].reshape(spec.shape[0], 32, -1).mean(axis=2)
        env = np.log(np.mean(frames**2, axis=1) + 1e-9)
        return np.concatenate([bands.mean(0), bands.std(0), [env.std(), np.abs(np.diff(env)).mean()]])

    data = {
        (k, p): [features(one(k, s, pitch=p, length="long")) for s in range(5)]
        for k in EVENT_TYPES
        for p in ("low", "high")
    }
    keys = list(data)
    correct = total = 0
    for key in keys:
        for i, f in enumerate(data[key]):
            cents = {
                k: np.mean([g for j, g in enumerate(v) if (k, j) != (key, i)], axis=0)
                for k, v in data.items()
            }
            guess = min(cents, key=lambda k: np.linalg.norm(cents[k] - f))
            correct += guess[0] == key[0]
            total += 1
    assert correct / total >= 0.9


def test_sequence_places_events_in_order_and_parallelism_overlaps():
    a, b = Event("beep", "high", "loud", "long", 1), Event("hum", "low", "loud", "long", 1)
    seq = render(Scene((a, b), "sequence", 3))[0]
    half = seq.size // 2
    assert centroid(seq[:half]) > 2 * centroid(seq[half:])  # the high beep first, then the low hum
    par = render(Scene((a, b), "parallelism", 3))[0]
    assert abs(centroid(par[:half]) - centroid(par[half:])) < 0.3 * centroid(par)


def test_suites_carry_tta_bench_fields_and_are_deterministic():
    acc = accuracy_suite()
    assert len(acc) == 200 and len(generalization_suite()) == 200 and len(robustness_suite()) == 300
    for p in acc:
        assert p.attributes["event_count"] == len(p.attributes["event_list"])
        assert p.attributes["event_relation"] in ("None", "sequence", "parallelism")
        assert p.dimension == "accuracy" and p.text
    assert [p.text for p in load_prompts("synth:accuracy")] == [p.text for p in acc]
    ids = [p.id for p in load_prompts("synth:all")]
    assert len(ids) == len(set(ids)) == 700
    assert Counter(p.attributes["event_count"] for p in acc).keys() == {1, 2, 3}


def test_validation_prompts_share_no_caption_with_training_or_evaluation_prompts():
    val = load_prompts("synth:validation")
    assert len(val) == len({p.id for p in val}) == 200 and val == load_prompts("synth:validation")
    others = {p.text for p in (*load_prompts("synth:train"), *load_prompts("synth:all"))}
    assert not any(p.text in others for p in val)
    assert not any(is_held_out(Scene.from_dict(p.attributes["scene"])) for p in val)


def test_generalization_holds_only_unseen_combinations():
    assert not any(is_held_out(Scene.from_dict(p.attributes["scene"])) for p in accuracy_suite())
    assert all(is_held_out(Scene.from_dict(p.attributes["scene"])) for p in generalization_suite())
    rng = np.random.default_rng(0)
    assert not any(is_held_out(random_scene(rng)) for _ in range(500))
    # every held-out event phrase says "that sound(s)"; training phrases never do
    assert not any("that sound" in p.text for p in accuracy_suite())
    assert sum("that sound" in p.text for p in generalization_suite()) == 100


def _strip(text: str) -> str:
    return re.sub(r"[^a-z]", "", text.lower())


def test_robustness_perturbations_follow_their_rules():
    rob = robustness_suite()
    by_id = {p.id: p for p in accuracy_suite()}
    assert Counter(p.attributes["perturbation_type"] for p in rob) == {k: 50 for k in PERTURBATIONS}
    for p in rob:
        src = by_id[p.attributes["notes"]]
        assert p.attributes["scene"] == src.attributes["scene"]
        kind = p.attributes["perturbation_type"]
        if kind == "uppercase":
            assert p.text != src.text and p.text.lower() == src.text.lower()
        elif kind in ("space", "punctuate"):
            assert p.text != src.text and _strip(p.text) == _strip(src.text)
        elif kind == "misspelling":
            changed = [(a, b) for a, b in zip(src.text.split(" "), p.text.split(" ")) if a != b]
            assert 1 <= len(changed) <= 2 and all(abs(len(a) - len(b)) <= 1 for a, b in changed)
        elif kind in ("synonym", "rewrite"):
            assert p.text.lower() != src.text.lower()


def test_perturb_refuses_unknown_kinds():
    with pytest.raises(ValueError, match="unknown perturbation"):
        perturb("a beep", "shout", np.random.default_rng(0))


def test_held_out_captions_use_held_out_templates():
    scene = Scene((Event("beep"), Event("bell")), "sequence", 1)
    rng = np.random.default_rng(0)
    assert all("afterwards" not in caption(scene, rng) for _ in range(50))
    assert "afterwards" in caption(scene, rng, held_out=True)


def test_export_round_trips_through_the_tta_bench_loader(tmp_path):
    counts = export_suites(tmp_path, audio=False)
    assert counts == {"accuracy": 200, "generalization": 200, "robustness": 300}
    assert sorted(f.name for f in tmp_path.iterdir()) == [
        "acc_prompt.json",
        "generalization_prompt.json",
        "robustness_prompt.json",
    ]
    assert load_prompts(tmp_path) == load_prompts("synth:all")


def test_export_with_a_limit_writes_the_first_prompts_of_each_suite_and_their_audio(tmp_path):
    counts = export_suites(tmp_path, limit=3)
    assert counts == {"accuracy": 3, "generalization": 3, "robustness": 3, "reference": 3}
    exported = load_prompts(tmp_path)
    assert [p.id for p in exported] == [
        p.id
        for name in ("accuracy", "generalization", "robustness")
        for p in load_prompts(f"synth:{name}")[:3]
    ]
    assert sorted(f.stem for f in (tmp_path / "audio").glob("*.wav")) == sorted(p.id for p in exported)
    assert sorted(f.stem for f in (tmp_path / "reference").glob("*.wav")) == [p.id for p in exported[:3]]
    with pytest.raises(ValueError, match="at least 1"):
        export_suites(tmp_path / "none", limit=0)


def test_unknown_synth_suite_is_a_prompt_error():
    from ttaeval import PromptError

    with pytest.raises(PromptError, match="unknown synthetic suite 'nope'"):
        load_prompts("synth:nope")
