"""clap-mini: the shipped weights' quality, the recipe, the scorer and the FAD embedder."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from typer.testing import CliRunner

from ttaeval import Clip, Prompt, get_scorer
from ttaeval.backbones.clap_mini import DEFAULT_CHECKPOINT, HELDOUT_CHECKPOINT, load_clap_mini
from ttaeval.cli import app
from ttaeval.embedders import frechet_audio_distance, get_embedder
from ttaeval.synth.scenes import Scene, render
from ttaeval.synth.suites import PERTURBATIONS, accuracy_suite, reference_scenes
from ttaeval.synth.train_clap import TrainConfig, evaluate, train


@pytest.fixture(scope="module")
def shipped_metrics() -> dict[str, float]:
    return evaluate(load_clap_mini())


def test_shipped_weights_are_small():
    assert DEFAULT_CHECKPOINT.is_file()
    assert DEFAULT_CHECKPOINT.stat().st_size < 8_000_000


def test_text_to_audio_retrieval_on_held_out_suite(shipped_metrics):
    assert shipped_metrics["gen_R@1"] >= 0.6
    assert shipped_metrics["gen_R@5"] >= 0.9


def test_matched_captions_beat_shuffled_ones(shipped_metrics):
    assert shipped_metrics["acc_matched_above_shuffled"] >= 0.95


@pytest.mark.parametrize("kind", PERTURBATIONS)
def test_scores_survive_each_perturbation_within_10_percent(shipped_metrics, kind):
    assert 0.9 <= shipped_metrics[f"robustness_{kind}"] <= 1.1


def test_metrics_file_describes_the_shipped_weights(shipped_metrics):
    report = json.loads(DEFAULT_CHECKPOINT.with_suffix(".metrics.json").read_text())
    for key, value in report["metrics"].items():
        assert shipped_metrics[key] == pytest.approx(value, abs=1e-4), key
    assert report["train_minutes"] <= 20


def test_a_few_recipe_steps_reduce_the_loss():
    cfg = TrainConfig(scenes=64, steps=40, batch_size=32, warmup=5, workers=1, vocab_size=300, lr=2e-3)
    _, losses = train(cfg, log=lambda *a, **k: None)
    assert len(losses) == 40
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])


def test_scorer_scores_matched_above_mismatched_and_keeps_embeddings():
    scorer = get_scorer("clap:mini")
    assert scorer.id.startswith("clap:mini@1,weights=") and "/" not in scorer.id
    prompts = accuracy_suite()[:8]
    clips = [Clip(render(Scene.from_dict(p.attributes["scene"])), 16_000, p) for p in prompts]
    swapped = [Clip(c.audio, 16_000, prompts[(i + 1) % 8]) for i, c in enumerate(clips)]
    matched = [r.values["clap"] for r in scorer.score(clips)]
    mismatched = [r.values["clap"] for r in scorer.score(swapped)]
    assert np.mean(np.array(matched) > np.array(mismatched)) >= 0.75
    (first,) = scorer.score(clips[:1])
    assert first.values["clap"] == pytest.approx(matched[0], abs=1e-5)  # batch or alone: same number
    emb = first.artefacts["audio_embedding"]
    assert emb.shape == (128,) and np.linalg.norm(emb) == pytest.approx(1.0, abs=1e-5)


def test_the_held_out_clap_is_another_model_that_also_works():
    """clap:mini-heldout (another seed and architecture) judges fine-tunes trained on clap:mini."""
    heldout = load_clap_mini(HELDOUT_CHECKPOINT)
    assert HELDOUT_CHECKPOINT.stat().st_size < 8_000_000
    assert heldout.cfg != load_clap_mini().cfg
    recorded = json.loads(HELDOUT_CHECKPOINT.with_suffix(".metrics.json").read_text())["metrics"]
    assert recorded["gen_R@5"] >= 0.9 and recorded["acc_matched_above_shuffled"] >= 0.95
    prompts = accuracy_suite()[:16]
    clips = [Clip(render(Scene.from_dict(p.attributes["scene"])), 16_000, p) for p in prompts]
    swapped = [Clip(c.audio, 16_000, prompts[(i + 1) % 16]) for i, c in enumerate(clips)]
    a, b = get_scorer("clap:mini"), get_scorer("clap:mini-heldout")
    assert a.id != b.id and b.label == "clap:mini-heldout"
    sa = np.array([r.values["clap"] for r in a.score(clips)])
    sb = np.array([r.values["clap"] for r in b.score(clips)])
    assert not np.allclose(sa, sb, atol=1e-3)  # another model
    assert np.mean(sb > np.array([r.values["clap"] for r in b.score(swapped)])) >= 0.9  # that works


def test_long_and_short_audio_are_windowed_deterministically():
    scorer = get_scorer("clap:mini")
    p = Prompt("p", "a loud short high beep")
    long = Clip(np.tile(render(Scene.from_dict(accuracy_suite()[0].attributes["scene"])), 3), 16_000, p)
    short = Clip(long.audio[:, :8000], 16_000, p)
    a, b = scorer.score([long, short]), scorer.score([long, short])
    assert [r.values for r in a] == [r.values for r in b]
    assert all(r.ok for r in a)


def test_missing_weights_name_the_recipe(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"python -m ttaeval\.synth\.train_clap"):
        get_scorer(f"clap:mini,checkpoint={tmp_path / 'none.safetensors'}")


def test_fad_mini_separates_matching_sets_from_noise():
    embedder = get_embedder("mini")
    refs = [Clip(render(s), 16_000) for _, s in reference_scenes()[:150]]
    gens = [Clip(render(Scene.from_dict(p.attributes["scene"])), 16_000) for p in accuracy_suite()[:150]]
    rng = np.random.default_rng(0)
    noise = [Clip((0.3 * rng.standard_normal((1, 64_000))).astype(np.float32), 16_000) for _ in range(150)]
    same_world = frechet_audio_distance(embedder, gens, refs)
    off_world = frechet_audio_distance(embedder, noise, refs)
    assert off_world > 5 * same_world


@pytest.mark.slow
def test_score_cli_on_an_exported_synthetic_suite(tmp_path):
    runner = CliRunner()
    export = runner.invoke(app, ["synth", "export", str(tmp_path / "suite")])
    assert export.exit_code == 0, export.output
    # a resampled stereo copy of one clip: the framework converts it for each scorer
    wav, rate = sf.read(tmp_path / "suite" / "audio" / "prompt_0001.wav")
    sf.write(tmp_path / "suite" / "audio" / "prompt_0001.wav", np.stack([wav, wav], 1), rate)
    result = runner.invoke(
        app,
        [
            "score",
            str(tmp_path / "suite" / "audio"),
            "--prompts",
            str(tmp_path / "suite"),
            "--scorer",
            "clap:mini",
            "--scorer",
            "signal",
            "--out",
            str(tmp_path / "run"),
        ],
    )
    assert result.exit_code == 0, result.output
    table = pd.read_csv(io.StringIO(runner.invoke(app, ["export", str(tmp_path / "run")]).stdout))
    assert len(table) == 700
    assert table["clap/clap"].notna().all() and table["error"].isna().all()
    assert table["clap/clap"].mean() > 0.3
    board = runner.invoke(app, ["leaderboard", str(tmp_path / "run")])
    assert "clap/clap ↑" in board.stdout
    # TTA-Bench's tables on the synthetic suites: robustness pairs found through `notes`
    tables = runner.invoke(
        app, ["leaderboard", str(tmp_path / "run"), "--protocol", "tta-bench", "--format", "csv"]
    )
    assert tables.exit_code == 0, tables.output
    summary = pd.read_csv(io.StringIO(tables.stdout))
    clap = summary[summary["metric"] == "clap/clap"].set_index(["section", "group"])
    assert clap.loc[("dimension", "accuracy"), "n"] == 200
    assert clap.loc[("robustness", "uppercase"), "n"] == 50
    assert 0.8 < clap.loc[("robustness", "uppercase"), "value"] < 1.2
