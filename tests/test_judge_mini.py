"""judge-mini: the shipped folder loads through judge:hf's code path and judges the synthetic world.

The must-show numbers (ROC-AUC, accuracies, Spearman on hundreds of held-out clips) are measured by
the recipe and written to ``metrics.json``; here a small held-out sample checks that the shipped
weights still behave that way, and a few-step run of the recipe checks that it writes a folder
``judge:hf`` loads.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from ttaeval import Clip, get_scorer
from ttaeval.scorers.judge_hf import JUDGE_MINI
from ttaeval.synth import render
from ttaeval.synth.degrade import degrade
from ttaeval.synth.scenes import Scene
from ttaeval.synth.suites import accuracy_suite
from ttaeval.synth.train_judge import JudgeMiniConfig, save, train


@pytest.fixture(scope="module")
def judge():
    return get_scorer("judge:mini")


def test_the_shipped_folder_is_small_safetensors_with_its_measured_numbers(judge):
    files = {p.name: p.stat().st_size for p in JUDGE_MINI.iterdir()}
    assert "model.safetensors" in files and not any(n.endswith((".bin", ".pt", ".pth")) for n in files)
    assert sum(files.values()) < 8e6
    recorded = json.loads((JUDGE_MINI / "metrics.json").read_text())["metrics"]
    for key in ("aqa_auc", "event_presence_accuracy", "order_accuracy", "quality_spearman", "train_seconds"):
        assert np.isfinite(recorded[key])
    assert judge.id.startswith("judge:mini@2,") and "weights=" in judge.id


def test_judge_mini_v1_is_kept_for_the_runs_trained_with_it(judge):
    """The study's judge-reward fine-tunes were trained and scored with the first judge-mini: it loads as
    judge:mini-v1, other weights than judge:mini, and the study and its recipes name it."""
    from ttaeval.scorers.judge_hf import MiniV1JudgeScorer

    v1 = get_scorer("judge:mini-v1")
    assert isinstance(v1, MiniV1JudgeScorer) and v1.id.startswith("judge:mini-v1@2,")
    assert v1.identity_options()["weights"] != judge.identity_options()["weights"]
    configs = Path(__file__).resolve().parents[1] / "resonate_train" / "configs"
    for name in ("compare_mini", "compare_mini_seen", "grpo_judge_aqa", "grpo_judge_total"):
        text = (configs / f"{name}.toml").read_text()
        assert "judge:mini-v1" in text and '"judge:mini"' not in text and '"judge:mini#' not in text


def test_judge_mini_hears_which_events_are_there_and_rates_degraded_audio_lower(judge):
    """What the shipped judge-mini does reliably (metrics.json: quality Spearman 0.93, presence 0.70)."""
    from ttaeval.scorers.judge import yes_score
    from ttaeval.synth.scenes import event_description
    from ttaeval.synth.suites import random_event
    from ttaeval.synth.train_judge import _other_type

    rng = np.random.default_rng(0)
    audio, present, absent = [], [], []
    for p in accuracy_suite()[:24]:
        scene = Scene.from_dict(p.attributes["scene"])
        a = render(scene)[0]
        for e in scene.events:
            audio.append(a)
            present.append(judge.question_templates.event.format(event=event_description(e)))
            other = random_event(rng, _other_type(scene, rng))
            absent.append(judge.question_templates.event.format(event=event_description(other)))
    t = judge.question_templates
    answers = judge.answer(audio + audio, present + absent, judge.answer_tokens)
    scores = np.array([yes_score(a, t.yes, t.no)[0] for a in answers])
    assert np.isfinite(scores).all()
    assert scores[: len(present)].mean() > scores[len(present) :].mean() + 0.1

    clean = [render(Scene.from_dict(p.attributes["scene"])) for p in accuracy_suite()[:8]]
    noisy = [degrade(a, "noise", 4, 16_000, rng) for a in clean]
    quality = get_scorer("judge:mini,w_aqa=0,w_events=0,w_relation=0")
    prompt = accuracy_suite()[0]
    rate = [r.values["quality"] for r in quality.score([Clip(a, 16_000, prompt) for a in clean + noisy])]
    assert np.mean(rate[:8]) > np.mean(rate[8:]) + 2


def test_the_recipe_writes_a_folder_judge_hf_loads(tmp_path):
    cfg = JudgeMiniConfig(scenes=12, degraded=12, steps=2, encoder_steps=2, batch_size=4, workers=1)
    model, processor, losses = train(cfg, log=lambda *a, **k: None)
    assert len(losses) == 2 and all(np.isfinite(losses))
    save(model, processor, tmp_path)
    scorer = get_scorer(f"judge:hf,model={tmp_path}")
    prompt = accuracy_suite()[0]
    (result,) = scorer.score([Clip(render(Scene.from_dict(prompt.attributes["scene"])), 16_000, prompt)])
    assert all(np.isfinite(result.values[m]) for m in ("aqa", "events", "quality", "total")), result.error


def test_stage_one_aligns_the_audio_tokens_with_the_event_names_embeddings(monkeypatch):
    """align_tags trains the projector and the event names' token embeddings with the encoder; the other
    embedding rows only decay. Each parameter is in the optimiser once."""
    import torch

    from ttaeval.synth import train_judge

    cfg = JudgeMiniConfig(
        scenes=16, degraded=8, encoder_steps=3, encoder_batch=8, steps=1, batch_size=2, workers=1
    )
    seen = {}
    real = train_judge.pretrain_encoder

    def spy(model, cfg, tokenizer, *args):
        seen["before"] = model.get_input_embeddings().weight.detach().clone()
        seen["projector"] = model.model.multi_modal_projector.linear.weight.detach().clone()
        real(model, cfg, tokenizer, *args)
        seen["after"] = model.get_input_embeddings().weight.detach().clone()
        seen["projector_after"] = model.model.multi_modal_projector.linear.weight.detach().clone()
        seen["names"] = sorted({i for ids in train_judge.name_tokens(tokenizer) for i in ids})

    monkeypatch.setattr(train_judge, "pretrain_encoder", spy)
    with warnings.catch_warnings():  # each parameter once in the optimiser (AdamW steps a repeat twice)
        warnings.filterwarnings("error", message=".*duplicate parameters")
        train(cfg, log=lambda *a, **k: None)
    moved = (seen["after"] - seen["before"]).norm(dim=1)
    names = torch.zeros(len(moved), dtype=torch.bool)
    names[seen["names"]] = True
    assert len(seen["names"]) >= len(train_judge.TYPES)
    assert moved[names].min() > 10 * moved[~names].max()
    assert not torch.equal(seen["projector"], seen["projector_after"])
